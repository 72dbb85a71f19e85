"""How dispatchers scale on one PostgreSQL database: 1, 2 and 4 processes, the same due texts.

Target (issue 13): 4 dispatchers reach at least 3 times one dispatcher's throughput when the
machine has the cores; on 2 cores, the CPU per message stays flat as workers are added: "flat"
means the CPU per SMS at 4 workers is within 25% of 1 worker's.

Each group runs real dispatchers (`reminder-service run --no-http`, REMINDER_SMS_CHANNEL=twilio,
the default batch and concurrency, REMINDER_SMS_RATE_LIMIT so high it never holds a send back)
on a fresh PostgreSQL schema, against the local Twilio-API server in its own process
(tests/servers/twilio_api.py, ~100 ms answers), as bench/shared_rate_limit.py does. Process
start-up is left out of both figures:

- The dispatchers start on the empty schema and are left until their CPU stops moving (start-up,
  the first materialize and confirmations runs done). Only then are the N texts imported, in one
  transaction from this process, all due at once; the dispatchers' one-second watch finds them.
- Throughput: SMS accepted / (last arrival - first arrival), from the server's arrival times.
  "settled" is the time from the import's commit until the database shows no text pending or
  being sent (polled every 0.1 s), so it includes up to a second of the watch noticing the rows.
- CPU (user + sys) of the dispatcher processes, all their threads, from /proc/<pid>/stat: read
  once idle before the import and again when everything is settled, the difference divided by
  the texts sent. Their start-up and shut-down are not in it; the idle timer jobs of that window
  are, and the verdict is on this figure. Beside it: "less idle", less each dispatcher's idle
  CPU per second (measured over 3 s before the import) times the window, as the window is longer
  than it need be where other work holds the cores; and the total with start-up and shut-down
  (getrusage of the reaped processes).
- PostgreSQL's CPU for the same window: the server processes serving the dispatchers'
  connections (found by application_name in pg_stat_activity), not the WAL writer or
  checkpointer, which the machine shares with whatever else uses the server.
- Cores used in that window: by ours (the dispatchers, the Twilio server, those PostgreSQL
  processes) and by the whole machine (/proc/stat). Where the machine is busy with other work,
  the throughput is what the cores left over allow; the CPU per SMS depends on it far less.
- Exactly once: every text accepted once by the server (one message per status-callback URL,
  which names the reminder), none missing, all N recorded as sent, none tried twice.

    python bench/dispatch_workers.py [--postgres-url URL] [--sms 6000] [--latency-ms 100]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import secrets
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from bench.shared_rate_limit import (
    DEFAULT_URL,
    ROOT,
    all_day_config,
    environment,
    measure,
    prepare,
    scoped,
    shares,
    start_dispatchers,
    stop_dispatchers,
)
from reminder_service.store.engine import make_engine
from tests.servers.twilio_api import Behaviour, ServerProcess, serve_in_process

FLAT_WITHIN = 0.25  # CPU per SMS at 4 workers against 1 worker
TARGET_RATIO = 3.0  # throughput at 4 workers against 1, given the cores
NO_LIMIT = 1e6  # messages per second: the rate limit never holds a send back
TICK = os.sysconf("SC_CLK_TCK")
UNSETTLED = ("pending", "sending")
IDLE_SECONDS = 3.0
SKIPPED = "skipped: maximum number of running instances reached"


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process, all its threads (utime and stime of /proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as stat:
        # The command name (field 2) may hold spaces: count the fields after its ")".
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def machine_cpu() -> tuple[float, float]:
    """Busy and total CPU seconds of the whole machine so far, all cores (/proc/stat)."""
    with open("/proc/stat") as stat:
        ticks = [int(n) for n in stat.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle and iowait
    return (sum(ticks) - idle) / TICK, sum(ticks) / TICK


def total_cpu(pids: Iterable[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except (FileNotFoundError, ProcessLookupError):  # a backend that has gone
            continue
    return total


@dataclass
class Postgres:
    """The bench's own connection: the schema, polling it, and the backends' pids."""

    admin: Engine
    schema: str
    app_name: str

    def backends(self) -> dict[int, float]:
        """CPU seconds of each server process serving the dispatchers' connections."""
        with self.admin.connect() as conn:
            pids = conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE application_name = :name"),
                {"name": self.app_name},
            ).scalars()
            return {pid: total_cpu([pid]) for pid in pids}

    def statuses(self) -> dict[str, int]:
        with self.admin.connect() as conn:
            rows = conn.execute(
                text(f'SELECT status, count(*) FROM "{self.schema}".reminders GROUP BY status')
            )
            return {status: count for status, count in rows}

    def tried_again(self) -> int:
        with self.admin.connect() as conn:
            query = f'SELECT count(*) FROM "{self.schema}".reminders WHERE attempts > 1'
            return int(conn.execute(text(query)).scalar_one())


def wait_idle(pids: list[int], logs: list[Path], timeout: float = 60.0) -> float:
    """Wait until every dispatcher says it runs and their CPU stops moving (under 2% of a core
    over a second); returns their idle CPU per second, per process, over IDLE_SECONDS more (the
    CPU times count in ticks of 10 ms)."""
    deadline = time.monotonic() + timeout
    while not all("dispatcher running" in log.read_text() for log in logs):
        if time.monotonic() > deadline:
            raise RuntimeError("the dispatchers did not start; see their logs")
        time.sleep(0.2)
    while True:
        before = total_cpu(pids)
        time.sleep(1.0)
        if total_cpu(pids) - before <= 0.02 * len(pids) or time.monotonic() > deadline:
            break
    before = total_cpu(pids)
    time.sleep(IDLE_SECONDS)
    return (total_cpu(pids) - before) / IDLE_SECONDS / len(pids)


def run_group(
    processes: int,
    count: int,
    postgres: Postgres,
    envs: tuple[dict[str, str], dict[str, str]],
    server: ServerProcess,
    logs: Path,
) -> dict[str, Any]:
    """Start `processes` dispatchers idle, import `count` due texts, wait until all settle."""
    import_env, worker_env = envs
    prepare(import_env, 0)  # the schema, so the dispatchers start on an empty one
    server.reset()
    name = f"workers-{processes}"
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    workers = start_dispatchers(name, processes, worker_env, logs)
    pids = [process.pid for process, _ in workers]
    try:
        idle = wait_idle(pids, [logs / f"{name}-{i}.log" for i in range(processes)])
        cpu0, db0, server0 = total_cpu(pids), postgres.backends(), total_cpu([server.process.pid])
        machine0 = machine_cpu()
        prepare(import_env, count)
        committed = time.monotonic()
        deadline = committed + 120 + count / 50
        while True:
            statuses = postgres.statuses()
            if not any(statuses.get(s) for s in UNSETTLED) or time.monotonic() > deadline:
                break
            if any(process.poll() is not None for process, _ in workers):
                break
            time.sleep(0.1)
        settled = time.monotonic()
        cpu = total_cpu(pids) - cpu0
        db1, server1, machine1 = postgres.backends(), total_cpu([server.process.pid]), machine_cpu()
    finally:
        stop_dispatchers(workers)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    with_start = (after.ru_utime - children.ru_utime) + (after.ru_stime - children.ru_stime)
    stats = server.stats()
    callbacks: dict[str, int] = stats["accepted_per_callback"]
    arrivals: list[float] = stats["arrivals"]
    sent = statuses.get("sent", 0)
    return {
        "workers": processes,
        "cores": os.cpu_count() or 1,
        "sms": count,
        "sent": sent,
        "statuses": statuses,
        "accepted": stats["accepted"],
        "requests": stats["requests"],
        "distinct_accepted": len(callbacks),
        "accepted_twice": sum(1 for n in callbacks.values() if n > 1),
        "tried_again": postgres.tried_again(),
        "max_in_flight": stats["max_in_flight"],
        "settled_seconds": settled - committed,
        "start_to_first_arrival": arrivals[0] - committed if arrivals else None,
        "last_arrival_to_settled": settled - arrivals[-1] if arrivals else None,
        "cpu_seconds": cpu,
        "cpu_with_start_seconds": with_start,
        "idle_cpu_per_second": idle,
        "postgres_cpu_seconds": sum(t - db0.get(pid, 0.0) for pid, t in db1.items()),
        "server_cpu_seconds": server1 - server0,
        "machine_busy_seconds": machine1[0] - machine0[0],
        "machine_cpu_seconds": machine1[1] - machine0[1],
        "shares": shares(name, processes, logs),
        "warnings": warnings(name, processes, logs),
        "watch_skipped": skipped(name, processes, logs),
        **measure(arrivals),
    }


def warnings(name: str, processes: int, logs: Path) -> list[str]:
    """The dispatchers' warnings and errors (claims lost, leases run out, failed dispatches),
    but for APScheduler's skipped watch runs (see `skipped`)."""
    lines: list[str] = []
    for i in range(processes):
        for line in (logs / f"{name}-{i}.log").read_text().splitlines():
            if SKIPPED in line:
                continue
            if "WARNING" in line or "ERROR" in line or "Traceback" in line:
                lines.append(f"{i}: {line}")
    return lines


def skipped(name: str, processes: int, logs: Path) -> int:
    """Watch runs APScheduler skipped while a dispatch held the timer's one thread: expected
    (the dispatcher never overlaps itself), and what the watch would have done is moot then."""
    return sum((logs / f"{name}-{i}.log").read_text().count(SKIPPED) for i in range(processes))


def busy_per_sms(r: dict[str, Any]) -> float:
    """CPU seconds per SMS less what the dispatchers would have used idle in that window."""
    window: float = r["machine_cpu_seconds"] / r["cores"]
    idle: float = r["idle_cpu_per_second"] * r["workers"] * window
    cpu: float = r["cpu_seconds"]
    return (cpu - idle) / max(int(r["sent"]), 1)


def exactly_once(r: dict[str, Any]) -> bool:
    return bool(
        r["accepted"] == r["sms"] == r["sent"] == r["distinct_accepted"]
        and r["accepted_twice"] == 0
        and r["tried_again"] == 0
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_url = os.environ.get("REMINDER_TEST_POSTGRES_URL", DEFAULT_URL)
    parser.add_argument("--postgres-url", default=default_url)
    parser.add_argument("--sms", type=int, default=6000, help="due texts per group")
    parser.add_argument("--latency-ms", type=float, default=100.0, help="the server's answers")
    parser.add_argument("--groups", default="1,2,4", help="dispatcher processes per group")
    parser.add_argument(
        "--json", type=Path, default=ROOT / "bench" / "out" / "dispatch_workers.json"
    )
    args = parser.parse_args()

    admin = make_engine(args.postgres_url)
    try:
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except OperationalError:
        # Skipped, not failed: `make bench` runs the other benchmarks on a machine without it.
        print(f"Dispatchers on PostgreSQL: skipped, no PostgreSQL at "
              f"{make_url(args.postgres_url)!r} (give --postgres-url, or set "
              "REMINDER_TEST_POSTGRES_URL)")  # fmt: skip
        return
    results: list[dict[str, Any]] = []
    schemas: list[str] = []
    behaviour = Behaviour(latency_ms=args.latency_ms, jitter_ms=args.latency_ms / 5)
    with (
        tempfile.TemporaryDirectory(prefix="bench-dispatch-workers-") as tmp,
        serve_in_process(behaviour) as server,
    ):
        work = Path(tmp)
        config = all_day_config(work)
        try:
            for processes in (int(n) for n in args.groups.split(",")):
                schema = f"bench_workers_{os.getpid()}_{secrets.token_hex(3)}"
                with admin.begin() as conn:
                    conn.execute(text(f'CREATE SCHEMA "{schema}"'))
                schemas.append(schema)
                url = scoped(args.postgres_url, schema)
                worker_url = (
                    make_url(url)
                    .update_query_dict({"application_name": schema})
                    .render_as_string(hide_password=False)
                )
                envs = (
                    environment(url, config, work, server.base_url, NO_LIMIT),
                    environment(worker_url, config, work, server.base_url, NO_LIMIT),
                )
                postgres = Postgres(admin, schema, schema)
                results.append(run_group(processes, args.sms, postgres, envs, server, work))
        finally:
            with admin.begin() as conn:
                for schema in schemas:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            admin.dispose()

    report = {"cores": os.cpu_count(), "load_average": os.getloadavg(), "groups": results}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print_report(results, args.latency_ms)


def print_report(results: list[dict[str, Any]], latency_ms: float) -> None:
    cores = os.cpu_count() or 1
    base = next((r for r in results if r["workers"] == 1), results[0])
    base_cpu = base["cpu_seconds"] / max(base["sent"], 1)
    print(f"Dispatchers on one PostgreSQL: {base['sms']} due SMS per group, no rate limit, "
          f"server latency ~{latency_ms:g} ms, {cores} cores, load average "
          f"{os.getloadavg()[0]:.1f}")  # fmt: skip
    print("  workers   SMS/s  ratio  settled s  CPU ms/SMS  ratio  less idle  with start-up  "
          "PostgreSQL ms/SMS  cores used: ours/machine  shares")  # fmt: skip
    for r in results:
        sent = max(r["sent"], 1)
        per_sms = r["cpu_seconds"] / sent
        # Dispatchers, the Twilio server and the PostgreSQL backends, against all processes.
        ours = r["cpu_seconds"] + r["server_cpu_seconds"] + r["postgres_cpu_seconds"]
        window = r["machine_cpu_seconds"] / cores
        print(
            f"  {r['workers']:>7} {r['overall']:>7.0f} {r['overall'] / base['overall']:>6.2f} "
            f"{r['settled_seconds']:>10.1f} {1000 * per_sms:>11.3f} {per_sms / base_cpu:>6.2f} "
            f"{1000 * busy_per_sms(r):>10.3f} "
            f"{1000 * r['cpu_with_start_seconds'] / sent:>14.3f} "
            f"{1000 * r['postgres_cpu_seconds'] / sent:>18.3f} {ours / window:>16.2f}/"
            f"{r['machine_busy_seconds'] / window:<4.2f}  {r['shares']}"
        )
    for r in results:
        once = "every text accepted exactly once" if exactly_once(r) else (
            f"NOT EXACTLY ONCE: {r['accepted']} accepted ({r['distinct_accepted']} distinct, "
            f"{r['accepted_twice']} twice), {r['sent']} sent, {r['tried_again']} tried again, "
            f"statuses {r['statuses']}"
        )  # fmt: skip
        print(f"  {r['workers']} worker(s): {once}; first arrival "
              f"{r['start_to_first_arrival']:.2f} s after the import's commit, settled "
              f"{r['last_arrival_to_settled']:.2f} s after the last, {r['seconds']:.2f} s between; "
              f"at most {r['max_in_flight']} requests in flight; idle CPU "
              f"{1000 * r['idle_cpu_per_second']:.0f} ms/s per process; "
              f"{len(r['warnings'])} warnings in the logs (and {r['watch_skipped']} watch runs "
              "skipped while a dispatch ran)")  # fmt: skip
        for line in r["warnings"][:5]:
            print(f"      {line}")
    top = max(results, key=lambda r: r["workers"])
    if top is base:
        return
    n = top["workers"]
    cpu_ratio = top["cpu_seconds"] / max(top["sent"], 1) / base_cpu
    flat = abs(cpu_ratio - 1) <= FLAT_WITHIN
    print(f"  CPU per SMS at {n} workers: {cpu_ratio:.2f} x 1 worker's: "
          f"{'flat' if flat else 'NOT FLAT'} (target: within {FLAT_WITHIN:.0%})")  # fmt: skip
    ratio = top["overall"] / base["overall"]
    reached = "reached" if ratio >= TARGET_RATIO else "not reached"
    note = (
        f"; with {cores} cores it cannot reach {TARGET_RATIO:g}x (the dispatchers, the Twilio "
        "server and PostgreSQL share them)"
        if cores < n + 2
        else ""
    )
    print(f"  throughput at {n} workers: {ratio:.2f} x 1 worker's: {reached} (target "
          f"{TARGET_RATIO:g}x given the cores){note}")  # fmt: skip


if __name__ == "__main__":
    main()
