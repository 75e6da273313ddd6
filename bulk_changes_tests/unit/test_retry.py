import random

from bulk_changes.domain.errors import (
    ConnectionFailed,
    GarbageResponse,
    OutcomeUnknown,
    Rejected,
    ServerError,
    Throttled,
    TimeoutError_,
)
from bulk_changes.domain.retry import GiveUp, Retry, RetryPolicy, backoff, decide, effect_unknown
from bulk_changes.domain.state_machine import DeviceStatus

POLICY = RetryPolicy(max_attempts=3, base_delay=1.0, max_delay=8.0, jitter=0.0)


def rng():
    return random.Random(1)


def test_server_error_is_retried_with_exponential_delay():
    assert decide(ServerError("boom"), 1, 0, POLICY, rng()).delay == 1.0  # type: ignore[union-attr]
    assert decide(ServerError("boom"), 2, 0, POLICY, rng()).delay == 2.0  # type: ignore[union-attr]


def test_attempts_exhausted_give_api_failed_with_last_error():
    decision = decide(TimeoutError_("slow", system="jasper"), 3, 0, POLICY, rng())
    assert isinstance(decision, GiveUp)
    assert decision.status is DeviceStatus.API_FAILED and "slow" in decision.reason


def test_permanent_error_gives_error_at_once():
    decision = decide(Rejected("bad plan"), 1, 0, POLICY, rng())
    assert decision == GiveUp(DeviceStatus.ERROR, "bad plan")


def test_throttling_does_not_use_attempts():
    decision = decide(Throttled("slow down"), 3, 1, POLICY, rng())
    assert isinstance(decision, Retry)


def test_retry_after_is_honoured():
    decision = decide(Throttled("slow down", retry_after=20.0), 0, 1, POLICY, rng())
    assert decision == Retry(20.0)


def test_delay_is_capped():
    assert backoff(10, POLICY, rng()) == 8.0


def test_jitter_spreads_delays_within_bounds():
    policy = RetryPolicy(base_delay=1.0, jitter=0.5)
    delays = {round(backoff(1, policy, random.Random(seed)), 3) for seed in range(20)}
    assert len(delays) > 1 and all(0.5 <= d <= 1.5 for d in delays)


def test_unclassified_exception_stops_the_device_with_its_name():
    decision = decide(KeyError("x"), 1, 0, POLICY, rng())
    assert isinstance(decision, GiveUp) and "KeyError" in decision.reason


def test_a_timeout_after_sending_is_retried_only_after_reading_back():
    decision = decide(TimeoutError_("no answer", sent=True), 1, 0, POLICY, rng())
    assert decision == Retry(1.0, verify_first=True)


def test_a_server_error_leaves_the_effect_unknown():
    assert effect_unknown(ServerError("boom", status=503))


def test_an_answer_that_does_not_confirm_the_write_leaves_the_effect_unknown():
    assert effect_unknown(GarbageResponse("200 without iccid", status=200))


def test_a_dropped_connection_after_sending_leaves_the_effect_unknown():
    assert effect_unknown(ConnectionFailed("reset by peer", sent=True))


def test_a_request_that_never_left_is_retried_without_reading_back():
    decision = decide(ConnectionFailed("refused", sent=False), 1, 0, POLICY, rng())
    assert decision == Retry(1.0, verify_first=False)


def test_a_throttled_answer_applied_nothing():
    assert not effect_unknown(Throttled("slow down"))


def test_a_refusal_applied_nothing():
    assert not effect_unknown(Rejected("bad plan"))


def test_a_write_that_cannot_be_read_back_yet_ends_api_failed_never_resent():
    decision = decide(OutcomeUnknown("pending change", system="jasper"), 1, 0, POLICY, rng())
    assert decision == GiveUp(DeviceStatus.API_FAILED, "jasper: pending change")
