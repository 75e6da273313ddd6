"""The HTTP caller around a call's turn (resources/http.py, over its keep-alive connections,
resources/http_connections.py): it opens its connection before
the turn (``connect_ahead``) and tells the limiter when the request left. A call that
reaches the vendor late, after connecting or with its thread stalled, would crowd the
vendor's window of the calls after it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from bulk_changes.domain import errors
from bulk_changes.domain.settings import RateLimit
from bulk_changes.resources.http import HttpCaller, basic_auth_header
from bulk_changes.resources.http_connections import KeepAliveConnections
from bulk_changes.resources.local_sqs import free_port
from bulk_changes.simulators import SimulatorSet, start_simulators

DEVICE = "/devices/89011704278930000001"


class TurnRecorder:
    """Our limiter's protocol; at each turn, records whether the connections the call is
    about to use hold an open one."""

    def __init__(self) -> None:
        self.connections: KeepAliveConnections | None = None
        self.open_at_turn: list[bool] = []
        self.turns: list[tuple[float, float]] = []  # (turn, slot left)
        self.departures: list[float] = []

    @contextmanager
    def slot(
        self, account_name: str, limit: RateLimit, lease_seconds: float | None = None
    ) -> Iterator[TurnRecorder]:
        assert self.connections is not None
        self.open_at_turn.append(any(c.sock is not None for c in self.connections.idle()))
        turn = time.time()
        yield self
        self.turns.append((turn, time.time()))

    def departed(self, at: float) -> None:
        self.departures.append(at)

    def connections_made(self) -> int:
        assert self.connections is not None
        return self.connections.connections_made

    def penalize(self, account_name: str, seconds: float) -> None:
        pass


@pytest.fixture(scope="module")
def sims() -> Iterator[SimulatorSet]:
    running = start_simulators()
    running.jasper.seed({"devices": [{"iccid": DEVICE.rsplit("/", 1)[1], "status": "ACTIVATED"}]})
    yield running
    running.stop()


def caller_for(base_url: str) -> tuple[HttpCaller, TurnRecorder]:
    turns = TurnRecorder()
    caller = HttpCaller(
        system="jasper",
        account_name="sim-user",
        base_url=base_url,
        rate_limit=RateLimit(calls_per_second=5, max_in_flight=1),
        timeout_seconds=5,
        headers={"Authorization": basic_auth_header("sim-user", "sim-jasper-key")},
        secrets=["sim-jasper-key"],
        limiter=turns,
    )
    turns.connections = caller.connections
    return caller, turns


def test_a_new_callers_first_call_finds_its_connection_open_at_its_turn(
    sims: SimulatorSet,
) -> None:
    caller, turns = caller_for(sims.jasper_url)
    caller.request("GET", DEVICE)
    assert turns.open_at_turn == [True]
    assert turns.connections_made() == 1  # the call went over the connection opened ahead


def test_a_connection_closed_since_the_last_call_is_reopened_before_the_turn(
    sims: SimulatorSet,
) -> None:
    caller, turns = caller_for(sims.jasper_url)
    caller.request("GET", DEVICE)
    assert turns.connections is not None
    for conn in turns.connections.idle():
        conn.close()  # as when the vendor closes an idle connection
    caller.request("GET", DEVICE)
    assert turns.open_at_turn == [True, True]


def test_an_unreachable_host_still_fails_as_the_call_itself() -> None:
    caller, turns = caller_for(f"http://127.0.0.1:{free_port()}/rws/api/v1")
    for _ in range(2):
        with pytest.raises(errors.ConnectionFailed, match="connection refused"):
            caller.request("GET", DEVICE)
    assert turns.open_at_turn == [False, False]  # each call took its turn and failed there


def test_the_limiter_is_told_when_the_request_left_not_when_it_was_answered(
    sims: SimulatorSet,
) -> None:
    before = sims.jasper.config.latency_ms
    sims.jasper.configure(latency_ms=300)
    try:
        caller, turns = caller_for(sims.jasper_url)
        caller.request("GET", DEVICE)
    finally:
        sims.jasper.configure(latency_ms=before)
    ((turn, left),) = turns.turns
    (departed,) = turns.departures
    assert turn <= departed < turn + 0.1
    assert left - departed >= 0.3


def test_a_call_that_never_left_reports_no_departure() -> None:
    caller, turns = caller_for(f"http://127.0.0.1:{free_port()}/rws/api/v1")
    with pytest.raises(errors.ConnectionFailed):
        caller.request("GET", DEVICE)
    assert len(turns.turns) == 1 and turns.departures == []
