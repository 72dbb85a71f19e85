"""SMS dispatch against a local Twilio-API server, beside the textbook design and raw HTTP.

Prints, in one run:
1. Throughput and CPU: N due SMS through our dispatcher (claim, prepare, send through the Twilio
   SDK on one event loop, record in batches), CPU per SMS from claim to record, against a server
   answering at once and in ~100 ms; beside it, raw async HTTP (aiohttp posting the same form to
   the same server, nothing else: the floor for one process) and the textbook design
   (APScheduler's default thread pool calling the SDK once per job, on a sample at ~100 ms).
2. Correctness under failures: the same N against a server that fails 20% of requests with 500
   and throttles 10% with 429, and rejects one number with 21211: every message accepted exactly
   once, the permanent error tried once, nothing sent after its deadline, no stall.
3. The rate limit: a configured messages-per-second limit against the server's arrival times.

The server runs in its own process (tests/servers/twilio_api.py), so its CPU does not count
against ours; ours is one process. Targets (issue 13): at most 0.3 ms of CPU per SMS; at least
3,000 SMS/s at 0 ms and 1,500 SMS/s at 100 ms; at least 15 times the textbook design and within
2 times raw async HTTP (both measured in the same run); the configured limit held within 5%.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from apscheduler.schedulers.background import BackgroundScheduler  # noqa: E402
from sqlalchemy import func, select, update  # noqa: E402
from twilio.rest import Client  # noqa: E402

from reminder_service import bootstrap  # noqa: E402
from reminder_service.domain.appointment import (  # noqa: E402
    Appointment,
    AppointmentStatus,
    Patient,
    Tristate,
)
from reminder_service.services.gc_pause import tune_for_long_run  # noqa: E402
from reminder_service.settings import Settings, TwilioSettings  # noqa: E402
from reminder_service.store.tables import audit_log, reminders  # noqa: E402
from tests.servers.twilio_api import (  # noqa: E402
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    Behaviour,
    serve_in_process,
)

TARGET_CPU_MS = 0.3
TARGET_RATE_FAST = 3_000.0  # at 0 ms provider latency
TARGET_RATE_SLOW = 1_500.0  # at 100 ms
TARGET_RATIO = 15.0
TARGET_RAW_RATIO = 2.0
TARGET_LIMIT_ERROR = 0.05
CONCURRENCY = 400
LONDON = ZoneInfo("Europe/London")
REJECTED = "+447700900666"  # the server answers 21211 (invalid number) for it


class OffsetClock:
    """Real time plus an offset the bench moves forward to reach retry times (no sleeping)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


def settings_for(workdir: Path, base_url: str, rate: float, concurrency: int) -> Settings:
    return Settings(
        database_url=f"sqlite:///{workdir / 'reminders.db'}",
        outbox_dir=workdir / "outbox",
        config_dir=ROOT / "config",
        templates_dir=ROOT / "templates",
        log_level="WARNING",
        sms_channel="twilio",
        sms_rate_limit=rate,
        sms_concurrency=concurrency,
        max_in_flight=2 * concurrency,  # a queue of prepared sends behind every connection
        lease_seconds=120,
        dispatch_batch=200,
        public_url="https://reminders.example.org",
        twilio=TwilioSettings(
            account_sid=ACCOUNT_SID,
            auth_token=AUTH_TOKEN,
            from_number=FROM_NUMBER,
            api_base_url=base_url,
            timeout_seconds=10,
        ),
    )


def appointments(count: int, now: datetime) -> list[tuple[int, Appointment]]:
    """SMS-only patients (no email), so each gets one due booking SMS. Numbers cycle through
    Ofcom's drama range (a caregiver's number shared by several patients is normal)."""
    made = []
    for i in range(count):
        number = REJECTED if i % 1000 == 666 else f"+447700900{i % 1000:03d}"
        patient = Patient(f"P{i}", "Test", f"Patient{i}", number, None, "en-GB", "Europe/London")
        start = (now + timedelta(days=10)).replace(hour=10, minute=0, second=0, microsecond=0)
        made.append(
            (
                i + 2,
                Appointment(
                    f"A{i}",
                    "riverside",
                    patient,
                    "BMBX",
                    start,
                    60,
                    "Day Unit",
                    AppointmentStatus.BOOKED,
                    Tristate.NO,
                    Tristate.NO,
                ),
            )
        )
    return made


@contextmanager
def as_run_tunes_it() -> Iterator[None]:
    """The collector as `reminder-service run` sets it (services/gc_pause.py), for the run of
    our dispatcher; as it was after, for the baselines measured in this process."""
    before = gc.get_threshold()
    tune_for_long_run()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def prepared_service(  # type: ignore[no-untyped-def]
    workdir: Path,
    base_url: str,
    count: int,
    rate: float,
    concurrency: int,
    *,
    defaults: bool = False,
):
    """`defaults`: the service's own batch, in-flight and concurrency settings, not the bench's."""
    clock = OffsetClock()
    settings = settings_for(workdir, base_url, rate, concurrency)
    if defaults:
        default = Settings()
        settings = replace(
            settings,
            dispatch_batch=default.dispatch_batch,
            max_in_flight=default.max_in_flight,
            sms_concurrency=default.sms_concurrency,
            lease_seconds=default.lease_seconds,
        )
    service = bootstrap.build(settings, clock)
    service.importer.apply(appointments(count, clock()), source="bench", label="bench")
    # Send-window hours are not what this measures: make every SMS sendable now.
    window = service.catalog.clinics.default.send_window
    if window.next_allowed(clock(), LONDON) > clock():
        clock.offset = window.next_allowed(clock(), LONDON) - clock() + timedelta(minutes=1)
    return service, clock


def run_ours(workdir: Path, count: int, latency_ms: int) -> dict[str, Any]:
    with serve_in_process(Behaviour(latency_ms=latency_ms, jitter_ms=20)) as server:
        service, _clock = prepared_service(workdir, server.base_url, count, 1e9, CONCURRENCY)
        with as_run_tunes_it():
            cpu0 = time.process_time()
            started = time.perf_counter()
            report = service.dispatcher.dispatch_due()
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu0
        stats = server.stats()
        service.close()
    sent = report.by_status.get("sent", 0)
    return {
        "sms": count,
        "latency_ms": latency_ms,
        "sent": sent,
        "seconds": elapsed,
        "sms_per_second": sent / elapsed,
        "cpu_seconds": cpu,
        "cpu_ms_per_sms": 1000 * cpu / max(sent, 1),
        "server_max_in_flight": stats["max_in_flight"],
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_raw(count: int, latency_ms: int) -> dict[str, Any]:
    """The floor: aiohttp posting the same form to the same server, as many at once as ours."""
    with serve_in_process(Behaviour(latency_ms=latency_ms, jitter_ms=20)) as server:
        url = f"{server.base_url}/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
        headers = {"Authorization": aiohttp.encode_basic_auth(ACCOUNT_SID, AUTH_TOKEN)}

        async def send_all() -> tuple[float, float]:
            slots = asyncio.Semaphore(CONCURRENCY)
            connector = aiohttp.TCPConnector(limit=CONCURRENCY)
            async with aiohttp.ClientSession(connector=connector) as session:

                async def one(i: int) -> None:
                    form = {"To": f"+447700900{i % 1000:03d}", "From": FROM_NUMBER,
                            "Body": f"Reminder {i}"}  # fmt: skip
                    async with slots, session.post(url, data=form, headers=headers) as answer:
                        await answer.read()

                cpu0, started = time.process_time(), time.perf_counter()
                await asyncio.gather(*(one(i) for i in range(count)))
                return time.perf_counter() - started, time.process_time() - cpu0

        elapsed, cpu = asyncio.run(send_all())
        accepted = server.stats()["accepted"]
    return {
        "sms": count,
        "accepted": accepted,
        "seconds": elapsed,
        "sms_per_second": count / elapsed,
        "cpu_ms_per_sms": 1000 * cpu / count,
    }


def run_textbook(count: int, latency_ms: int) -> dict[str, Any]:
    """APScheduler's default: a BackgroundScheduler whose thread pool has 10 workers, one date
    job per SMS, each calling the SDK's synchronous client."""
    with serve_in_process(Behaviour(latency_ms=latency_ms, jitter_ms=20)) as server:
        client = Client(ACCOUNT_SID, AUTH_TOKEN)
        client.api.base_url = server.base_url
        done = threading.Semaphore(0)

        def send(i: int) -> None:
            try:
                client.messages.create(to=f"+447700900{i % 1000:03d}", from_=FROM_NUMBER,
                                       body=f"Reminder {i}")  # fmt: skip
            finally:
                done.release()

        scheduler = BackgroundScheduler(timezone=UTC)
        scheduler.start(paused=True)
        now = datetime.now(UTC)
        for i in range(count):
            scheduler.add_job(send, "date", run_date=now, args=[i], misfire_grace_time=3600)
        started = time.perf_counter()
        scheduler.resume()
        for _ in range(count):
            done.acquire()
        elapsed = time.perf_counter() - started
        scheduler.shutdown(wait=False)
        accepted = server.stats()["accepted"]
    return {
        "sms": count,
        "accepted": accepted,
        "seconds": elapsed,
        "sms_per_second": count / elapsed,
    }


def run_failures(workdir: Path, count: int, latency_ms: int) -> dict[str, Any]:
    behaviour = Behaviour(latency_ms=latency_ms, jitter_ms=20, fail_500=0.2, throttle_429=0.1,
                          seed=3, reject={REJECTED: "21211"})  # fmt: skip
    with serve_in_process(behaviour) as server:
        service, clock = prepared_service(workdir, server.base_url, count, 1e9, 400)
        # A tenth of the messages must go before a deadline only minutes away: their retries
        # must stop there.
        deadline = clock() + timedelta(minutes=2)
        with service.engine.begin() as conn:
            conn.execute(
                update(reminders)
                .where(reminders.c.channel == "sms", reminders.c.appointment_id % 10 == 0)
                .values(not_after=deadline)
            )
        started = time.perf_counter()
        rounds = 0
        while True:
            rounds += 1
            service.dispatcher.dispatch_due()
            due = service.dispatcher.next_due()
            if due is None or rounds > 60:
                break
            # Jump past the next retry time, and the other retries jitter spread around it.
            clock.offset += max(due - clock(), timedelta(0)) + timedelta(minutes=2)
        elapsed = time.perf_counter() - started
        stats = server.stats()
        with service.engine.connect() as conn:
            statuses = dict(
                conn.execute(
                    select(reminders.c.status, func.count())
                    .where(reminders.c.channel == "sms")
                    .group_by(reminders.c.status)
                ).all()
            )
            late = conn.execute(
                select(func.count())
                .select_from(audit_log)
                .join(reminders, reminders.c.id == audit_log.c.reminder_id)
                .where(audit_log.c.event == "sent", reminders.c.not_after.is_not(None))
                .where(audit_log.c.at > reminders.c.not_after)
            ).scalar_one()
            rejected_tries = stats["status_codes"].get("400", 0)
        service.close()
    per_callback = stats["accepted_per_callback"]
    rejected = sum(1 for i in range(count) if i % 1000 == 666)
    return {
        "sms": count,
        "rounds": rounds,
        "seconds": elapsed,
        "requests": stats["requests"],
        "status_codes": stats["status_codes"],
        "accepted": stats["accepted"],
        "accepted_twice": sum(1 for n in per_callback.values() if n > 1),
        "statuses": statuses,
        "permanent_rejections": rejected,
        "requests_for_rejected_number": rejected_tries,
        "sent_after_deadline": late,
    }


def run_rate(workdir: Path, count: int, rate: float) -> dict[str, Any]:
    with serve_in_process(Behaviour(latency_ms=100, jitter_ms=20)) as server:
        service, _clock = prepared_service(workdir, server.base_url, count, rate, 200)
        service.dispatcher.dispatch_due()
        arrivals = server.stats()["arrivals"]
        service.close()
    span = arrivals[-1] - arrivals[0]
    measured = (len(arrivals) - 1) / span if span > 0 else float("inf")
    windows = [sum(1 for a in arrivals if t <= a < t + 1.0) for t in arrivals]
    return {
        "configured": rate,
        "sms": len(arrivals),
        "measured": measured,
        "error": measured / rate - 1,
        "busiest_second": max(windows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sms", type=int, default=10_000)
    parser.add_argument("--textbook-sample", type=int, default=1_000)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--rate-sms", type=int, default=2_000)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "out" / "sms_dispatch.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-sms-") as tmp:
        work = Path(tmp)
        for name in ("fast", "slow", "failures", "rate"):
            (work / name).mkdir()
        fast = run_ours(work / "fast", args.sms, 0)
        raw_fast = run_raw(args.sms, 0)
        slow = run_ours(work / "slow", args.sms, 100)
        raw_slow = run_raw(args.sms, 100)
        textbook = run_textbook(args.textbook_sample, 100)
        failures = run_failures(work / "failures", args.sms, 100)
        rate = run_rate(work / "rate", args.rate_sms, args.rate)

    ratio = slow["sms_per_second"] / textbook["sms_per_second"]
    report = {"cores": os.cpu_count(), "ours_0ms": fast, "raw_0ms": raw_fast, "ours_100ms": slow,
              "raw_100ms": raw_slow, "textbook_100ms": textbook, "speedup": ratio,
              "failures": failures, "rate_limit": rate}  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str))

    def verdict(ok: bool) -> str:
        return "met" if ok else "MISSED"

    print(f"SMS dispatch, {args.sms:,} SMS, {os.cpu_count()} cores, up to {CONCURRENCY} at once")
    for ours, raw, target in (
        (fast, raw_fast, TARGET_RATE_FAST),
        (slow, raw_slow, TARGET_RATE_SLOW),
    ):
        behind = raw["sms_per_second"] / ours["sms_per_second"]
        print(
            f"  {ours['latency_ms']:>3} ms: ours {ours['sms_per_second']:,.0f} SMS/s "
            f"({ours['cpu_ms_per_sms']:.2f} ms CPU/SMS, peak RSS {ours['max_rss_mib']:.0f} MiB); "
            f"raw HTTP {raw['sms_per_second']:,.0f}/s ({raw['cpu_ms_per_sms']:.2f} ms CPU/request)"
        )
        print(
            f"          target >= {target:,.0f} SMS/s: "
            f"{verdict(ours['sms_per_second'] >= target)}; "
            f"raw HTTP is {behind:.2f}x ours (target <= {TARGET_RAW_RATIO:.0f}x): "
            f"{verdict(behind <= TARGET_RAW_RATIO)}; CPU target <= {TARGET_CPU_MS} ms/SMS: "
            f"{verdict(ours['cpu_ms_per_sms'] <= TARGET_CPU_MS)}"
        )
    print(
        f"  textbook: {textbook['sms']:,} SMS in {textbook['seconds']:.2f} s: "
        f"{textbook['sms_per_second']:,.0f} SMS/s (APScheduler thread pool of 10, SDK per job, "
        f"100 ms); ours {ratio:.1f}x (target >= {TARGET_RATIO:.0f}x): "
        f"{verdict(ratio >= TARGET_RATIO)}"
    )
    f = failures
    ok = (
        f["accepted_twice"] == 0
        and f["accepted"] + f["statuses"].get("failed", 0) + f["statuses"].get("skipped", 0)
        == f["sms"]
        and f["requests_for_rejected_number"] == f["permanent_rejections"]
        and f["sent_after_deadline"] == 0
        and f["statuses"].get("pending", 0) == 0
    )
    print(
        f"  failures: 20% 500, 10% 429, one number 21211: {f['requests']:,} requests in "
        f"{f['rounds']} rounds ({f['seconds']:.1f} s, clock jumped to each retry time); "
        f"accepted {f['accepted']:,}, accepted twice {f['accepted_twice']}; final statuses "
        f"{f['statuses']}; 21211 tried {f['requests_for_rejected_number']} times for "
        f"{f['permanent_rejections']} messages; sent after deadline {f['sent_after_deadline']}: "
        f"{'correct' if ok else 'WRONG'}"
    )
    held = abs(rate["error"]) <= TARGET_LIMIT_ERROR
    print(
        f"  rate limit {rate['configured']:.0f}/s: measured {rate['measured']:.1f}/s over "
        f"{rate['sms']:,} SMS ({rate['error']:+.1%}), busiest second {rate['busiest_second']}: "
        f"{'held' if held else 'NOT HELD'} (target within 5%)"
    )


if __name__ == "__main__":
    main()
