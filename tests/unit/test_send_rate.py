"""The shared SMS rate limit's arithmetic, and how a process spends what the bucket grants, on
an injected clock: a fake monotonic time that a sleep moves forward at once."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import UTC, datetime, timedelta

import pytest

from reminder_service import bootstrap
from reminder_service.channels.send_rate import (
    LEFTOVER_SECONDS,
    LocalSendRate,
    SendRateUnavailable,
    SharedSendRate,
)
from reminder_service.domain.token_bucket import (
    Grant,
    RateBucketUnavailable,
    batch_size,
    capacity,
    offsets,
)
from reminder_service.settings import Settings

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
SENDER = "+447700900001"


class FakeTime:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class ModelBucket:
    """The documented bucket (domain/token_bucket.py) on the fake clock; it may be told to fail
    the next few takes, as a database that is down does."""

    def __init__(self, time: FakeTime) -> None:
        self.time = time
        self.tokens: float | None = None
        self.refilled_at = 0.0
        self.wanted: list[int] = []
        self.failures = 0
        self.attempts = 0

    def take(self, sender: str, wanted: int, rate: float, capacity: float) -> Grant:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise RateBucketUnavailable("OperationalError")
        now = self.time()
        if self.tokens is None:
            self.tokens, self.refilled_at = 1.0 - wanted, now
        else:
            elapsed = max(0.0, now - self.refilled_at)
            self.tokens = min(capacity, self.tokens + rate * elapsed) - wanted
            self.refilled_at = max(self.refilled_at, now)
        self.wanted.append(wanted)
        return Grant(wanted, self.tokens, EPOCH + timedelta(seconds=self.refilled_at))


def shared(bucket: ModelBucket, rate: float, **kwargs: float) -> SharedSendRate:
    time = bucket.time
    return SharedSendRate(bucket, SENDER, rate, monotonic=time, sleep=time.sleep, **kwargs)


def run_all(limiter: SharedSendRate, time: FakeTime, count: int) -> list[float]:
    """`count` sends asking for their turn at once; the moment each got it."""
    moments: list[float] = []

    async def one() -> None:
        await limiter.acquire()
        moments.append(time())

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(count)))
        await limiter.aclose()  # this loop ends: the next run makes its lock anew

    asyncio.run(main())
    return moments


def busiest(moments: list[float], window: float) -> int:
    ordered = sorted(moments)
    return max(sum(1 for m in ordered if start <= m < start + window) for start in ordered)


# -- the arithmetic ---------------------------------------------------------------------------


def test_a_grant_within_the_bucket_can_all_go_at_once() -> None:
    assert offsets(Grant(2, tokens_left=0.4, at=EPOCH), rate=10) == [0.0, 0.0]


def test_a_grant_beyond_the_bucket_is_spaced_at_the_rate() -> None:
    # One token there; the next two come 0.1 s and 0.2 s later at 10 a second.
    assert offsets(Grant(3, tokens_left=-2.0, at=EPOCH), rate=10) == pytest.approx([0, 0.1, 0.2])


def test_a_grant_in_debt_waits_for_the_debt_first() -> None:
    # The bucket already owed 1.5 tokens to earlier grants: this one's start after them.
    assert offsets(Grant(2, tokens_left=-3.5, at=EPOCH), rate=10) == pytest.approx([0.25, 0.35])


@pytest.mark.parametrize(
    ("rate", "largest", "batch"), [(1, 1.02, 1), (20, 1.4, 1), (200, 5, 10), (1000, 21, 50)]
)
def test_the_bucket_holds_tens_of_milliseconds_and_a_batch_fifty(
    rate: float, largest: float, batch: int
) -> None:
    assert capacity(rate) == pytest.approx(largest)
    assert batch_size(rate) == batch


# -- spending grants in one process -----------------------------------------------------------


def test_sends_wait_exactly_their_turn() -> None:
    time = FakeTime()
    moments = run_all(shared(ModelBucket(time), rate=10), time, 5)
    assert moments == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_a_batch_is_taken_for_the_sends_waiting_and_none_is_wasted() -> None:
    time = FakeTime()
    bucket = ModelBucket(time)
    rate, count = 1000.0, 240
    moments = run_all(shared(bucket, rate), time, count)
    # The first send asked alone; the others queued behind it and were served 50 at a time.
    assert bucket.wanted[0] == 1
    assert max(bucket.wanted) == batch_size(rate) == 50
    assert sum(bucket.wanted) == count
    assert len(bucket.wanted) <= 1 + -(-(count - 1) // 50)
    # Never faster than the rate: no window of any length holds more than capacity + rate * it.
    for window in (0.01, 0.05, 0.1):
        assert busiest(moments, window) <= capacity(rate) + rate * window
    assert max(moments) == pytest.approx((count - 1) / rate)


def test_a_bucket_refilled_while_idle_lets_only_its_capacity_go_at_once() -> None:
    time = FakeTime()
    limiter = shared(ModelBucket(time), rate=100)
    run_all(limiter, time, 3)
    time.now += 60.0  # idle for a minute: the bucket refilled, but only to its capacity
    start = time.now
    moments = run_all(limiter, time, 10)
    assert sum(1 for m in moments if m == start) <= capacity(100)
    assert busiest(moments, 0.05) <= capacity(100) + 100 * 0.05


def test_a_token_left_by_a_cancelled_send_is_dropped_once_stale() -> None:
    """A grant is for the sends waiting when it was taken; if one of them gives up, its token
    may be spent soon after, but never after an idle spell, on top of a refilled bucket."""

    class GatedBucket(ModelBucket):
        def __init__(self, time: FakeTime) -> None:
            super().__init__(time)
            self.gate = threading.Semaphore(0)
            self.asked = 0

        def take(self, sender: str, wanted: int, rate: float, capacity: float) -> Grant:
            self.asked += 1
            self.gate.acquire()
            return super().take(sender, wanted, rate, capacity)

    async def leave_a_token(limiter: SharedSendRate, bucket: GatedBucket) -> None:
        asked = bucket.asked
        first = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0)  # it takes one token, and waits for the bucket's answer
        second, third = (asyncio.create_task(limiter.acquire()) for _ in range(2))
        await asyncio.sleep(0)  # both queue behind it
        bucket.gate.release()
        await first
        while bucket.asked < asked + 2:
            await asyncio.sleep(0.001)  # until the second asks, for itself and the third
        third.cancel()
        bucket.gate.release()
        await second
        with pytest.raises(asyncio.CancelledError):
            await third

    async def main() -> tuple[list[int], list[int]]:
        time = FakeTime()
        bucket = GatedBucket(time)
        limiter = SharedSendRate(bucket, SENDER, 1000, monotonic=time, sleep=time.sleep)
        await leave_a_token(limiter, bucket)
        await limiter.acquire()  # at once: spends the token the cancelled send left
        soon = list(bucket.wanted)
        await leave_a_token(limiter, bucket)
        time.now += LEFTOVER_SECONDS + 1
        bucket.gate.release()
        await limiter.acquire()  # after an idle spell: asks the bucket again
        return soon, bucket.wanted

    soon, later = asyncio.run(main())
    assert soon == [1, 2]
    assert later == [1, 2, 1, 2, 1]


# -- a database that fails -------------------------------------------------------------------


def test_a_failing_database_pauses_sends_and_they_go_on_when_it_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    time = FakeTime()
    bucket = ModelBucket(time)
    bucket.failures = 3
    with caplog.at_level(logging.WARNING):
        moments = run_all(shared(bucket, rate=10), time, 2)
    # Backoff 0.1 + 0.2 + 0.4 s, then the grant: no send went without one.
    assert moments == pytest.approx([0.7, 0.8])
    assert sum(bucket.wanted) == 2
    messages = [r.getMessage() for r in caplog.records]
    assert any("shared bucket in the database failed (OperationalError)" in m for m in messages)
    assert any("answers again after 0.7 s" in m for m in messages)
    assert all(SENDER not in m for m in messages)


def test_after_give_up_after_sends_are_refused_until_the_database_answers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        time = FakeTime()
        bucket = ModelBucket(time)
        bucket.failures = 1_000
        limiter = shared(bucket, rate=10, give_up_after=2.0)
        with pytest.raises(SendRateUnavailable, match="unreachable for 2 s: not sent"):
            await limiter.acquire()
        assert 2.0 <= time.now <= 3.0  # it waited, with backoff, that long and no longer
        tried = bucket.attempts
        # Meanwhile every send is refused at once, asking the database once a second at most.
        for _ in range(5):
            with pytest.raises(SendRateUnavailable):
                await limiter.acquire()
        assert bucket.attempts == tried
        time.now += 1.0
        with pytest.raises(SendRateUnavailable):
            await limiter.acquire()
        assert bucket.attempts == tried + 1
        bucket.failures = 0
        time.now += 1.0
        await limiter.acquire()
        await limiter.acquire()  # back to normal: no give-up left behind
        assert sum(bucket.wanted) == 2

    with caplog.at_level(logging.WARNING):
        asyncio.run(main())
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # once per outage, not once per send
    assert "retried later" in errors[0].getMessage()


@pytest.mark.parametrize("rate", [0.0, -1.0])
def test_a_rate_must_be_positive(rate: float) -> None:
    with pytest.raises(ValueError, match="rate must be more than 0"):
        LocalSendRate(rate)
    with pytest.raises(ValueError, match="rate must be more than 0"):
        SharedSendRate(ModelBucket(FakeTime()), SENDER, rate)


def test_a_process_claims_at_most_two_seconds_of_the_rate() -> None:
    """Each process gets only its part of a shared rate: what it claims must still go out well
    within the lease when several processes queue for the sender. (And what waits its turn
    would be outcomes to ask Twilio about after a crash, shared rate or not.)"""
    settings = Settings(sms_channel="twilio", sms_rate_limit=20, lease_seconds=60)
    assert bootstrap._max_in_flight(settings) == 40
    slow = Settings(sms_channel="twilio", sms_rate_limit=0.2, lease_seconds=60)
    assert bootstrap._max_in_flight(slow) == 1
    short_lease = Settings(sms_channel="twilio", sms_rate_limit=20, lease_seconds=3)
    assert bootstrap._max_in_flight(short_lease) == 20  # a third of the lease
    assert bootstrap._max_in_flight(Settings(max_in_flight=7)) == 7
