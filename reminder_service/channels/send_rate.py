"""How fast one sender may send: the port, and its two implementations.

A provider limits each sender (a number, a messaging service), whichever process sends from it.
- LocalSendRate: a leaky bucket in this process. Right for a single process, and for SQLite,
  whose database is one host's.
- SharedSendRate: a token bucket in the database (store/send_rate_buckets.py) that every process
  sending from the same sender shares, so N processes together keep to the rate. A process takes
  a few tokens at once (GRANT_SECONDS' worth at most) and spends them itself, so at high rates it
  asks the database far less than once per message; an empty bucket lends tokens against its
  refill, and the process waits exactly until each is due (domain/token_bucket.py).

If the database fails, shared sends pause (never falling back to a local guess of this process's
share: without the other processes' counts, no local rate is safe) and try again with backoff;
after `give_up_after` seconds each send is refused with SendRateUnavailable, so its reminder is
retried later rather than waiting while its claim runs out.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Protocol

from aiolimiter import AsyncLimiter

from ..domain.token_bucket import Grant, RateBucketUnavailable, batch_size, capacity, offsets

log = logging.getLogger(__name__)

# A database call that takes longer than this counts as a failure (its tokens, if it ends
# later, are left unused: slower, never faster).
CALL_TIMEOUT_SECONDS = 5.0
RETRY_FIRST_SECONDS = 0.1
RETRY_MAX_SECONDS = 1.0
# A token whose moment passed this long ago is dropped: its waiter gave up (a cancelled send),
# and spending it now, on top of a bucket refilled meanwhile, would be a burst over capacity.
# Far above a late wake-up of the event loop, whose tokens are spent, keeping the rate.
LEFTOVER_SECONDS = 1.0


class SendRateUnavailable(Exception):
    """No turn to send could be had: the message must not go now (it is tried again later)."""


class SendRate(Protocol):
    async def acquire(self) -> None:
        """Return when the next message may go; raises SendRateUnavailable when it must not."""

    async def aclose(self) -> None:
        """Forget state bound to the running event loop (the next acquire makes it anew)."""


class LocalSendRate:
    """This process's own pace: a leaky bucket of capacity(rate) sends."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be more than 0")
        self._rate = rate
        self._limiter: AsyncLimiter | None = None  # bound to the running loop: made on first use

    async def acquire(self) -> None:
        if self._limiter is None:
            bucket = capacity(self._rate)
            self._limiter = AsyncLimiter(bucket, bucket / self._rate)
            # Start with the bucket all but full: a new limiter would let a whole bucket go at
            # once, and the first sends, slowed by opening connections, would then arrive
            # together with the next ones. (Capacity is free, so this does not wait.)
            await self._limiter.acquire(bucket - 1)
        await self._limiter.acquire()

    async def aclose(self) -> None:
        self._limiter = None


class RateBucket(Protocol):
    def take(self, sender: str, wanted: int, rate: float, capacity: float) -> Grant:
        """Take `wanted` tokens (blocking I/O); raises RateBucketUnavailable."""
        ...


class SharedSendRate:
    """One sender's pace, shared through a RateBucket with every process using it."""

    def __init__(
        self,
        bucket: RateBucket,
        sender: str,
        rate: float,
        *,
        give_up_after: float = 10.0,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be more than 0")
        self._bucket = bucket
        self._sender = sender
        self._rate = rate
        self._capacity = capacity(rate)
        self._batch = batch_size(rate)
        self._give_up_after = give_up_after
        self._monotonic = monotonic
        self._sleep = sleep
        self._moments: deque[float] = deque()  # when each token held may be spent (monotonic)
        self._waiting = 0
        self._lock: asyncio.Lock | None = None  # bound to the running loop: made on first use
        self._down_since: float | None = None  # the database has failed since then
        self._retry_at = 0.0  # after giving up: the next moment to try the database
        self._given_up = False

    async def acquire(self) -> None:
        if self._lock is None:
            self._lock = asyncio.Lock()
        self._waiting += 1
        try:
            # One waiter at a time, sleeping until its moment while holding the lock: the
            # process takes tokens only for sends that are waiting now, and holds one grant at
            # most, so the turns of other processes are never reserved ahead for its queue.
            async with self._lock:
                moment = self._next_moment()
                if moment is None:
                    await self._refill()
                    moment = self._next_moment()
                    assert moment is not None  # a grant has one token at least, none stale
                delay = moment - self._monotonic()
                if delay > 0:
                    await self._sleep(delay)
        finally:
            self._waiting -= 1

    async def aclose(self) -> None:
        self._lock = None
        self._moments.clear()

    def _next_moment(self) -> float | None:
        stale = self._monotonic() - LEFTOVER_SECONDS
        while self._moments and self._moments[0] < stale:
            self._moments.popleft()
        return self._moments.popleft() if self._moments else None

    async def _refill(self) -> None:
        grant = await self._take(min(self._waiting, self._batch))
        # The answer's arrival stands for the grant's moment on the database clock: it is never
        # earlier, so a network delay can only make us later.
        received = self._monotonic()
        self._moments.extend(received + offset for offset in offsets(grant, self._rate))

    async def _take(self, wanted: int) -> Grant:
        delay = RETRY_FIRST_SECONDS
        while True:
            now = self._monotonic()
            if self._given_up and now < self._retry_at:
                raise SendRateUnavailable(self._unreachable(now))
            try:
                grant = await asyncio.wait_for(
                    asyncio.to_thread(
                        self._bucket.take, self._sender, wanted, self._rate, self._capacity
                    ),
                    CALL_TIMEOUT_SECONDS,
                )
            except (RateBucketUnavailable, TimeoutError) as exc:
                self._failed(exc, delay)
                if self._given_up:
                    raise SendRateUnavailable(self._unreachable(self._monotonic())) from None
                await self._sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            self._recovered()
            return grant

    def _failed(self, exc: Exception, delay: float) -> None:
        now = self._monotonic()
        reason = str(exc) if isinstance(exc, RateBucketUnavailable) else "no answer in time"
        if self._down_since is None:
            self._down_since = now
            log.warning(
                "SMS rate limit: the shared bucket in the database failed (%s); SMS sending "
                "waits for it (never faster than the limit)",
                reason,
            )
        if not self._given_up and now - self._down_since >= self._give_up_after:
            self._given_up = True
            log.error(
                "SMS rate limit: the shared bucket has failed for %.0f s (%s); SMS are not sent "
                "until it answers, their reminders are retried later",
                now - self._down_since,
                reason,
            )
        self._retry_at = now + (RETRY_MAX_SECONDS if self._given_up else delay)

    def _recovered(self) -> None:
        if self._down_since is not None:
            log.warning(
                "SMS rate limit: the shared bucket answers again after %.1f s",
                self._monotonic() - self._down_since,
            )
        self._down_since = None
        self._given_up = False

    def _unreachable(self, now: float) -> str:
        since = now - (self._down_since if self._down_since is not None else now)
        return f"shared rate limit unreachable for {since:.0f} s: not sent"
