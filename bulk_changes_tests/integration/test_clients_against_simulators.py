"""Each API client against the simulators, over real HTTP (docs/CONTRACTS.md "Simulators")."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from bulk_changes.domain import errors, revio_fields
from bulk_changes.domain.audit import Exchange
from bulk_changes.domain.settings import (
    JasperAccount,
    RateLimit,
    RevioAccount,
    Secret,
    TelegenceAccount,
)
from bulk_changes.domain.telegence_fields import characteristics
from bulk_changes.resources.jasper import JasperClient
from bulk_changes.resources.revio import RevioClient
from bulk_changes.resources.telegence import TelegenceClient
from bulk_changes.simulators import SimulatorSet, start_simulators

JASPER_KEY = "sim-jasper-key"
TELEGENCE_SECRET = "sim-telegence-secret"
REVIO_PASSWORD = "sim-revio-password"
REVIO_KEY = "sim-subscription-key"
ICCID = "89011234567890123451"
ICCID_2 = "89011234567890123469"
NUMBER = "5551230001"


class PacingLimiter:
    """A small in-process limiter (the real one lives in the database): one account's calls
    at most ``max_in_flight`` at once, starts spaced by the rate's interval (plus a margin)."""

    def __init__(self, margin: float = 1.15) -> None:
        self.margin = margin
        self.lock = threading.Lock()
        self.next_start: dict[str, float] = {}
        self.penalties: list[tuple[str, float]] = []
        self.slots = 0

    @contextmanager
    def slot(
        self, account_name: str, limit: RateLimit, lease_seconds: float | None = None
    ) -> Iterator[None]:
        with self.lock:  # one in flight is enough for these tests
            now = time.monotonic()
            wait = self.next_start.get(account_name, 0.0) - now
            if wait > 0:
                time.sleep(wait)
            self.next_start[account_name] = time.monotonic() + limit.interval * self.margin
            self.slots += 1
            yield

    def penalize(self, account_name: str, seconds: float) -> None:
        self.penalties.append((account_name, seconds))


class CountingLimiter:
    """No pacing at all: lets a test trip the simulator's limits on purpose."""

    def __init__(self) -> None:
        self.penalties: list[tuple[str, float]] = []

    @contextmanager
    def slot(
        self, account_name: str, limit: RateLimit, lease_seconds: float | None = None
    ) -> Iterator[None]:
        yield

    def penalize(self, account_name: str, seconds: float) -> None:
        self.penalties.append((account_name, seconds))


@pytest.fixture(scope="module")
def sims() -> Iterator[SimulatorSet]:
    started = start_simulators(host="127.0.0.1")
    yield started
    started.stop()


@pytest.fixture(autouse=True)
def fresh(sims: SimulatorSet) -> None:
    sims.reset(settings=True)


@pytest.fixture
def exchanges() -> list[Exchange]:
    return []


def jasper_account(sims: SimulatorSet, **kw: Any) -> JasperAccount:
    values: dict[str, Any] = {
        "name": "jasper-sim",
        "base_url": sims.jasper_url,
        "username": "sim-user",
        "api_key": Secret(JASPER_KEY),
        "timeout_seconds": 5.0,
    }
    values.update(kw)
    return JasperAccount(**values)


def telegence_account(sims: SimulatorSet, **kw: Any) -> TelegenceAccount:
    values: dict[str, Any] = {
        "name": "telegence-sim",
        "base_url": sims.telegence_url,
        "app_id": "sim-app",
        "app_secret": Secret(TELEGENCE_SECRET),
        "timeout_seconds": 5.0,
    }
    values.update(kw)
    return TelegenceAccount(**values)


def revio_account(sims: SimulatorSet, **kw: Any) -> RevioAccount:
    values: dict[str, Any] = {
        "name": "revio-sim",
        "base_url": sims.revio_url,
        "username": "sim-user",
        "client_code": "simclient",
        "password": Secret(REVIO_PASSWORD),
        "subscription_key": Secret(REVIO_KEY),
        "timeout_seconds": 5.0,
    }
    values.update(kw)
    return RevioAccount(**values)


@pytest.fixture
def jasper(sims: SimulatorSet, exchanges: list[Exchange]) -> JasperClient:
    return JasperClient(jasper_account(sims), limiter=PacingLimiter(), on_exchange=exchanges.append)


@pytest.fixture
def telegence(sims: SimulatorSet, exchanges: list[Exchange]) -> TelegenceClient:
    return TelegenceClient(
        telegence_account(sims), limiter=PacingLimiter(), on_exchange=exchanges.append
    )


@pytest.fixture
def revio(sims: SimulatorSet, exchanges: list[Exchange]) -> RevioClient:
    return RevioClient(revio_account(sims), limiter=PacingLimiter(), on_exchange=exchanges.append)


def no_secret_in(exchanges: list[Exchange]) -> None:
    text = "\n".join(repr(e) for e in exchanges)
    for secret in (JASPER_KEY, TELEGENCE_SECRET, REVIO_PASSWORD, REVIO_KEY):
        assert secret not in text


# ---- Jasper --------------------------------------------------------------------------------


def test_jasper_username_status_and_rate_plan_land_in_state(
    sims: SimulatorSet, jasper: JasperClient, exchanges: list[Exchange]
) -> None:
    sims.jasper.seed({"devices": [{"iccid": ICCID, "status": "ACTIVATED", "ratePlan": "OLD"}]})

    assert jasper.get_device(ICCID)["ratePlan"] == "OLD"
    assert jasper.set_username(ICCID, "Jo Smith") == {"iccid": ICCID, "accountCustom1": "Jo Smith"}
    jasper.set_status(ICCID, "DEACTIVATED")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).date().isoformat()
    jasper.set_rate_plan(ICCID, "NEW-PLAN", communication_plan="CP-DATA", effective_date=tomorrow)

    state = sims.jasper.state(ICCID)
    assert state is not None
    assert state["accountCustom1"] == "Jo Smith"
    assert state["status"] == "DEACTIVATED"
    assert (state["ratePlan"], state["communicationPlan"]) == ("NEW-PLAN", "CP-DATA")
    puts = [c for c in sims.jasper.calls() if c["method"] == "PUT"]
    assert puts[-1]["body"] == {
        "ratePlan": "NEW-PLAN",
        "communicationPlan": "CP-DATA",
        "effectiveDate": tomorrow,
    }
    stats = sims.jasper.stats()
    assert stats["violations"] == {"rate": 0, "in_flight": 0} and stats["throttled"] == 0
    assert [e.status for e in exchanges] == [200, 200, 200, 200]
    no_secret_in(exchanges)


def test_jasper_username_field_is_the_accounts_choice(sims: SimulatorSet) -> None:
    sims.jasper.seed({"devices": [{"iccid": ICCID}]})
    client = JasperClient(jasper_account(sims, username_field="accountCustom4"))
    client.set_username(ICCID, "Al")
    state = sims.jasper.state(ICCID)
    assert state is not None and state["accountCustom4"] == "Al" and state["accountCustom1"] == ""


def test_jasper_list_modified(sims: SimulatorSet, jasper: JasperClient) -> None:
    since = datetime.now(UTC) - timedelta(minutes=1)
    sims.jasper.seed({"devices": [{"iccid": ICCID}, {"iccid": ICCID_2, "ratePlan": "P"}]})
    devices, last = jasper.list_modified(since, 1)
    assert last is True
    assert [d["iccid"] for d in devices] == [ICCID, ICCID_2]


def test_jasper_unknown_iccid_is_not_found_with_the_carriers_message(
    sims: SimulatorSet, jasper: JasperClient
) -> None:
    unknown = "89019999999999999999"
    with pytest.raises(errors.NotFound) as caught:
        jasper.set_status(unknown, "ACTIVATED")
    assert caught.value.code == "20000001" and caught.value.status == 404
    assert unknown in caught.value.message and "not found" in caught.value.message.lower()
    assert str(caught.value).startswith("jasper HTTP 404 code 20000001: ")


def test_jasper_refusals_are_readable(sims: SimulatorSet, jasper: JasperClient) -> None:
    sims.jasper.seed({"devices": [{"iccid": ICCID}]})
    with pytest.raises(errors.Rejected, match="Invalid status: SLEEPING"):
        jasper.set_status(ICCID, "SLEEPING")
    bad = JasperClient(jasper_account(sims, api_key=Secret("wrong-key")))
    with pytest.raises(errors.AuthenticationFailed) as caught:
        bad.get_device(ICCID)
    assert caught.value.code == "10000001" and "wrong-key" not in str(caught.value)


def test_jasper_faults_from_the_simulator(sims: SimulatorSet, jasper: JasperClient) -> None:
    sims.jasper.seed({"devices": [{"iccid": ICCID}]})
    sims.jasper.configure(garbage_rate=1.0)
    with pytest.raises(errors.GarbageResponse) as garbage:
        jasper.get_device(ICCID)
    assert garbage.value.message.startswith("jasper answered HTTP 502 with an HTML page, not JSON:")
    assert "Bad Gateway" in garbage.value.message
    sims.jasper.configure(garbage_rate=0.0, error_rate=1.0)
    with pytest.raises(errors.ServerError):
        jasper.get_device(ICCID)


def test_jasper_throttling_becomes_throttled_and_penalizes(sims: SimulatorSet) -> None:
    sims.jasper.seed({"devices": [{"iccid": ICCID}]})
    limiter = CountingLimiter()
    client = JasperClient(jasper_account(sims), limiter=limiter)
    with pytest.raises(errors.Throttled) as caught:
        for _ in range(10):  # unpaced: more than 5 a second
            client.get_device(ICCID)
    assert caught.value.code == "40000029"
    assert limiter.penalties == [("jasper-sim", 1.0)]  # no Retry-After: the default second
    assert sims.jasper.stats()["throttled"] == 1

    sims.jasper.reset()  # forgets devices, counters and the limit window
    sims.jasper.seed({"devices": [{"iccid": ICCID}]})
    sims.jasper.configure(retry_after=3, throttle_status=400)
    with pytest.raises(errors.Throttled) as caught:
        for _ in range(10):
            client.get_device(ICCID)
    assert caught.value.status == 400 and caught.value.retry_after == 3.0
    assert limiter.penalties[-1] == ("jasper-sim", 3.0)


def test_jasper_pacing_limiter_never_trips_the_carrier(sims: SimulatorSet) -> None:
    sims.jasper.seed({"devices": [{"iccid": ICCID}]})
    limiter = PacingLimiter()
    client = JasperClient(jasper_account(sims), limiter=limiter)
    for _ in range(7):
        client.get_device(ICCID)
    assert sims.jasper.stats()["throttled"] == 0 and limiter.penalties == []


# ---- Telegence -----------------------------------------------------------------------------


def seed_line(sims: SimulatorSet, number: str = NUMBER, status: str = "A") -> None:
    sims.telegence.seed(
        {
            "lines": [
                {
                    "subscriberNumber": number,
                    "status": status,
                    "sim": ICCID,
                    "IMEI": "356938035643809",
                    "singleUserCode": "OLDSOC",
                }
            ]
        }
    )


def test_telegence_read_and_rate_plan(sims: SimulatorSet, telegence: TelegenceClient) -> None:
    seed_line(sims)
    line = telegence.get_line(NUMBER)
    assert line["subscriberNumber"] == NUMBER and line["status"] == "A"
    assert characteristics(line)["singleUserCode"] == "OLDSOC"
    assert telegence.characteristics(line)["sim"] == ICCID

    telegence.change_rate_plan(NUMBER, "NEWSOC", "2030-01-01")
    state = sims.telegence.state(NUMBER)
    assert state is not None and characteristics(state)["singleUserCode"] == "NEWSOC"
    assert sims.telegence.calls()[-1]["body"] == {
        "effectiveDate": "2030-01-01",
        "serviceCharacteristic": [{"name": "singleUserCode", "value": "NEWSOC"}],
    }


def test_telegence_equipment_change(sims: SimulatorSet, telegence: TelegenceClient) -> None:
    seed_line(sims)
    telegence.change_equipment(NUMBER, "CUST_OWN_EQU", new_sim=ICCID_2, new_imei="490154203237518")
    state = sims.telegence.state(NUMBER)
    assert state is not None
    chars = characteristics(state)
    assert (chars["sim"], chars["IMEI"]) == (ICCID_2, "490154203237518")
    with pytest.raises(ValueError):
        telegence.change_equipment(NUMBER, "CUST_OWN_EQU")
    with pytest.raises(errors.Rejected, match="sim must be 19 or 20 digits"):
        telegence.change_equipment(NUMBER, "CUST_OWN_EQU", new_sim="123")


def test_telegence_status_change(sims: SimulatorSet, telegence: TelegenceClient) -> None:
    seed_line(sims)
    telegence.change_status(NUMBER, "suspend", "CR", "2030-01-01")
    assert (sims.telegence.state(NUMBER) or {})["status"] == "S"
    telegence.change_status(NUMBER, "restore", "CR", None)
    assert (sims.telegence.state(NUMBER) or {})["status"] == "A"
    with pytest.raises(errors.Rejected) as caught:
        telegence.change_status(NUMBER, "restore", "CR", None)
    assert caught.value.message == "cannot restore a line in status A"
    with pytest.raises(errors.NotFound, match="5559999999"):
        telegence.get_line("5559999999")


def test_telegence_activation_request_and_polling(
    sims: SimulatorSet, telegence: TelegenceClient
) -> None:
    sims.telegence.configure(activation_polls=2, fail_keys={"5551230003": "SIM not provisioned"})
    lines = [
        {"subscriberNumber": "5551230002", "sim": ICCID, "singleUserCode": "SOC1"},
        {"subscriberNumber": "5551230003", "sim": ICCID_2},
    ]
    request_id = telegence.request_activation(lines)
    assert request_id
    polls = []
    for _ in range(5):
        status = telegence.activation_status(request_id)
        polls.append(status["interactionStatus"])
        if status["interactionStatus"] in ("COMPLETED", "FAILED"):
            break
    assert polls == ["IN_PROGRESS", "IN_PROGRESS", "COMPLETED"]
    by_number = {line["subscriberNumber"]: line for line in status["lines"]}
    assert by_number["5551230002"]["status"] == "A"
    assert by_number["5551230003"]["status"] == "FAILED"
    assert by_number["5551230003"]["description"] == "SIM not provisioned"
    assert (sims.telegence.state("5551230002") or {})["status"] == "A"

    calls_before = sims.telegence.stats()["calls"]
    with pytest.raises(ValueError, match="at most 200"):
        telegence.request_activation(
            [{"subscriberNumber": f"55500{i:05d}", "sim": ICCID} for i in range(201)]
        )
    assert sims.telegence.stats()["calls"] == calls_before  # refused before any call
    with pytest.raises(errors.NotFound):
        telegence.activation_status("no-such-request")


def test_telegence_throttling(sims: SimulatorSet) -> None:
    seed_line(sims)
    sims.telegence.configure(rate_per_second=1, retry_after=2)
    limiter = CountingLimiter()
    client = TelegenceClient(telegence_account(sims), limiter=limiter)
    client.get_line(NUMBER)
    with pytest.raises(errors.Throttled) as caught:
        client.get_line(NUMBER)
    assert caught.value.retry_after == 2.0 and caught.value.message == "Rate limit exceeded"
    assert limiter.penalties == [("telegence-sim", 2.0)]


# ---- Rev.io --------------------------------------------------------------------------------


def cost_field_services() -> list[dict[str, Any]]:
    """Three services of one number, custom fields in different orders and spellings."""
    return [
        {
            "service_id": 101,
            "number": ICCID,
            "activated_date": "2021-01-01T00:00:00",
            "disconnected_date": "2022-01-01T00:00:00",
            "fields": [
                {"field_id": 1, "label": "Cost Center 1", "value": "old"},
                {"field_id": 2, "label": "Username", "value": ""},
            ],
        },
        {
            "service_id": 102,
            "number": ICCID,
            "description": "device",
            "activated_date": "2023-06-01T00:00:00",
            "disconnected_date": None,
            "fields": [
                {"field_id": 7, "label": "user name", "value": ""},
                {"field_id": 3, "label": "COST CENTER 3", "value": ""},
                {"field_id": 9, "label": "Region", "value": "north"},
                {"field_id": 1, "label": "Cost  Center 1", "value": ""},
                {"field_id": 2, "label": "costcenter2", "value": ""},
            ],
        },
        {
            "service_id": 103,
            "number": ICCID_2,
            "activated_date": "2023-07-01T00:00:00",
            "fields": [
                {"field_id": 2, "label": "Cost Center 2", "value": ""},
                {"field_id": 1, "label": "Cost Center", "value": ""},
                {"field_id": 7, "label": "Username", "value": ""},
            ],
        },
    ]


def by_label(service: Mapping[str, Any]) -> dict[str, Any]:
    return {f["label"]: f["value"] for f in service["fields"]}


def cost_builder(account: RevioAccount, values: dict[int, str]) -> Any:
    def build(service: Mapping[str, Any]) -> list[dict[str, Any]]:
        return revio_fields.cost_center_ops(
            service.get("fields") or [],
            values,
            account.cost_center_labels,
            account.cost_center_fallback_label,
            account.guard_field_positions,
        )

    return build


def test_revio_cost_centers_by_label_on_shuffled_fields(
    sims: SimulatorSet, revio: RevioClient, exchanges: list[Exchange]
) -> None:
    sims.revio.seed({"services": cost_field_services()})
    account = revio.account

    found = revio.find_services(ICCID)
    assert sorted(s["service_id"] for s in found) == [101, 102]
    active = revio_fields.pick_active_service(found)
    assert active is not None and active["service_id"] == 102  # not the earliest

    result = revio.set_fields(102, cost_builder(account, {1: "CC-A", 2: "CC-B", 3: "CC-C"}))
    assert result["patched"] is True
    assert by_label(sims.revio.state("102") or {}) == {
        "user name": "",
        "COST CENTER 3": "CC-C",
        "Region": "north",
        "Cost  Center 1": "CC-A",
        "costcenter2": "CC-B",
    }
    patch = [c for c in sims.revio.calls() if c["method"] == "PATCH"][-1]
    assert patch["body"][0] == {"op": "test", "path": "/fields/3/label", "value": "Cost  Center 1"}

    # cost center 1 falls back to the plain "Cost Center" label on service 103
    revio.set_fields(103, cost_builder(account, {1: "ONE", 2: "TWO"}))
    assert by_label(sims.revio.state("103") or {}) == {
        "Cost Center 2": "TWO",
        "Cost Center": "ONE",
        "Username": "",
    }
    # the disconnected service was never touched
    assert by_label(sims.revio.state("101") or {})["Cost Center 1"] == "old"
    # nothing to change: read only, no patch
    patches = sims.revio.stats()["by_endpoint"]["PATCH /Services/{service_id}"]
    assert revio.set_fields(103, cost_builder(account, {1: "ONE"}))["patched"] is False
    assert sims.revio.stats()["by_endpoint"]["PATCH /Services/{service_id}"] == patches
    no_secret_in(exchanges)


def test_revio_missing_cost_center_field_is_rejected(
    sims: SimulatorSet, revio: RevioClient
) -> None:
    sims.revio.seed({"services": cost_field_services()})
    with pytest.raises(errors.Rejected) as caught:
        revio.set_fields(103, cost_builder(revio.account, {3: "X"}))
    assert "service 103" in str(caught.value) and "'Cost Center 3'" in str(caught.value)


def swap_labels(sims: SimulatorSet, service_id: int, i: int, j: int) -> None:
    """Another user of Rev.io moves two custom fields (through the API, as it would)."""
    other = RevioClient(revio_account(sims))
    fields = other.get_service(service_id)["fields"]
    other.patch_service(
        service_id,
        [
            {"op": "replace", "path": f"/fields/{i}/label", "value": fields[j]["label"]},
            {"op": "replace", "path": f"/fields/{j}/label", "value": fields[i]["label"]},
        ],
    )


def test_revio_guard_rereads_once_when_fields_moved(sims: SimulatorSet, revio: RevioClient) -> None:
    sims.revio.seed({"services": cost_field_services()})
    reads: list[list[str]] = []
    build = cost_builder(revio.account, {2: "CC-B"})

    def moving(service: Mapping[str, Any]) -> list[dict[str, Any]]:
        ops = build(service)
        reads.append([f["label"] for f in service["fields"]])
        if len(reads) == 1:  # the fields move between our read and our patch
            swap_labels(sims, 102, 0, 4)
        return ops

    revio.set_fields(102, moving)
    assert len(reads) == 2 and reads[0][4] == "costcenter2" and reads[1][0] == "costcenter2"
    state = sims.revio.state("102") or {}
    assert [(f["label"], f["value"]) for f in state["fields"]] == [
        ("costcenter2", "CC-B"),
        ("COST CENTER 3", ""),
        ("Region", "north"),
        ("Cost  Center 1", ""),
        ("user name", ""),  # where cost center 2 was read: untouched
    ]
    assert sims.revio.stats()["by_status"].get("400") == 1  # the one failed guard


def test_revio_guard_gives_up_when_fields_keep_moving(
    sims: SimulatorSet, revio: RevioClient
) -> None:
    sims.revio.seed({"services": cost_field_services()})
    build = cost_builder(revio.account, {1: "CC-A"})

    def always_moving(service: Mapping[str, Any]) -> list[dict[str, Any]]:
        ops = build(service)
        swap_labels(sims, 102, 0, 3)
        return ops

    with pytest.raises(errors.Rejected, match="moved again") as caught:
        revio.set_fields(102, always_moving)
    assert "test failed" in str(caught.value) and "service 102" in str(caught.value)
    after = sims.revio.state("102") or {}
    assert "CC-A" not in [f["value"] for f in after["fields"]]  # nothing written anywhere


@pytest.mark.parametrize(
    ("mapping", "field_value", "description"),
    [("field", "Jo", "device"), ("description", "", "Jo"), ("both", "Jo", "Jo")],
)
def test_revio_username_mapping(
    sims: SimulatorSet, revio: RevioClient, mapping: str, field_value: str, description: str
) -> None:
    sims.revio.seed({"services": cost_field_services()})
    account = revio.account

    def build(service: Mapping[str, Any]) -> list[dict[str, Any]]:
        return revio_fields.username_ops(
            service, "Jo", mapping, account.username_label, account.guard_field_positions
        ) + revio_fields.cost_center_ops(
            service.get("fields") or [],
            {3: "CC-C"},
            account.cost_center_labels,
            account.cost_center_fallback_label,
            account.guard_field_positions,
        )

    revio.set_fields(102, build)
    state = sims.revio.state("102") or {}
    assert by_label(state)["user name"] == field_value
    assert by_label(state)["COST CENTER 3"] == "CC-C"
    assert state["description"] == description


def test_revio_lists_follow_pages(sims: SimulatorSet, revio: RevioClient) -> None:
    services = [
        {"service_id": i, "number": "5550000000" if i % 2 else "5551111111", "fields": []}
        for i in range(1, 1104)
    ]
    sims.revio.seed({"services": services})
    found = revio.find_services("5550000000")
    assert len(found) == 552 and all(s["number"] == "5550000000" for s in found)
    calls = [c for c in sims.revio.calls() if c["endpoint"] == "GET /Services"]
    assert len(calls) == 2 and "page_size=500" in calls[0]["path"]
    records, more = revio.list_services(3)
    assert (len(records), more) == (103, False)
    records, more = revio.list_services(1, page_size=10)
    assert (len(records), more) == (10, True)


def test_revio_patch_errors_and_throttling(sims: SimulatorSet) -> None:
    sims.revio.seed({"services": cost_field_services()})
    limiter = CountingLimiter()
    client = RevioClient(revio_account(sims), limiter=limiter)
    with pytest.raises(errors.NotFound, match="Service 999 not found"):
        client.get_service(999)
    with pytest.raises(errors.Rejected, match="cannot be replaced"):
        client.patch_service(102, [{"op": "replace", "path": "/service_id", "value": 5}])
    with pytest.raises(errors.AuthenticationFailed):
        RevioClient(revio_account(sims, subscription_key=Secret("nope"))).get_service(102)

    sims.revio.reset()  # forgets services, counters and the limit window
    sims.revio.seed({"services": cost_field_services()})
    sims.revio.configure(rate_per_minute=2)
    client.get_service(102)
    client.get_service(102)
    with pytest.raises(errors.Throttled) as caught:
        client.get_service(102)
    assert caught.value.status == 429 and caught.value.message == "Rate limit exceeded"
    assert limiter.penalties == [("revio-sim", 1.0)]
