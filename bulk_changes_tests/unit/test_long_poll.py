"""bulk_changes.sensors.long_poll: a queue sensor's long poll ends when the code server
stops, and what a receive given up brings goes back on the queue."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from bulk_changes.resources.queue import QueueMessage
from bulk_changes.sensors import long_poll


class HeldQueue:
    """A queue whose waiting receive answers only when ``answer`` is called."""

    def __init__(self) -> None:
        self.receiving = threading.Event()
        self.release = threading.Event()
        self.messages: list[QueueMessage] = []
        self.error: Exception | None = None
        self.waits: list[int] = []
        self.made_visible: list[tuple[str, int]] = []

    def receive(self, max_messages: int, *, wait_time_seconds: int) -> list[QueueMessage]:
        self.waits.append(wait_time_seconds)
        if wait_time_seconds:
            self.receiving.set()
            assert self.release.wait(30)
        if self.error:
            raise self.error
        return self.messages[:max_messages]

    def answer(self, *messages: QueueMessage) -> None:
        self.messages = list(messages)
        self.release.set()

    def change_visibility(self, receipt_handle: str, seconds: int) -> None:
        self.made_visible.append((receipt_handle, seconds))


def message(n: int) -> QueueMessage:
    return QueueMessage(message_id=f"m{n}", receipt_handle=f"r{n}", body="{}")


@pytest.fixture(autouse=True)
def running_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # the stop is process-wide: each test starts with a process that is not stopping
    monkeypatch.setattr(long_poll, "_stopping", False)
    yield


def receive_in_thread(queue: HeldQueue, wait: int = 20) -> tuple[threading.Thread, dict]:
    got: dict = {}

    def tick() -> None:
        try:
            got["messages"] = long_poll.receive(queue, 10, wait)
        except Exception as exc:
            got["error"] = exc

    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    return thread, got


def test_a_long_poll_answered_returns_its_messages() -> None:
    queue = HeldQueue()
    thread, got = receive_in_thread(queue)
    assert queue.receiving.wait(10)
    queue.answer(message(1))
    thread.join(10)
    assert [m.message_id for m in got["messages"]] == ["m1"]
    assert queue.made_visible == []


def test_a_long_poll_ends_with_nothing_as_soon_as_the_process_stops() -> None:
    queue = HeldQueue()
    thread, got = receive_in_thread(queue)
    assert queue.receiving.wait(10)
    long_poll.stop_long_polls()
    thread.join(10)
    assert not thread.is_alive() and got == {"messages": []}
    queue.release.set()


def test_messages_a_given_up_receive_brings_are_made_visible_again_at_once() -> None:
    queue = HeldQueue()
    thread, _ = receive_in_thread(queue)
    assert queue.receiving.wait(10)
    long_poll.stop_long_polls()
    thread.join(10)
    queue.answer(message(1), message(2))
    for _ in range(200):  # the given-up receive's thread gives them back
        if len(queue.made_visible) == 2:
            break
        time.sleep(0.05)
    assert queue.made_visible == [("r1", 0), ("r2", 0)]


def test_no_long_poll_starts_once_the_process_is_stopping() -> None:
    queue = HeldQueue()
    long_poll.stop_long_polls()
    assert long_poll.receive(queue, 10, 20) == []
    assert queue.waits == []


def test_a_receive_that_does_not_wait_runs_even_while_stopping() -> None:
    queue = HeldQueue()
    queue.messages = [message(1)]
    long_poll.stop_long_polls()
    assert [m.message_id for m in long_poll.receive(queue, 10, 0)] == ["m1"]


def test_a_failed_long_poll_raises_its_error_in_the_tick() -> None:
    queue = HeldQueue()
    queue.error = ConnectionError("queue down")
    thread, got = receive_in_thread(queue)
    assert queue.receiving.wait(10)
    queue.release.set()
    thread.join(10)
    assert isinstance(got["error"], ConnectionError)
