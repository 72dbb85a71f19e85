"""Token buckets in PostgreSQL, one row per sender, shared by every process on the database.

One statement takes tokens: it refills the row for the time since its last refill, capped at the
capacity, subtracts what is asked for and returns what is left (see domain/token_bucket.py). It
runs on its own, in autocommit, so the row lock lasts one statement and no transaction is ever
held while a process waits for its turn. Time is the database's `clock_timestamp()`, read once
per statement: processes on hosts whose clocks disagree still share one timeline. A statement
that waited for the row lock may have read the clock before the one it waited for: the refill
time then never moves back, so no interval is counted twice.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from ..domain.token_bucket import Grant, RateBucketUnavailable

_TAKE = """
WITH clock AS (SELECT {now} AS now)
INSERT INTO send_rate_buckets AS b (sender, tokens, refilled_at)
SELECT :sender, :first - :wanted, now FROM clock
ON CONFLICT (sender) DO UPDATE SET
    tokens = least(
        :capacity,
        b.tokens + :rate * greatest(
            0, extract(epoch FROM excluded.refilled_at - b.refilled_at)::double precision
        )
    ) - :wanted,
    refilled_at = greatest(b.refilled_at, excluded.refilled_at)
RETURNING b.tokens, b.refilled_at
"""
TAKE = text(_TAKE.format(now="clock_timestamp()"))
TAKE_AT = text(_TAKE.format(now="CAST(:at AS timestamptz)"))
# A new bucket holds one token, not a full one: the first sends, slowed by opening connections,
# would otherwise arrive together with the next ones.
FIRST_TOKENS = 1.0


class PostgresRateBuckets:
    def __init__(self, engine: Engine) -> None:
        if engine.dialect.name != "postgresql":
            raise ValueError("shared rate buckets need PostgreSQL")
        self._engine = engine.execution_options(isolation_level="AUTOCOMMIT")

    def take(
        self, sender: str, wanted: int, rate: float, capacity: float, at: datetime | None = None
    ) -> Grant:
        """Take `wanted` tokens from `sender`'s bucket. `at` replaces the database's clock (for
        tests of the arithmetic); raises RateBucketUnavailable when the database fails."""
        params = {
            "sender": sender,
            "wanted": wanted,
            "rate": rate,
            "capacity": capacity,
            "first": FIRST_TOKENS,
        }
        statement = TAKE if at is None else TAKE_AT
        if at is not None:
            params["at"] = at
        try:
            with self._engine.connect() as conn:
                tokens, refilled_at = conn.execute(statement, params).one()
        except DBAPIError as exc:
            raise RateBucketUnavailable(type(exc.orig or exc).__name__) from exc
        return Grant(wanted, float(tokens), refilled_at)
