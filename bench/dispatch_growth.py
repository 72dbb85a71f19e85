"""Dispatch cost as the reminders table grows: the same due texts with 10k, 100k and 1M rows stored.

Each size in a process of its own (so its peak RSS is its own): `--sms` patients' booking texts
due now (bench/sms_dispatch.py's patients, imported by the service), and beside them `size` rows a
long-running clinic's table holds: other patients' reminders sent or skipped weeks ago (their
history) and pending ones weeks ahead, written straight into the table. The dispatcher sends the
due texts through the Twilio channel to the local Twilio API server (its own process, answering
at once). Printed per size: CPU per SMS from the first claim to the last outcome written, SMS/s,
and the process's peak RSS; and the ratio of the largest size to the smallest.

Target (issue 13): the cost does not grow with the table (here: CPU per SMS at 1M within 25% of
10k's, peak RSS within 25%). With `--tree DIR`, the same is run on another checkout's code (an
earlier commit, say) for comparison, in the same run.

    .venv/bin/python bench/dispatch_growth.py [--sizes 10000,100000,1000000] [--sms 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
TARGET_GROWTH = 1.25


def child(size: int, sms: int, tree: Path) -> dict[str, Any]:
    """Runs in the measured process: seed, dispatch, measure."""
    sys.path.insert(0, str(tree))
    # Imported here, from the checkout being measured.
    from bench.sms_dispatch import prepared_service  # noqa: PLC0415
    from reminder_service.services import gc_pause  # noqa: PLC0415
    from reminder_service.store.types import encode_utc  # noqa: PLC0415
    from tests.servers.twilio_api import Behaviour, serve_in_process  # noqa: PLC0415

    with (
        tempfile.TemporaryDirectory(prefix="bench-growth-") as tmp,
        serve_in_process(Behaviour(latency_ms=0, jitter_ms=0)) as server,
    ):
        service, clock = prepared_service(Path(tmp), server.base_url, sms, 1e9, 200)
        _store_other_rows(Path(tmp) / "reminders.db", size, encode_utc, clock())
        tune = getattr(gc_pause, "tune_for_long_run", None)  # as `run` does (not in older trees)
        if tune is not None:
            tune()
        cpu0, started = time.process_time(), time.perf_counter()
        report = service.dispatcher.dispatch_due()
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
        service.close()
    sent = report.by_status.get("sent", 0)
    return {
        "size": size,
        "sent": sent,
        "cpu_ms_per_sms": 1000 * cpu / max(sent, 1),
        "sms_per_second": sent / elapsed,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def _store_other_rows(db: Path, size: int, encode_utc: Any, now: Any) -> None:
    """`size` reminders of 1,000 other patients: half history (sent or skipped 3 to 8 weeks
    ago), half pending 3 to 8 weeks ahead. Straight SQL: the service's import would take
    longer than the measurement."""
    past, ahead = encode_utc(now - timedelta(weeks=8)), encode_utc(now + timedelta(weeks=3))
    span = encode_utc(now) - encode_utc(now - timedelta(weeks=5))
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    patients = [r[1] for r in conn.execute("PRAGMA table_info(patients)")]
    appointments = [r[1] for r in conn.execute("PRAGMA table_info(appointments)")]
    first_patient = conn.execute("SELECT max(id) FROM patients").fetchone()[0] + 1
    first_appointment = conn.execute("SELECT max(id) FROM appointments").fetchone()[0] + 1
    for k in range(1000):
        pick = {"id": str(first_patient + k), "external_id": f"'OTHER-P{k}'",
                "mobile": f"'+447700901{k % 1000:03d}'"}  # fmt: skip
        conn.execute(
            f"INSERT INTO patients ({', '.join(patients)}) "
            f"SELECT {', '.join(pick.get(c, c) for c in patients)} FROM patients WHERE id = 1"
        )
        pick = {"id": str(first_appointment + k), "external_id": f"'OTHER-A{k}'",
                "patient_id": str(first_patient + k)}  # fmt: skip
        conn.execute(
            f"INSERT INTO appointments ({', '.join(appointments)}) "
            f"SELECT {', '.join(pick.get(c, c) for c in appointments)} FROM appointments "
            "WHERE id = 1"
        )
    conn.execute(
        f"""INSERT INTO reminders (appointment_id, appointment_version, step_id, channel,
            template, nominal_at, due_at, status, reason, attempts, created_at, updated_at,
            recipient, sent_at)
        WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i < {size - 1})
        SELECT {first_appointment} + i % 1000, 1, 'step' || i, 'sms', 'booked',
            CASE WHEN i % 2 = 0 THEN {past} ELSE {ahead} END + i % {span},
            CASE WHEN i % 2 = 0 THEN {past} ELSE {ahead} END + i % {span},
            CASE WHEN i % 2 = 1 THEN 'pending' WHEN i % 4 = 0 THEN 'sent' ELSE 'skipped' END,
            'bench', i % 2, {past}, {past}, 'patient',
            CASE WHEN i % 4 = 0 THEN {past} + i % {span} END
        FROM n"""
    )
    conn.execute("COMMIT")
    conn.close()


def measure(size: int, sms: int, tree: Path) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(size), "--sms", str(sms), "--tree", str(tree)],
        capture_output=True, text=True, env=env, cwd=tree, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"size {size} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--sms", type=int, default=3000, help="due texts sent at each size")
    parser.add_argument("--tree", type=Path, default=ROOT, help="the checkout whose code runs")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument(
        "--json", type=Path, default=ROOT / "bench" / "out" / "dispatch_growth.json"
    )
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.sms, args.tree)))
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    rows = [measure(size, args.sms, args.tree.resolve()) for size in sizes]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"tree": str(args.tree), "rows": rows}, indent=2))
    print(f"Dispatch as the table grows: {args.sms:,} due SMS, 0 ms server, {os.cpu_count()} cores")
    print("  rows stored   CPU ms/SMS   SMS/s   peak RSS MiB")
    for r in rows:
        print(
            f"  {r['size']:>11,}   {r['cpu_ms_per_sms']:>10.3f}   {r['sms_per_second']:>5,.0f}   "
            f"{r['peak_rss_mib']:>12.0f}"
        )
    cpu = rows[-1]["cpu_ms_per_sms"] / rows[0]["cpu_ms_per_sms"]
    rss = rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]
    flat = cpu <= TARGET_GROWTH and rss <= TARGET_GROWTH
    print(
        f"  {sizes[-1]:,} against {sizes[0]:,}: CPU per SMS {cpu:.2f}x, peak RSS {rss:.2f}x "
        f"(flat: both within {TARGET_GROWTH:.2f}x): {'met' if flat else 'MISSED'}"
    )


if __name__ == "__main__":
    main()
