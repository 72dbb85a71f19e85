"""The arithmetic of a sender's rate limit shared through a token bucket.

Pure. The bucket (store/send_rate_buckets.py) refills at `rate` tokens a second up to a small
`capacity`, and a grant always takes the tokens asked for, so the bucket may go below zero: a
debt is a reservation of later moments. Token j (1-based) of a grant is the sender's to use
max(0, j - available) / rate seconds after the grant, `available` being what the bucket held just
before it. Later grants start where the debt ends, so the moments of all the grants together, in
whatever process, never number more than capacity + rate * t in any t seconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

# The bucket holds one send plus this much time's worth. After a pause its contents can go at
# once, the only overshoot over any window; the extra also absorbs late wake-ups of the event
# loop (a timer fires a millisecond late), which would otherwise be lost from the rate: at 100 a
# second, 1 ms late on each send would cost 10%.
BURST_SECONDS = 0.02
# How much a process takes from a shared bucket at once, at most: at high rates a database
# round trip per batch, not per message (20 a second at most), while the batch stays small
# against the rate, so processes sharing the sender take turns many times a second.
GRANT_SECONDS = 0.05


class RateBucketUnavailable(Exception):
    """The shared bucket could not be reached (the database is down or did not answer)."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What one take from the bucket gave: `wanted` tokens, leaving `tokens_left` (below zero:
    a debt), as of `at` on the database's clock."""

    wanted: int
    tokens_left: float
    at: datetime

    @property
    def available(self) -> float:
        """What the bucket held, refilled, just before this grant."""
        return self.tokens_left + self.wanted


def capacity(rate: float) -> float:
    """The most a bucket holds: one send plus BURST_SECONDS' worth."""
    return 1 + rate * BURST_SECONDS


def batch_size(rate: float) -> int:
    """The most tokens one take asks for: GRANT_SECONDS' worth, at least one."""
    return max(1, math.floor(rate * GRANT_SECONDS))


def offsets(grant: Grant, rate: float) -> list[float]:
    """Seconds after the grant at which each of its tokens may be used, in order."""
    return [max(0.0, j - grant.available) / rate for j in range(1, grant.wanted + 1)]
