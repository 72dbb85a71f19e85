"""The SMS rate limit across dispatcher processes sharing one PostgreSQL database.

Twilio limits each sender, not each process. This runs real dispatchers (`reminder-service run
--no-http`, REMINDER_SMS_CHANNEL=twilio, REMINDER_SMS_RATE_LIMIT=20) against the local
Twilio-API server in its own process (tests/servers/twilio_api.py, ~100 ms answers), one, two and
four at a time, each group on a fresh PostgreSQL schema holding enough due texts for about 12 s of
sending at the limit. From the server's arrival times it prints, per group: the steady-state
rate (the first and last second left out: processes start and stop at different moments), the
busiest 1-second window, each process's share, against the target (together within 5% of the
limit), and the ratio to the single process measured in the same run. For contrast, two processes
on one SQLite file, where each keeps its own limiter (the shared bucket is PostgreSQL's): what
two dispatchers sent before the limit was shared.

    python bench/shared_rate_limit.py [--postgres-url URL] [--rate 20] [--seconds 12]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from bisect import bisect_left
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from sqlalchemy.exc import OperationalError  # noqa: E402

from bench.sms_dispatch import appointments  # noqa: E402
from reminder_service import bootstrap  # noqa: E402
from reminder_service.settings import Settings  # noqa: E402
from reminder_service.store.engine import make_engine  # noqa: E402
from tests.servers.twilio_api import (  # noqa: E402
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    Behaviour,
    ServerProcess,
    serve_in_process,
)

TARGET_ERROR = 0.05
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
PUBLIC_URL = "https://reminders.example.org"
DISPATCHED = re.compile(r"dispatched (\d+):")


def all_day_config(workdir: Path) -> Path:
    """The project's config with every clinic's send window open all day: what is measured is
    the rate, whatever the hour the bench runs at."""
    config = workdir / "config"
    shutil.copytree(ROOT / "config", config)
    clinics = config / "clinics.yaml"
    opened = re.sub(
        r"send_window: \{[^}]*\}",
        'send_window: {opens: "00:00", closes: "23:59"}',
        clinics.read_text(),
    )
    clinics.write_text(opened)
    return config


def environment(database_url: str, config: Path, workdir: Path, base_url: str, rate: float):  # type: ignore[no-untyped-def]
    env = dict(os.environ)
    env.update(
        REMINDER_DATABASE_URL=database_url,
        REMINDER_CONFIG_DIR=str(config),
        REMINDER_TEMPLATES_DIR=str(ROOT / "templates"),
        REMINDER_OUTBOX_DIR=str(workdir / "outbox"),
        REMINDER_LOG_LEVEL="INFO",
        REMINDER_SMS_CHANNEL="twilio",
        REMINDER_SMS_RATE_LIMIT=str(rate),
        REMINDER_PUBLIC_URL=PUBLIC_URL,
        TWILIO_ACCOUNT_SID=ACCOUNT_SID,
        TWILIO_AUTH_TOKEN=AUTH_TOKEN,
        TWILIO_FROM_NUMBER=FROM_NUMBER,
        TWILIO_API_BASE_URL=base_url,
    )
    return env


def prepare(env: dict[str, str], count: int) -> None:
    """Import `count` SMS-only appointments: one booking text each, due now."""
    settings = Settings.from_env(env)
    settings = replace(settings, log_level="WARNING")
    service = bootstrap.build(settings)
    service.importer.apply(
        appointments(count, datetime.now(UTC)), source="bench", label="shared rate limit"
    )
    service.close()


Dispatchers = list[tuple[subprocess.Popen[bytes], IO[str]]]


def start_dispatchers(name: str, processes: int, env: dict[str, str], logs: Path) -> Dispatchers:
    """`processes` dispatchers (`reminder-service run --no-http`), each logging to
    logs/{name}-{i}.log."""
    command = [sys.executable, "-m", "reminder_service", "run", "--no-http"]
    workers: Dispatchers = []
    for i in range(processes):
        log = (logs / f"{name}-{i}.log").open("w")
        workers.append((subprocess.Popen(command, cwd=ROOT, env=env, stderr=log, stdout=log), log))
    return workers


def stop_dispatchers(workers: Dispatchers) -> None:
    """SIGTERM to each (in-flight sends finish first), then wait; kill what does not stop."""
    for process, _ in workers:
        process.send_signal(signal.SIGTERM)
    for process, log in workers:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def shares(name: str, processes: int, logs: Path) -> list[int]:
    """How many reminders each dispatcher of a group claimed, from its "dispatched N" lines."""
    return [
        sum(int(m) for m in DISPATCHED.findall((logs / f"{name}-{i}.log").read_text()))
        for i in range(processes)
    ]


def run_group(
    name: str, processes: int, env: dict[str, str], count: int, server: ServerProcess, logs: Path
) -> dict[str, Any]:
    prepare(env, count)
    server.reset()
    workers = start_dispatchers(name, processes, env, logs)
    deadline = time.monotonic() + 60 + 3 * count / float(env["REMINDER_SMS_RATE_LIMIT"])
    try:
        while server.stats()["accepted"] < count and time.monotonic() < deadline:
            if any(p.poll() is not None for p, _ in workers):
                break
            time.sleep(0.5)
    finally:
        stop_dispatchers(workers)
    stats = server.stats()
    return {"name": name, "processes": processes, "sms": count, "accepted": stats["accepted"],
            "requests": stats["requests"], "accepted_twice": stats["duplicate_callbacks"],
            "shares": shares(name, processes, logs), **measure(stats["arrivals"])}  # fmt: skip


def measure(arrivals: list[float]) -> dict[str, Any]:
    """Rates from the server's arrival times (time.monotonic of the server process)."""
    if len(arrivals) < 2:
        return {"overall": 0.0, "steady": 0.0, "busiest_second": len(arrivals), "seconds": 0.0}
    span = arrivals[-1] - arrivals[0]
    steady = [a for a in arrivals if arrivals[0] + 1.0 <= a <= arrivals[-1] - 1.0]
    steady_rate = (len(steady) - 1) / (steady[-1] - steady[0]) if len(steady) > 1 else 0.0
    busiest = max(bisect_left(arrivals, t + 1.0) - i for i, t in enumerate(arrivals))
    return {"overall": (len(arrivals) - 1) / span, "steady": steady_rate,
            "busiest_second": busiest, "seconds": span}  # fmt: skip


def scoped(url: str, schema: str) -> str:
    return (
        make_url(url)
        .update_query_dict({"options": f"-csearch_path={schema}"})
        .render_as_string(hide_password=False)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_url = os.environ.get("REMINDER_TEST_POSTGRES_URL", DEFAULT_URL)
    parser.add_argument("--postgres-url", default=default_url)
    parser.add_argument("--rate", type=float, default=20.0)
    parser.add_argument("--seconds", type=float, default=12.0, help="of sending, per group")
    parser.add_argument("--groups", default="1,2,4", help="dispatcher processes per group")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "bench" / "out" / "shared_rate_limit.json"
    )
    args = parser.parse_args()
    count = int(args.rate * args.seconds)

    admin = make_engine(args.postgres_url)
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError:
        # Skipped, not failed: `make bench` runs the other benchmarks on a machine without it.
        print(f"Shared SMS rate limit: skipped, no PostgreSQL at {make_url(args.postgres_url)!r} "
              "(give --postgres-url, or set REMINDER_TEST_POSTGRES_URL)")  # fmt: skip
        return
    schemas: list[str] = []
    results: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="bench-shared-rate-") as tmp,
        serve_in_process(Behaviour(latency_ms=100, jitter_ms=20)) as server,
    ):
        work = Path(tmp)
        config = all_day_config(work)
        try:
            for processes in (int(n) for n in args.groups.split(",")):
                schema = f"bench_rate_{os.getpid()}_{secrets.token_hex(3)}"
                with admin.begin() as conn:
                    conn.execute(text(f'CREATE SCHEMA "{schema}"'))
                schemas.append(schema)
                url = scoped(args.postgres_url, schema)
                env = environment(url, config, work, server.base_url, args.rate)
                name = f"postgres-{processes}"
                results.append(run_group(name, processes, env, count, server, work))
            sqlite_url = f"sqlite:///{work / 'contrast.db'}"
            env = environment(sqlite_url, config, work, server.base_url, args.rate)
            # Claims of 2 s of the rate per process, as with the shared limit; the default
            # lease lets the first process claim every text before the second starts.
            env["REMINDER_LEASE_SECONDS"] = "6"
            contrast = run_group("sqlite-2", 2, env, count, server, work)
        finally:
            with admin.begin() as conn:
                for schema in schemas:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()

    report = {"cores": os.cpu_count(), "rate_limit": args.rate, "groups": results,
              "contrast_sqlite": contrast}  # fmt: skip
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))

    rate = args.rate
    baseline = next((r for r in results if r["processes"] == 1), results[0])
    print(f"Shared SMS rate limit: REMINDER_SMS_RATE_LIMIT={rate:g}, one sender, dispatchers on "
          f"one PostgreSQL, server latency ~100 ms, {os.cpu_count()} cores")  # fmt: skip
    for r in results:
        error = r["steady"] / rate - 1
        held = abs(error) <= TARGET_ERROR and r["busiest_second"] <= rate * (1 + TARGET_ERROR)
        complete = r["accepted"] == r["sms"] and r["accepted_twice"] == 0
        print(
            f"  {r['processes']} process{'es' if r['processes'] > 1 else '  '}: "
            f"{r['accepted']}/{r['sms']} SMS in {r['seconds']:.1f} s, steady "
            f"{r['steady']:.2f}/s ({error:+.1%}), busiest second {r['busiest_second']}, "
            f"ratio to 1 process {r['steady'] / baseline['steady']:.2f}, shares {r['shares']}: "
            f"{'held' if held else 'NOT HELD'} (target within 5% of {rate:g}/s)"
            f"{'' if complete else ', INCOMPLETE or DUPLICATED'}"
        )
    c = contrast
    print(f"  for contrast, 2 processes on SQLite, each with its own limiter: steady "
          f"{c['steady']:.2f}/s ({c['steady'] / rate - 1:+.1%}), busiest second "
          f"{c['busiest_second']}, shares {c['shares']}")  # fmt: skip


if __name__ == "__main__":
    main()
