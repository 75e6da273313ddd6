"""The simulators over real HTTP: auth, documented answers, limits, faults, seeding."""

from __future__ import annotations

import base64
import gc
import socket
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from bulk_changes.simulators import (
    SimulatorSet,
    freeze_host_objects,
    seed_from_inventory_rows,
    start_simulators,
)

ICCID = "89011704278930000001"
OTHER_ICCID = "89011704278930000002"
JASPER_AUTH = ("sim-user", "sim-jasper-key")
TELEGENCE_HEADERS = {"app-id": "sim-app", "app-secret": "sim-telegence-secret"}
REVIO_AUTH = ("sim-user@simclient", "sim-revio-password")
REVIO_HEADERS = {"Ocp-Apim-Subscription-Key": "sim-subscription-key"}
PATCH_HEADERS = {**REVIO_HEADERS, "Content-Type": "application/json-patch+json"}
FIELDS = [
    {"field_id": 1001, "label": "Username", "value": "alice"},
    {"field_id": 1002, "label": "Cost Center 1", "value": "CC-100"},
]


@pytest.fixture(scope="module")
def running() -> Iterator[SimulatorSet]:
    sims = start_simulators()
    yield sims
    sims.stop()


@pytest.fixture
def sims(running: SimulatorSet) -> Iterator[SimulatorSet]:
    running.reset(settings=True)
    running.jasper.seed({"devices": [{"iccid": ICCID, "status": "ACTIVATED", "ratePlan": "RP-1"}]})
    running.telegence.seed(
        {"lines": [{"subscriberNumber": "5551230001", "status": "A", "sim": "8901410000000000001"}]}
    )
    running.revio.seed({"services": [{"service_id": 7, "number": ICCID, "fields": FIELDS}]})
    yield running
    running.reset(settings=True)


def jasper_put(sims: SimulatorSet, iccid: str, body: Any) -> requests.Response:
    return requests.put(
        f"{sims.jasper_url}/devices/{iccid}", json=body, auth=JASPER_AUTH, timeout=5
    )


def jasper_get(sims: SimulatorSet, iccid: str = ICCID) -> requests.Response:
    return requests.get(f"{sims.jasper_url}/devices/{iccid}", auth=JASPER_AUTH, timeout=5)


def test_each_system_refuses_bad_credentials(sims: SimulatorSet) -> None:
    jasper = requests.get(
        f"{sims.jasper_url}/devices/{ICCID}", auth=("sim-user", "wrong"), timeout=5
    )
    telegence = requests.get(
        f"{sims.telegence_url}/sp/mobility/lineconfig/api/v1/service/5551230001",
        headers={"app-id": "sim-app"},
        timeout=5,
    )
    revio = requests.get(f"{sims.revio_url}/Services/7", auth=REVIO_AUTH, timeout=5)  # no key

    assert (jasper.status_code, jasper.json()["errorCode"]) == (401, "10000001")
    assert telegence.status_code == 401 and set(telegence.json()) == {"id", "description"}
    assert revio.status_code == 401 and revio.json()["ok"] is False


def test_jasper_put_answers_the_iccid_and_changes_the_device(sims: SimulatorSet) -> None:
    before = sims.jasper.state(ICCID)
    assert before is not None

    answer = jasper_put(sims, ICCID, {"status": "DEACTIVATED", "accountCustom1": "bob"})

    assert answer.status_code == 200 and answer.json() == {"iccid": ICCID}
    device = jasper_get(sims).json()
    assert (device["status"], device["accountCustom1"]) == ("DEACTIVATED", "bob")
    assert device["dateUpdated"] >= before["dateUpdated"]


def test_jasper_put_with_an_unrecognized_field_is_refused_with_10000028(sims: SimulatorSet) -> None:
    answer = jasper_put(sims, ICCID, {"imei": "123456789012345"})

    assert (answer.status_code, answer.json()["errorCode"]) == (400, "10000028")
    assert sims.jasper.state(ICCID)["imei"] == ""  # type: ignore[index]


def test_jasper_unknown_iccid_is_404_with_20000001(sims: SimulatorSet) -> None:
    answer = jasper_put(sims, OTHER_ICCID, {"status": "ACTIVATED"})

    assert (answer.status_code, answer.json()["errorCode"]) == (404, "20000001")


def test_jasper_sixth_call_within_a_second_is_throttled_and_counted(sims: SimulatorSet) -> None:
    with requests.Session() as session:
        session.auth = JASPER_AUTH
        answers = [session.get(f"{sims.jasper_url}/devices/{ICCID}", timeout=5) for _ in range(6)]

    assert [a.status_code for a in answers[:5]] == [200] * 5
    assert (answers[5].status_code, answers[5].json()["errorCode"]) == (429, "40000029")
    stats = sims.jasper.stats()
    assert stats["violations"] == {"rate": 1, "in_flight": 0}
    assert stats["throttled"] == 1


def test_jasper_overlapping_calls_count_an_in_flight_violation(sims: SimulatorSet) -> None:
    sims.jasper.configure(latency_ms=300)
    barrier = threading.Barrier(2)
    statuses: list[int] = []

    def call() -> None:
        barrier.wait()
        statuses.append(jasper_get(sims).status_code)

    threads = [threading.Thread(target=call) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sorted(statuses) == [200, 429]
    assert sims.jasper.stats()["violations"]["in_flight"] == 1


def test_revio_patch_with_a_failed_test_changes_nothing(sims: SimulatorSet) -> None:
    patch = [
        {"op": "replace", "path": "/description", "value": "changed"},
        {"op": "test", "path": "/fields/0/label", "value": "Cost Center 1"},
        {"op": "replace", "path": "/fields/0/value", "value": "CC-999"},
    ]

    answer = requests.patch(
        f"{sims.revio_url}/Services/7",
        json=patch,
        auth=REVIO_AUTH,
        headers=PATCH_HEADERS,
        timeout=5,
    )

    assert answer.status_code == 400 and answer.json()["ok"] is False
    service = sims.revio.state("7")
    assert service is not None
    assert service["description"] == "" and service["fields"] == FIELDS


def test_revio_patch_by_field_position_changes_the_field(sims: SimulatorSet) -> None:
    patch = [
        {"op": "test", "path": "/fields/1/label", "value": "Cost Center 1"},
        {"op": "replace", "path": "/fields/1/value", "value": "CC-200"},
    ]

    answer = requests.patch(
        f"{sims.revio_url}/Services/7",
        json=patch,
        auth=REVIO_AUTH,
        headers=PATCH_HEADERS,
        timeout=5,
    )

    assert answer.status_code == 200 and answer.json()["fields"][1]["value"] == "CC-200"


def test_revio_patch_without_json_patch_content_type_is_415(sims: SimulatorSet) -> None:
    patch = [{"op": "replace", "path": "/description", "value": "x"}]

    answer = requests.patch(
        f"{sims.revio_url}/Services/7",
        json=patch,
        auth=REVIO_AUTH,
        headers=REVIO_HEADERS,
        timeout=5,
    )

    assert answer.status_code == 415
    assert sims.revio.state("7")["description"] == ""  # type: ignore[index]


def test_revio_per_minute_limit_answers_429(sims: SimulatorSet) -> None:
    sims.revio.configure(rate_per_minute=3, retry_after=7)
    with requests.Session() as session:
        session.auth = REVIO_AUTH
        session.headers.update(REVIO_HEADERS)
        answers = [session.get(f"{sims.revio_url}/Services/7", timeout=5) for _ in range(4)]

    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[3].headers["Retry-After"] == "7"
    assert sims.revio.stats()["violations"]["rate"] == 1


def test_revio_list_filters_by_number(sims: SimulatorSet) -> None:
    sims.revio.seed({"services": [{"service_id": 8, "number": OTHER_ICCID}]})

    answer = requests.get(
        f"{sims.revio_url}/Services",
        params={"page": 1, "page_size": 500, "number": OTHER_ICCID},
        auth=REVIO_AUTH,
        headers=REVIO_HEADERS,
        timeout=5,
    ).json()

    assert answer["ok"] is True and answer["has_more"] is False
    assert [r["service_id"] for r in answer["records"]] == [8]


def revio_list_ids(sims: SimulatorSet, auth: tuple[str, str]) -> list[int]:
    answer = requests.get(
        f"{sims.revio_url}/Services",
        params={"page": 1, "page_size": 500},
        auth=auth,
        headers=REVIO_HEADERS,
        timeout=5,
    ).json()
    return [r["service_id"] for r in answer["records"]]


OTHER_REVIO_AUTH = ("other@otherclient", "other-password")


def test_revio_service_seeded_for_an_account_is_listed_to_that_account_only(
    sims: SimulatorSet,
) -> None:
    sims.revio.add_credentials({OTHER_REVIO_AUTH[0]: (OTHER_REVIO_AUTH[1], "sim-subscription-key")})
    sims.revio.seed(
        {"services": [{"service_id": 8, "number": OTHER_ICCID, "account": "other@otherclient"}]}
    )

    assert revio_list_ids(sims, REVIO_AUTH) == [7]
    assert revio_list_ids(sims, OTHER_REVIO_AUTH) == [7, 8]


def test_revio_service_of_another_account_is_404(sims: SimulatorSet) -> None:
    sims.revio.seed(
        {"services": [{"service_id": 8, "number": OTHER_ICCID, "account": "other@otherclient"}]}
    )

    answer = requests.get(
        f"{sims.revio_url}/Services/8", auth=REVIO_AUTH, headers=REVIO_HEADERS, timeout=5
    )

    assert answer.status_code == 404


def test_telegence_activation_completes_after_polling(sims: SimulatorSet) -> None:
    base = f"{sims.telegence_url}/sp/mobilityactivations/api/v1/serviceactivation"
    body = {
        "serviceActivations": [
            {
                "subscriberNumber": "5551230002",
                "sim": "8901410000000000002",
                "singleUserCode": "SOC1",
            }
        ]
    }

    started = requests.post(base, json=body, headers=TELEGENCE_HEADERS, timeout=5)
    request_id = started.json()["requestId"]
    first = requests.get(f"{base}/{request_id}", headers=TELEGENCE_HEADERS, timeout=5).json()
    second = requests.get(f"{base}/{request_id}", headers=TELEGENCE_HEADERS, timeout=5).json()

    assert started.status_code == 202
    assert first["interactionStatus"] == "IN_PROGRESS"
    assert second["interactionStatus"] == "COMPLETED"
    assert second["lines"][0]["status"] == "A"
    assert sims.telegence.state("5551230002")["status"] == "A"  # type: ignore[index]


def test_telegence_suspend_of_a_suspended_line_is_refused(sims: SimulatorSet) -> None:
    url = f"{sims.telegence_url}/sp/mobility/lineconfig/api/v1/service/5551230001"
    suspend = {"subscriberStatus": {"action": "suspend", "reasonCode": "CR"}}

    first = requests.patch(url, json=suspend, headers=TELEGENCE_HEADERS, timeout=5)
    second = requests.patch(url, json=suspend, headers=TELEGENCE_HEADERS, timeout=5)

    assert first.status_code == 200 and first.json()["status"] == "S"
    assert second.status_code == 400 and set(second.json()) == {"id", "description"}


def test_injected_5xx_at_rate_one_applies_nothing(sims: SimulatorSet) -> None:
    sims.jasper.configure(error_rate=1.0)

    answer = jasper_put(sims, ICCID, {"status": "DEACTIVATED"})

    assert answer.status_code in (500, 503) and answer.json()["errorCode"] == "30000001"
    assert sims.jasper.state(ICCID)["status"] == "ACTIVATED"  # type: ignore[index]
    assert sims.jasper.stats()["faults"]["5xx"] == 1


def test_fail_keys_give_the_documented_4xx_with_the_message(sims: SimulatorSet) -> None:
    sims.jasper.configure(fail_keys={ICCID: "Device is locked"})

    answer = jasper_put(sims, ICCID, {"status": "DEACTIVATED"})

    assert answer.status_code == 400 and answer.json()["errorMessage"] == "Device is locked"
    assert sims.jasper.state(ICCID)["status"] == "ACTIVATED"  # type: ignore[index]
    assert sims.jasper.stats()["faults"]["permanent"] == 1


def test_admin_endpoints_are_neither_counted_nor_limited(sims: SimulatorSet) -> None:
    admin = sims.jasper.root_url + "/_sim"
    requests.post(f"{admin}/config", json={"latency_ms": 0, "seed": 3}, timeout=5)
    for _ in range(10):
        requests.get(f"{admin}/stats", timeout=5)

    stats = requests.get(f"{admin}/stats", timeout=5).json()
    state = requests.get(f"{admin}/state/{ICCID}", timeout=5).json()

    assert stats["calls"] == 0 and stats["throttled"] == 0
    assert state["iccid"] == ICCID


def test_seed_from_inventory_rows_shuffles_revio_field_order(sims: SimulatorSet) -> None:
    rows = [
        {
            "iccid": f"8901170427893{n:07d}",
            "msisdn": f"555000{n:04d}",
            "integration": "jasper" if n % 2 else "telegence",
            "status": "ACTIVE",
            "username": f"user{n}",
            "cost_center_1": f"CC{n}",
            "revio_service_id": str(100 + n),
            "tenant": "acme",
        }
        for n in range(1, 9)
    ]

    counts = seed_from_inventory_rows(sims, rows)

    assert counts == {"jasper": 4, "telegence": 4, "revio": 8}
    services = [sims.revio.state(str(100 + n)) for n in range(1, 9)]
    orders = {tuple(f["label"] for f in s["fields"]) for s in services if s is not None}
    assert len(orders) > 1
    assert services[0]["number"] == rows[0]["iccid"]  # type: ignore[index]
    assert services[1]["number"] == rows[1]["msisdn"]  # type: ignore[index]
    assert sims.jasper.state(rows[0]["iccid"])["accountCustom1"] == "user1"  # type: ignore[index]


def test_seed_from_inventory_rows_gives_the_services_to_the_revio_account(
    sims: SimulatorSet,
) -> None:
    sims.revio.add_credentials({OTHER_REVIO_AUTH[0]: (OTHER_REVIO_AUTH[1], "sim-subscription-key")})
    rows = [{"iccid": OTHER_ICCID, "integration": "jasper", "revio_service_id": "9"}]

    seed_from_inventory_rows(sims, rows, revio_account="other@otherclient")

    assert revio_list_ids(sims, OTHER_REVIO_AUTH) == [7, 9]
    assert revio_list_ids(sims, REVIO_AUTH) == [7]


def test_timed_out_call_does_not_hold_the_in_flight_slot(sims: SimulatorSet) -> None:
    sims.jasper.configure(timeout_rate=1.0, timeout_seconds=0.5)
    with pytest.raises(requests.Timeout):
        requests.get(f"{sims.jasper_url}/devices/{ICCID}", auth=JASPER_AUTH, timeout=0.1)
    sims.jasper.configure(timeout_rate=0.0)

    retry = jasper_get(sims)

    assert retry.status_code == 200
    assert sims.jasper.stats()["violations"]["in_flight"] == 0


def test_garbage_rate_answers_an_html_502(sims: SimulatorSet) -> None:
    sims.revio.configure(garbage_rate=1.0)

    answer = requests.get(f"{sims.revio_url}/Services/7", auth=REVIO_AUTH, headers=REVIO_HEADERS)

    assert answer.status_code == 502 and answer.headers["Content-Type"] == "text/html"
    assert sims.revio.stats()["faults"]["garbage"] == 1


def test_call_log_entries_stay_out_of_the_cyclic_collector(sims: SimulatorSet) -> None:
    # the simulators' host must not pause to walk its call log (freeze_host_objects)
    jasper_put(sims, ICCID, {"status": "DEACTIVATED"})
    entry = sims.jasper._stats.log[-1]
    assert not gc.is_tracked(entry)
    assert sims.jasper.calls()[-1]["body"] == {"status": "DEACTIVATED"}


def test_freezing_the_host_takes_its_objects_out_of_the_collectors_reach() -> None:
    held = [[n] for n in range(3)]  # lists: always tracked
    frozen = freeze_host_objects()
    try:
        assert frozen >= len(held)
        assert all(gc.is_tracked(d) for d in held)
        assert not any(any(o is d for d in held) for o in gc.get_objects())
    finally:
        gc.unfreeze()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="kernel receive time stamps")
def test_a_call_counts_from_the_arrival_of_its_first_byte(sims: SimulatorSet) -> None:
    # a vendor's gateway counts a call when it arrives, not when a thread gets to it
    host, port = sims.jasper_url.split("//")[1].split("/")[0].split(":")
    token = base64.b64encode(":".join(JASPER_AUTH).encode()).decode()
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        first_byte_sent = time.time()
        sock.sendall(f"GET /rws/api/v1/devices/{OTHER_ICCID} HTTP/1.1\r\n".encode())
        time.sleep(0.3)
        sock.sendall(f"Host: {host}\r\nAuthorization: Basic {token}\r\n\r\n".encode())
        assert sock.recv(1024).startswith(b"HTTP/1.1 404")  # not seeded: found all the same
    # (an earlier test's slow call can still be logged after the reset)
    (call,) = [c for c in sims.jasper.calls() if c["key"] == OTHER_ICCID]
    assert call["t"] - first_byte_sent < 0.1
    assert call["duration_ms"] >= 300


def test_a_fault_after_applying_leaves_the_write_applied(sims: SimulatorSet) -> None:
    sims.jasper.configure(error_rate=1.0, faults_apply=True)
    response = jasper_put(sims, ICCID, {"status": "DEACTIVATED"})
    assert response.status_code >= 500
    assert sims.jasper.state(ICCID)["status"] == "DEACTIVATED"


def test_a_write_applied_twice_in_a_row_counts_as_repeated(sims: SimulatorSet) -> None:
    jasper_put(sims, ICCID, {"status": "DEACTIVATED"})
    jasper_put(sims, ICCID, {"status": "DEACTIVATED"})
    assert sims.jasper.stats()["repeated_writes"] == 1


def test_a_write_of_another_value_is_not_a_repeat(sims: SimulatorSet) -> None:
    jasper_put(sims, ICCID, {"status": "DEACTIVATED"})
    jasper_put(sims, ICCID, {"status": "ACTIVATED"})
    jasper_put(sims, ICCID, {"status": "DEACTIVATED"})
    assert sims.jasper.stats()["repeated_writes"] == 0


def test_a_dropped_connection_answers_nothing_after_applying(sims: SimulatorSet) -> None:
    sims.jasper.configure(drop_rate=1.0, faults_apply=True)
    with pytest.raises(requests.ConnectionError):
        jasper_put(sims, ICCID, {"ratePlan": "RP-9"})
    assert sims.jasper.state(ICCID)["ratePlan"] == "RP-9"


def test_jasper_unconfirmed_edit_is_applied_and_answered_without_iccid(sims: SimulatorSet) -> None:
    sims.jasper.configure(unconfirmed_rate=1.0)
    response = jasper_put(sims, ICCID, {"ratePlan": "RP-9"})
    assert (response.status_code, response.json()) == (200, {})
    assert sims.jasper.state(ICCID)["ratePlan"] == "RP-9"


def test_arrival_jitter_delays_when_a_call_counts(sims: SimulatorSet) -> None:
    sims.jasper.configure(arrival_jitter_ms=50, seed=5)
    sent = []
    for _ in range(5):
        sent.append(time.time())
        jasper_get(sims, ICCID)
        time.sleep(0.25)
    counted = [call["t"] for call in sims.jasper.calls()]
    delays = [c - s for c, s in zip(counted, sent, strict=True)]
    assert max(delays) > 0.005 and all(d < 0.2 for d in delays)
