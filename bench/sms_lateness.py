"""Lateness: how long after their due time a burst of texts all due at once has gone out.

The running service's own timer (APScheduler waking the dispatcher) against the local Twilio API
server, which runs in its own process and answers each request after `--latency-ms`:

The dispatcher runs on the service's default settings (batch, texts in flight, concurrency), as a
clinic runs it.

1. No rate limit: `--sms` texts (default 20,000) all due at the same moment, a few seconds
   ahead. Lateness is each text's recorded send time minus its due time, both on the service's
   clock. Target (issue 13): every one sent within 15 s of its due time, at 100 ms latency.
2. A rate limit of `--rate` messages a second: `--rate-sms` texts due at once drain in the time
   the limit allows (count / rate), within 5%.

Run: .venv/bin/python bench/sms_lateness.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import func, select, update  # noqa: E402

from bench.sms_dispatch import as_run_tunes_it, prepared_service  # noqa: E402
from reminder_service.store.tables import reminders  # noqa: E402
from tests.servers.twilio_api import Behaviour, serve_in_process  # noqa: E402

TARGET_LATE_SECONDS = 15.0
TARGET_DRAIN_ERROR = 0.05
LEAD = timedelta(seconds=5)  # the burst is due this long after the timer starts


def run_burst(workdir: Path, count: int, latency_ms: int, rate: float) -> dict[str, Any]:
    """`count` SMS due at one moment; the service's timer sends them; their lateness."""
    with serve_in_process(Behaviour(latency_ms=latency_ms, jitter_ms=20)) as server:
        service, clock = prepared_service(workdir, server.base_url, count, rate, 0, defaults=True)
        # Each patient's booking text is due now (their later steps are days away): all of
        # them are made due at one moment.
        due = clock() + LEAD
        with service.engine.begin() as conn:
            conn.execute(
                update(reminders)
                .where(reminders.c.status == "pending", reminders.c.due_at <= clock())
                .values(due_at=due)
            )
        timer = service.dispatch_timer()
        runner = threading.Thread(target=timer.run_until_stopped, name="bench-timer")
        with as_run_tunes_it():
            cpu0 = time.process_time()
            runner.start()
            while _open(service.engine, due) > 0:
                time.sleep(0.5)
            cpu = time.process_time() - cpu0
            timer.stop()
            runner.join()
        with service.engine.connect() as conn:
            rows = conn.execute(
                select(reminders.c.sent_at, reminders.c.due_at).where(
                    reminders.c.status == "sent", reminders.c.channel == "sms"
                )
            ).all()
        service.close()
    late = sorted((sent - due).total_seconds() for sent, _ in rows)
    return {
        "sms": count,
        "sent": len(late),
        "latency_ms": latency_ms,
        "rate": rate,
        "p50_late": statistics.median(late),
        "p99_late": late[int(0.99 * (len(late) - 1))],
        "max_late": late[-1],
        "first_late": late[0],
        "cpu_seconds": cpu,
    }


def _open(engine: Any, due: datetime) -> int:
    """The burst's texts not settled yet."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(
                    reminders.c.status.in_(["pending", "sending"]), reminders.c.due_at <= due
                )
            ).scalar_one()
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sms", type=int, default=20_000)
    parser.add_argument("--latency-ms", type=int, default=100)
    parser.add_argument("--rate", type=float, default=500.0)
    parser.add_argument("--rate-sms", type=int, default=5_000)
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "out" / "sms_lateness.json")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-late-") as tmp:
        work = Path(tmp)
        (work / "free").mkdir()
        (work / "limited").mkdir()
        free = run_burst(work / "free", args.sms, args.latency_ms, 1e9)
        limited = run_burst(work / "limited", args.rate_sms, args.latency_ms, args.rate)

    expected = args.rate_sms / args.rate
    # The last text goes `max_late` after the burst was due: that is the drain time.
    drain_error = limited["max_late"] / expected - 1
    report = {"cores": os.cpu_count(), "no_limit": free, "limited": limited,
              "expected_drain_seconds": expected, "drain_error": drain_error}  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))

    f = free
    print(f"Lateness, {os.cpu_count()} cores, server latency ~{args.latency_ms} ms")
    verdict = "met" if f["sent"] == f["sms"] and f["max_late"] <= TARGET_LATE_SECONDS else "MISSED"
    print(
        f"  no limit: {f['sent']:,} of {f['sms']:,} SMS due at once: late "
        f"p50 {f['p50_late']:.1f} s, p99 {f['p99_late']:.1f} s, max {f['max_late']:.1f} s "
        f"(first {f['first_late']:.2f} s); "
        f"{f['sent'] / f['max_late']:,.0f} SMS/s, CPU {1000 * f['cpu_seconds'] / f['sent']:.2f} "
        f"ms/SMS; target all within {TARGET_LATE_SECONDS:.0f} s: {verdict}"
    )
    held = abs(drain_error) <= TARGET_DRAIN_ERROR
    print(
        f"  limit {args.rate:.0f}/s: {limited['sent']:,} SMS drained in "
        f"{limited['max_late']:.2f} s, the limit allows {expected:.2f} s ({drain_error:+.1%}): "
        f"{'held' if held else 'NOT HELD'} (target within 5%)"
    )


if __name__ == "__main__":
    main()
