"""The SMS rate limit shared through PostgreSQL: the bucket's arithmetic on the real database
(with an injected clock), several processes sharing one bucket (what they were granted, on the
database's clock, never outruns the rate), and bootstrap's choice of pace per database."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, delete, select, text

from reminder_service import bootstrap
from reminder_service.channels.base import ChannelError, OutgoingSms
from reminder_service.channels.send_rate import SendRateUnavailable, SharedSendRate
from reminder_service.channels.twilio_sms import TwilioSmsChannel
from reminder_service.configuration.delivery_failures import load_failure_table
from reminder_service.domain.failures import FailureKind
from reminder_service.domain.token_bucket import (
    Grant,
    RateBucketUnavailable,
    batch_size,
    capacity,
)
from reminder_service.settings import Settings, TwilioSettings
from reminder_service.store.engine import make_engine, migrate
from reminder_service.store.send_rate_buckets import PostgresRateBuckets
from reminder_service.store.tables import send_rate_buckets
from tests.conftest import POSTGRES_ENV
from tests.factories import CONFIG_DIR, appointment, patient
from tests.fakes import FakeClock
from tests.servers.twilio_api import ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, serve_in_thread

T0 = datetime(2026, 11, 19, 9, 0, tzinfo=UTC)
SENDER = FROM_NUMBER


@pytest.fixture
def engine(postgres_url: str | None) -> Iterator[Engine]:
    if not postgres_url:
        pytest.skip(f"the shared rate limit lives in PostgreSQL: set {POSTGRES_ENV}")
    made = make_engine(postgres_url)
    migrate(made)
    with made.begin() as conn:
        conn.execute(delete(send_rate_buckets))
    yield made
    made.dispose()


def seconds(grant: Grant) -> float:
    return (grant.at - T0).total_seconds()


# -- the arithmetic, on the database, at moments the test gives -------------------------------


def test_a_new_bucket_holds_one_token_and_lends_the_rest(engine: Engine) -> None:
    grant = PostgresRateBuckets(engine).take(SENDER, 3, rate=10, capacity=1.2, at=T0)
    assert grant == Grant(3, tokens_left=-2.0, at=T0)


def test_the_bucket_refills_at_the_rate_up_to_its_capacity(engine: Engine) -> None:
    buckets = PostgresRateBuckets(engine)
    buckets.take(SENDER, 1, rate=10, capacity=1.2, at=T0)  # leaves 0
    after = buckets.take(SENDER, 1, rate=10, capacity=1.2, at=T0 + timedelta(seconds=0.05))
    assert after.tokens_left == pytest.approx(-0.5)  # half a token came in 50 ms
    idle = buckets.take(SENDER, 1, rate=10, capacity=1.2, at=T0 + timedelta(seconds=60))
    assert idle.tokens_left == pytest.approx(0.2)  # a minute's refill, but capped at 1.2


def test_a_statement_whose_clock_reads_earlier_never_counts_time_twice(engine: Engine) -> None:
    """A take that waited for the row lock may carry an earlier moment than the one before it:
    it refills nothing, and the refill time never moves back (else the next take would count
    that interval again)."""
    buckets = PostgresRateBuckets(engine)
    buckets.take(SENDER, 1, rate=10, capacity=1.2, at=T0)
    late = buckets.take(SENDER, 1, rate=10, capacity=1.2, at=T0 + timedelta(seconds=0.5))
    early = buckets.take(SENDER, 1, rate=10, capacity=1.2, at=T0 + timedelta(seconds=0.4))
    assert early.at == late.at == T0 + timedelta(seconds=0.5)
    assert early.tokens_left == pytest.approx(late.tokens_left - 1)
    following = buckets.take(SENDER, 1, rate=10, capacity=1.2, at=T0 + timedelta(seconds=0.6))
    assert following.tokens_left == pytest.approx(early.tokens_left + 1 - 1)


def test_each_sender_has_a_bucket_of_its_own(engine: Engine) -> None:
    buckets = PostgresRateBuckets(engine)
    buckets.take(SENDER, 5, rate=10, capacity=1.2, at=T0)
    other = buckets.take("MG" + "0" * 32, 1, rate=10, capacity=1.2, at=T0)
    assert other.tokens_left == 0.0


def test_time_is_the_databases_clock(engine: Engine) -> None:
    buckets = PostgresRateBuckets(engine)
    with engine.connect() as conn:
        before = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
    grant = buckets.take(SENDER, 1, rate=10, capacity=1.2)
    with engine.connect() as conn:
        after = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
    assert before <= grant.at <= after


def test_a_database_that_cannot_be_reached_is_reported_as_such() -> None:
    unreachable = make_engine("postgresql://postgres@127.0.0.1:1/test")
    try:
        with pytest.raises(RateBucketUnavailable, match="OperationalError"):
            PostgresRateBuckets(unreachable).take(SENDER, 1, rate=10, capacity=1.2)
    finally:
        unreachable.dispose()


def test_shared_buckets_need_postgresql(tmp_path: Path) -> None:
    sqlite = make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    with pytest.raises(ValueError, match="PostgreSQL"):
        PostgresRateBuckets(sqlite)
    sqlite.dispose()


# -- several processes, one bucket -----------------------------------------------------------


class RecordingBucket:
    """The real bucket, writing each grant to a shared file (one line, O_APPEND)."""

    def __init__(self, inner: PostgresRateBuckets, log: Path) -> None:
        self._inner = inner
        self._log = log

    def take(self, sender: str, wanted: int, rate: float, capacity: float) -> Grant:
        grant = self._inner.take(sender, wanted, rate, capacity)
        line = {"pid": os.getpid(), "wanted": wanted, "left": grant.tokens_left,
                "at": grant.at.isoformat()}  # fmt: skip
        with self._log.open("a") as handle:
            handle.write(json.dumps(line) + "\n")
        return grant


def _spend(url: str, rate: float, count: int, log: Path, start: Any) -> None:
    engine = make_engine(url)
    limiter = SharedSendRate(RecordingBucket(PostgresRateBuckets(engine), log), SENDER, rate)

    async def main() -> None:
        await asyncio.gather(*(limiter.acquire() for _ in range(count)))  # all queue at once

    start.wait()
    asyncio.run(main())
    engine.dispose()


def test_processes_sharing_a_bucket_are_never_granted_more_than_the_rate_allows(
    engine: Engine, postgres_url: str, tmp_path: Path
) -> None:
    rate, count, processes = 100.0, 40, 3
    log = tmp_path / "grants.jsonl"
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(processes)
    workers = [
        context.Process(target=_spend, args=(postgres_url, rate, count, log, start))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    grants = [json.loads(line) for line in log.read_text().splitlines()]

    # Every send had its token, none was taken twice over, and the processes asked the database
    # for a batch at a time: a round trip for several sends.
    by_pid: dict[int, list[dict[str, Any]]] = {}
    for grant in grants:
        by_pid.setdefault(grant["pid"], []).append(grant)
    assert len(by_pid) == processes
    for own in by_pid.values():
        assert sum(g["wanted"] for g in own) == count
        assert len(own) <= 1 + -(-(count - 1) // batch_size(rate))
    # They really competed: some grants were lent against the refill, past other processes'.
    assert any(g["left"] + g["wanted"] < 0 for g in grants)

    # The moment each token was granted for, on the database's clock (token j of a grant: its
    # moment plus max(0, j - available) / rate). However the processes interleaved, no span of
    # time holds more of them than the capacity plus the rate times the span.
    moments = sorted(
        datetime.fromisoformat(g["at"]).timestamp() + max(0.0, j - (g["left"] + g["wanted"])) / rate
        for g in grants
        for j in range(1, g["wanted"] + 1)
    )
    assert len(moments) == processes * count
    allowed = capacity(rate)
    for i, first in enumerate(moments):
        for j in range(i + 1, len(moments)):
            assert j - i + 1 <= allowed + rate * (moments[j] - first) + 1e-6, (i, j)


# -- bootstrap's choice ----------------------------------------------------------------------


def test_with_postgresql_the_twilio_sender_paces_through_the_shared_bucket(
    settings: Settings, clock: FakeClock
) -> None:
    with serve_in_thread() as server:
        twilio = TwilioSettings(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                                from_number=FROM_NUMBER, api_base_url=server.base_url)  # fmt: skip
        configured = replace(
            settings, sms_channel="twilio", twilio=twilio, public_url="https://r.example.org"
        )
        service = bootstrap.build(configured, clock)
        person = patient(external_id="P1", mobile="+447700900123", email=None)
        service.importer.apply(
            [(2, appointment(external_id="A1", patient=person))], source="test", label="t"
        )
        clock.advance(seconds=1)
        report = service.dispatcher.dispatch_due()
        with service.engine.connect() as conn:
            buckets = conn.execute(select(send_rate_buckets.c.sender)).scalars().all()
        service.close()
    assert report.by_status == {"sent": 1}
    if service.engine.dialect.name == "postgresql":
        assert buckets == [FROM_NUMBER]  # every process on this database shares it
    else:
        assert buckets == []  # SQLite: this process's own pace


class NoTurn:
    """A pace whose database has failed for longer than sends may wait."""

    async def acquire(self) -> None:
        raise SendRateUnavailable("shared rate limit unreachable for 10 s: not sent")

    async def aclose(self) -> None:
        pass


def test_a_send_that_gets_no_turn_is_not_made_and_is_retried_later() -> None:
    message = OutgoingSms(1, "A1", "booking", "+447700900123", "Hello", T0)
    with serve_in_thread() as server:
        twilio = TwilioSettings(account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN,
                                from_number=FROM_NUMBER, api_base_url=server.base_url)  # fmt: skip
        channel = TwilioSmsChannel(twilio, concurrency=2, rate_limit=10, send_rate=NoTurn())

        async def send() -> None:
            try:
                await channel.send_sms(message)
            finally:
                await channel.aclose()

        with pytest.raises(ChannelError) as caught:
            asyncio.run(send())
        assert server.stats()["requests"] == 0
    failure = caught.value.failure
    assert (failure.kind, failure.maybe_accepted) == (FailureKind.LOCAL, False)
    assert "unreachable" in failure.describe()
    verdict = load_failure_table(CONFIG_DIR / "delivery_failures.yaml").classify(failure)
    assert not verdict.permanent
