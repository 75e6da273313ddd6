"""A sensor's long poll that a stopping code server ends at once.

A queue sensor's tick listens for most of a minute, in receives that each wait up to
SQS's 20 s. Dagster's code server, asked to stop, waits for the gRPC calls in flight, so
a stop (a deployment, ``Ctrl+C``, a test's teardown) waited for the tick's receive to
end. Here a receive that waits runs on a thread of its own while the tick waits for its
answer or for the stop, whichever comes first (``stop_long_polls``, called by
``bulk_changes.code_server`` when the server is asked to stop). A receive given up that
still brings messages makes them visible again at once: nothing waits for a visibility
timeout because the process stopped."""

from __future__ import annotations

import logging
import threading
from typing import Any

from bulk_changes.resources.queue import QueueMessage

log = logging.getLogger(__name__)

_lock = threading.Lock()
_stopping = False
# the events that ticks in a long poll wait on
_waiting: set[threading.Event] = set()


def stop_long_polls() -> None:
    """End every long poll of this process now, and every later one before it starts."""
    global _stopping
    with _lock:
        _stopping = True
        for answered in _waiting:
            answered.set()


def stopping() -> bool:
    return _stopping


def receive(queue: Any, at_most: int, wait: int) -> list[QueueMessage]:
    """``queue.receive(at_most, wait_time_seconds=wait)``, or ``[]`` as soon as the process
    stops (or at once when it is stopping). A receive that does not wait runs here."""
    if not wait:
        return list(queue.receive(at_most, wait_time_seconds=0))
    answered = threading.Event()
    outcome: dict[str, Any] = {}

    def listen() -> None:
        messages: list[QueueMessage] = []
        error: Exception | None = None
        # the tick waits for this thread without a timeout: it is answered whatever happens
        try:
            try:
                messages = list(queue.receive(at_most, wait_time_seconds=wait))
            except Exception as exc:  # handed to the tick, which decides
                error = exc
            with _lock:
                given_up = outcome.setdefault("given_up", False)
                if not given_up:
                    outcome["messages"], outcome["error"] = messages, error
            if given_up:
                give_back(queue, messages)
        finally:
            answered.set()

    with _lock:
        if _stopping:
            return []
        _waiting.add(answered)
    try:
        threading.Thread(target=listen, name="queue-long-poll", daemon=True).start()
        answered.wait()
    finally:
        with _lock:
            _waiting.discard(answered)
            outcome.setdefault("given_up", True)
    if outcome.get("error") is not None:
        raise outcome["error"]
    return list(outcome.get("messages", []))


def give_back(queue: Any, messages: list[QueueMessage]) -> None:
    """Messages received for a tick that stopped: visible again at once."""
    for message in messages:
        try:
            queue.change_visibility(message.receipt_handle, 0)
        except Exception as exc:  # it comes back after the visibility timeout anyway
            log.warning(f"message {message.message_id} not given back: {exc!r}")
