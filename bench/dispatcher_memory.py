"""The dispatcher's memory with a million pending reminders, while it sends all the time.

A fresh SQLite database gets the service's own schema (`reminder-service migrate`), then a
million pending reminders written straight into it (synthetic patients, numbers from Ofcom's
drama range +447700900xxx): `--per-second` of them become due each second of the run, the rest
over the coming weeks; each appointment starts on a quarter-hour slot, as clinics book them, a
day after its reminders. The real `reminder-service run` process (with its HTTP endpoints
unless --no-http; the file outbox, or --twilio for the Twilio channel against the local test
server in a process of its own) runs for `--minutes`, and its VmRSS (/proc/<pid>/status) is
read every second. Then it is stopped with SIGTERM and must exit cleanly (status 0).

Prints RSS at 10 s, at 1 minute and at the end, the peak, the slope of a least-squares line
over the second half of the run, and how many reminders were sent. Targets: at most 120 MiB RSS
throughout (the peak), and flat: a slope over the second half below 1 MiB/min.

    .venv/bin/python bench/dispatcher_memory.py [--minutes 10] [--reminders 1000000]
        [--per-second 20] [--twilio] [--no-http] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reminder_service.configuration.clinics import load_clinics  # noqa: E402
from reminder_service.entrypoints.sample_data import daytime_zone  # noqa: E402
from reminder_service.store.types import encode_utc  # noqa: E402
from tests.servers.twilio_api import (  # noqa: E402
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    Behaviour,
    serve_in_process,
)

TARGET_MIB = 120.0
TARGET_SLOPE = 1.0  # MiB per minute over the second half: "flat"
CONFIG_DIR = ROOT / "config"
TEMPLATES_DIR = ROOT / "templates"
SECOND = 1_000_000  # the stored times are microseconds
DAY = 86_400 * SECOND
SPREAD = 21 * DAY  # the reminders not due in the run come due over three weeks after it
CHUNK = 200_000  # rows per insert statement (each in its own transaction)
# Each appointment has two pending reminders, its day-before SMS and email, due together.
PER_APPOINTMENT = 2
# Appointments start on quarter-hour slots, as clinics book them, a day after their reminders.
SLOT = 15 * 60 * SECOND


def service_env(workdir: Path, http_port: int, twilio_url: str | None) -> dict[str, str]:
    env = {
        **os.environ,
        "REMINDER_DATABASE_URL": f"sqlite:///{workdir / 'reminders.db'}",
        "REMINDER_OUTBOX_DIR": str(workdir / "outbox"),
        "REMINDER_CONFIG_DIR": str(CONFIG_DIR),
        "REMINDER_TEMPLATES_DIR": str(TEMPLATES_DIR),
        "REMINDER_HTTP_PORT": str(http_port),
    }
    if twilio_url is not None:
        env |= {
            "REMINDER_SMS_CHANNEL": "twilio",
            "REMINDER_SMS_RATE_LIMIT": "1000",
            "REMINDER_PUBLIC_URL": "https://reminders.example.org",
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
            "TWILIO_FROM_NUMBER": FROM_NUMBER,
            "TWILIO_API_BASE_URL": twilio_url,
        }
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def seed(db: Path, reminders: int, trickle: int, after: int, zone_name: str) -> None:
    """`reminders` pending rows, two per appointment and one appointment per patient. The first
    `trickle` appointments are placed at time 0 on (shift_trickle moves them to the run); the
    others come due from `after` over SPREAD. Each appointment starts on the quarter-hour slot
    a day after its reminders are due."""
    appointments = reminders // PER_APPOINTMENT
    later = max(1, appointments - trickle)
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA synchronous=OFF")
    # due(i): appointment i's reminders' due time; its start is a day later.
    due = (
        f"(CASE WHEN i < {trickle} THEN 0 ELSE {after} + (i - {trickle}) * {SPREAD} / {later} END)"
    )
    numbers = "'+447700900' || printf('%03d', i % 1000)"
    statements = {
        "patients": f"""INSERT INTO patients (id, external_id, first_name, last_name, mobile,
            email, language, timezone, updated_at)
            SELECT i + 1, 'P' || i, 'Test', 'Patient' || i, {numbers},
                'patient' || i || '@example.org', 'en-GB', '{zone_name}', {after}
            FROM n""",
        "appointments": f"""INSERT INTO appointments (id, external_id, clinic_id, patient_id,
            protocol_id, procedure, start_at, duration_minutes, location, status, sedation,
            anticoagulant, on_chemotherapy, diabetes_on_medication, fingerprint, version,
            booked_at, scheduled_at, updated_at)
            SELECT i + 1, 'A' || i, 'riverside', i + 1, 'bone_marrow_biopsy', 'BMBX',
                ({due} + {DAY}) / {SLOT} * {SLOT}, 60, 'Day Unit', 'booked', 'no', 'no',
                'unknown', 'unknown',
                printf('%032x', i), 1, {after}, {after}, {after}
            FROM n""",
    }
    reminder_rows = f"""INSERT INTO reminders (appointment_id, appointment_version, step_id,
        channel, template, nominal_at, due_at, not_after, status, reason, attempts, created_at,
        updated_at, recipient)
        SELECT i + 1, 1, 'day_before', :channel, 'day_before', {due}, {due},
            ({due} + {DAY}) / {SLOT} * {SLOT},
            'pending', 'planned: 1 day before start at 18:00', 0, {after}, {after}, 'patient'
        FROM n"""
    for first in range(0, appointments, CHUNK):
        last = min(first + CHUNK, appointments) - 1
        numbers_cte = (
            f"WITH RECURSIVE n(i) AS (SELECT {first} UNION ALL SELECT i + 1 FROM n "
            f"WHERE i < {last}) "
        )
        conn.execute("BEGIN")
        for statement in statements.values():
            conn.execute(numbers_cte + statement)
        for channel in ("sms", "email"):
            conn.execute(numbers_cte + reminder_rows, {"channel": channel})
        conn.execute("COMMIT")
    conn.close()


def shift_trickle(db: Path, trickle: int, start: int, per_second: float) -> None:
    """Make the first `trickle` appointments come due from `start`, `per_second` reminders a
    second (both of an appointment's at once)."""
    step = PER_APPOINTMENT * SECOND / per_second
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "UPDATE reminders SET due_at = :start + CAST((appointment_id - 1) * :step AS INTEGER),"
        " nominal_at = :start + CAST((appointment_id - 1) * :step AS INTEGER),"
        " not_after = (:start + CAST((appointment_id - 1) * :step AS INTEGER) + :day)"
        " / :slot * :slot WHERE appointment_id <= :trickle",
        {"start": start, "step": step, "day": DAY, "trickle": trickle, "slot": SLOT},
    )
    conn.execute(
        "UPDATE appointments"
        " SET start_at = (:start + CAST((id - 1) * :step AS INTEGER) + :day) / :slot * :slot"
        " WHERE id <= :trickle",
        {"start": start, "step": step, "day": DAY, "trickle": trickle, "slot": SLOT},
    )
    conn.execute("COMMIT")
    conn.close()


def statuses(db: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return dict(conn.execute("SELECT status, count(*) FROM reminders GROUP BY status"))


def rss_mib(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return None


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB), in MiB per minute."""
    if len(points) < 2:
        return math.nan
    n = len(points)
    mean_t = sum(t for t, _ in points) / n
    mean_m = sum(m for _, m in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    cov = sum((t - mean_t) * (m - mean_m) for t, m in points)
    return cov / var * 60 if var else math.nan


def at(samples: list[tuple[float, float]], seconds: float) -> float:
    """The first sample at or after `seconds` (the last one if the run was shorter)."""
    return next((m for t, m in samples if t >= seconds), samples[-1][1])


@contextmanager
def twilio_server(enabled: bool) -> Iterator[str | None]:
    if not enabled:
        yield None
        return
    with serve_in_process(Behaviour(latency_ms=50, jitter_ms=20)) as server:
        yield server.base_url


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    db = workdir / "reminders.db"
    seconds = args.minutes * 60
    # Enough appointments due in the run (and a minute beyond) that it never runs dry.
    trickle = math.ceil(args.per_second * (seconds + 60) / PER_APPOINTMENT)
    clinic = load_clinics(CONFIG_DIR / "clinics.yaml").default
    now = datetime.now(UTC)
    zone_name = daytime_zone(clinic, now + timedelta(seconds=seconds))
    with twilio_server(args.twilio) as twilio_url:
        env = service_env(workdir, free_port(), twilio_url)
        migrate = subprocess.run(
            [sys.executable, "-m", "reminder_service", "migrate"],
            env=env, cwd=ROOT, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if migrate.returncode != 0:
            raise RuntimeError(f"migrate failed: {migrate.stderr}")
        began = time.monotonic()
        after = encode_utc(now + timedelta(seconds=seconds + 120))
        seed(db, args.reminders, trickle, after, zone_name)
        seeded = time.monotonic() - began
        shift_trickle(db, trickle, encode_utc(datetime.now(UTC)), args.per_second)
        before = statuses(db)
        command = [sys.executable, "-m", "reminder_service", "run"]
        if not args.http:
            command.append("--no-http")
        log = workdir / "run.log"
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr
            )
        samples: list[tuple[float, float]] = []
        started = time.monotonic()
        try:
            while (elapsed := time.monotonic() - started) < seconds:
                if process.poll() is not None:
                    raise RuntimeError(f"run exited early ({process.returncode}): "
                                       f"{log.read_text()[-2000:]}")  # fmt: skip
                mib = rss_mib(process.pid)
                if mib is not None:
                    samples.append((elapsed, mib))
                time.sleep(max(0.0, len(samples) + 1 - (time.monotonic() - started)))
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                code: int | None = process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                code = None
    after_run = statuses(db)
    second_half = [(t, m) for t, m in samples if t >= seconds / 2]
    return {
        "minutes": args.minutes,
        "reminders": args.reminders,
        "per_second": args.per_second,
        "channel": "twilio" if args.twilio else "outbox",
        "http": args.http,
        "seed_seconds": seeded,
        "pending_at_start": before.get("pending", 0),
        "sent": after_run.get("sent", 0) - before.get("sent", 0),
        "statuses_at_end": after_run,
        "rss_10s_mib": at(samples, 10),
        "rss_1min_mib": at(samples, 60),
        "rss_end_mib": samples[-1][1],
        "rss_peak_mib": max(m for _, m in samples),
        "slope_second_half_mib_per_min": slope(second_half),
        "exit_code": code,
        "log_tail": log.read_text(errors="replace")[-1500:] if code != 0 else "",
        "samples": samples,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--reminders", type=int, default=1_000_000, help="pending at the start")
    parser.add_argument("--per-second", type=float, default=20.0, help="come due each second")
    parser.add_argument("--twilio", action="store_true", help="SMS through the Twilio channel")
    parser.add_argument("--http", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--keep", type=Path, default=None, help="work in this directory")
    args = parser.parse_args()

    workdir_context: Any = (
        nullcontext(str(args.keep)) if args.keep
        else tempfile.TemporaryDirectory(prefix="bench-memory-")
    )  # fmt: skip
    with workdir_context as tmp:
        Path(tmp).mkdir(parents=True, exist_ok=True)
        report = run(args, Path(tmp))
    report["cores"] = os.cpu_count()
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2, default=str))

    r = report
    print(
        f"dispatcher memory: `run`{'' if r['http'] else ' --no-http'} ({r['channel']} channel), "
        f"{r['pending_at_start']:,} pending reminders (seeded in {r['seed_seconds']:.0f} s), "
        f"{r['per_second']:g} due a second, {r['minutes']:g} min, {r['cores']} cores"
    )
    print(f"  sent in the run: {r['sent']:,}; statuses at the end {r['statuses_at_end']}")
    print(
        f"  RSS: 10 s {r['rss_10s_mib']:.1f} MiB, 1 min {r['rss_1min_mib']:.1f} MiB, "
        f"end {r['rss_end_mib']:.1f} MiB, peak {r['rss_peak_mib']:.1f} MiB"
    )
    peak_ok = r["rss_peak_mib"] <= TARGET_MIB
    flat = r["slope_second_half_mib_per_min"] < TARGET_SLOPE
    print(f"  peak <= {TARGET_MIB:.0f} MiB: {'met' if peak_ok else 'MISSED'}")
    print(
        f"  slope over the second half {r['slope_second_half_mib_per_min']:+.2f} MiB/min "
        f"(flat: < {TARGET_SLOPE:g}): {'met' if flat else 'MISSED'}"
    )
    clean = r["exit_code"] == 0
    print(f"  SIGTERM: exit status {r['exit_code']}: {'clean' if clean else 'NOT CLEAN'}")
    if not clean:
        print(r["log_tail"])
    sys.exit(0 if peak_ok and flat and clean else 1)


if __name__ == "__main__":
    main()
