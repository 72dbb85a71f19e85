"""The cost curve of `reminder-service import FILE.csv`: CPU per appointment and peak memory at
10,000, 100,000 and 1,000,000 appointments, against the targets.

Each import runs the command line in a process of its own (`--child`), progress bar and all, on a
fresh database. That process reports its own CPU and peak RSS (getrusage); the bench watches its
descendants (the validation workers) in /proc meanwhile, for their CPU and peak RSS. CPU is that
of every process of ours, not the database server's; the first figure per size includes starting
the command (settings, configuration, the database engine), not Python's start-up.

With `--database-url postgresql://...` the 100,000 import also runs on PostgreSQL, in a database
made for the run (`bench_import_<pid>`, dropped after), and its CPU is compared with SQLite's.

    python bench/import_scaling.py [--sizes 10000,100000,1000000] [--data-dir DIR]
        [--database-url postgresql://postgres@127.0.0.1:5432/test] [--json FILE]

The CSV files (bench/generate_appointments.py, seed 7, starts from today) are made once into
--data-dir and reused: a million rows take a while to generate.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from reminder_service.entrypoints.cli import app  # noqa: E402

TARGET_RSS_MIB = 400.0  # at a million appointments, every process of ours together
TARGET_CPU_US = 40.0  # per appointment at a million, every process of ours together
TARGET_PG_RATIO = 2.0  # PostgreSQL's 100,000 import, our CPU, against SQLite's
PG_SIZE = 100_000
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


def child(csv_path: Path, result: Path) -> None:
    """Run `reminder-service import csv_path` in this process, and write what it cost."""
    self0 = resource.getrusage(resource.RUSAGE_SELF)
    kids0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    code = app(["import", str(csv_path)], standalone_mode=False)
    seconds = time.perf_counter() - started
    self1 = resource.getrusage(resource.RUSAGE_SELF)
    kids1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    result.write_text(
        json.dumps(
            {
                "exit": code,
                "seconds": seconds,
                "cpu_self": _cpu(self1) - _cpu(self0),
                "cpu_children": _cpu(kids1) - _cpu(kids0),
                "rss_self_mib": self1.ru_maxrss / 1024,
                "rss_children_mib": kids1.ru_maxrss / 1024,
            }
        )
    )


def _cpu(usage: resource.struct_rusage) -> float:
    return usage.ru_utime + usage.ru_stime


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                text = Path(f"/proc/{current}/task/{task}/children").read_text()
            except OSError:
                continue
            for child_pid in map(int, text.split()):
                found.append(child_pid)
                todo.append(child_pid)
    return found


def sample(pid: int) -> tuple[float, float, float] | None:
    """(CPU seconds, peak RSS MiB, PSS MiB now) of a live process. PSS counts a page shared by
    n processes (a forked worker shares the importing process's) as 1/n in each."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / TICKS
    return cpu, _kib(status, "VmHWM:") / 1024, _kib(rollup, "Pss:") / 1024


def _kib(text: str, key: str) -> int:
    return next((int(line.split()[1]) for line in text.splitlines() if line.startswith(key)), 0)


def measure(csv_path: Path, env: dict[str, str], log: Path) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="import-scaling-") as tmp:
        result = Path(tmp) / "result.json"
        command = [sys.executable, __file__, "--child", str(csv_path), str(result)]
        with log.open("w") as out:
            process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
            workers: dict[int, tuple[float, float]] = {}
            pss_peak = 0.0
            while process.poll() is None:
                pss = 0.0
                for pid in [process.pid, *descendants(process.pid)]:
                    seen = sample(pid)
                    if seen is None:
                        continue
                    pss += seen[2]
                    if pid != process.pid:
                        cpu, peak = workers.get(pid, (0.0, 0.0))
                        workers[pid] = (max(cpu, seen[0]), max(peak, seen[1]))
                pss_peak = max(pss_peak, pss)
                time.sleep(0.05)
        if process.returncode != 0 or not result.exists():
            raise SystemExit(f"the import failed (exit {process.returncode}); see {log}")
        found: dict[str, Any] = json.loads(result.read_text())
    workers_cpu = max(found["cpu_children"], sum(cpu for cpu, _ in workers.values()))
    worker_peaks = sorted((peak for _, peak in workers.values()), reverse=True)
    found.update(
        workers=len(workers),
        cpu_workers=workers_cpu,
        cpu_total=found["cpu_self"] + workers_cpu,
        worker_peaks_mib=worker_peaks,
        rss_total_mib=found["rss_self_mib"] + sum(worker_peaks),
        pss_peak_mib=pss_peak,
    )
    return found


def environment(database_url: str, workdir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        REMINDER_DATABASE_URL=database_url,
        REMINDER_CONFIG_DIR=str(ROOT / "config"),
        REMINDER_TEMPLATES_DIR=str(ROOT / "templates"),
        REMINDER_OUTBOX_DIR=str(workdir / "outbox"),
        REMINDER_LOG_LEVEL="WARNING",
    )
    return env


def import_once(csv_path: Path, database_url: str, workdir: Path) -> dict[str, Any]:
    env = environment(database_url, workdir)
    migrate = [sys.executable, "-m", "reminder_service", "migrate"]
    subprocess.run(migrate, cwd=ROOT, env=env, check=True, capture_output=True)
    return measure(csv_path, env, workdir / "import.log")


def data_file(data_dir: Path, rows: int) -> Path:
    today = datetime.now(UTC).date().isoformat()
    path = data_dir / f"appointments-{rows}-seed7-{today}.csv"
    if not path.exists():
        print(f"generating {rows:,} rows into {path} ...", flush=True)
        generate = [sys.executable, str(ROOT / "bench" / "generate_appointments.py")]
        generate += ["--rows", str(rows), "--seed", "7", "--out", str(path)]
        subprocess.run(generate, cwd=ROOT, check=True, capture_output=True)
    return path


class PostgresDatabase:
    """A database of its own for one run, on the server of `url`; dropped afterwards."""

    def __init__(self, url: str) -> None:
        self._server = make_url(url).set(drivername="postgresql+psycopg")
        self.name = f"bench_import_{os.getpid()}"
        self._admin = create_engine(self._server, isolation_level="AUTOCOMMIT")

    def __enter__(self) -> str:
        with self._admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self.name}"'))
        url: str = self._server.set(database=self.name).render_as_string(hide_password=False)
        return url

    def __exit__(self, *exc: object) -> None:
        with self._admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self._admin.dispose()


def line(label: str, rows: int, m: dict[str, Any]) -> str:
    per = 1e6 / rows
    peaks = " + ".join(f"{p:.0f}" for p in m["worker_peaks_mib"]) or "none"
    return (
        f"  {label:<10} {rows:>9,}  {m['seconds']:6.1f} s  CPU {m['cpu_total'] * per:5.1f} µs/appt "
        f"(importing {m['cpu_self'] * per:4.1f}, workers {m['cpu_workers'] * per:4.1f})  "
        f"peak RSS {m['rss_total_mib']:4.0f} MiB (importing {m['rss_self_mib']:.0f}, "
        f"workers {peaks}; together, shared pages once: {m['pss_peak_mib']:.0f} MiB PSS)"
    )


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--child":
        child(Path(sys.argv[2]), Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--data-dir", type=Path, default=Path(tempfile.gettempdir()) / "bench-csv")
    parser.add_argument("--database-url", help="a PostgreSQL server to compare with, at 100,000")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "out" / "import_scaling.json")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    args.data_dir.mkdir(parents=True, exist_ok=True)

    report: dict[str, Any] = {"cores": os.cpu_count(), "sqlite": {}, "postgresql": {}}
    print(f"reminder-service import, {os.cpu_count()} cores; CPU of every process of ours")
    for rows in sizes:
        csv_path = data_file(args.data_dir, rows)
        with tempfile.TemporaryDirectory(prefix="import-scaling-") as tmp:
            found = import_once(csv_path, f"sqlite:///{Path(tmp) / 'reminders.db'}", Path(tmp))
        report["sqlite"][rows] = found
        print(line("SQLite", rows, found), flush=True)
    if args.database_url:
        csv_path = data_file(args.data_dir, PG_SIZE)
        with PostgresDatabase(args.database_url) as url, tempfile.TemporaryDirectory() as tmp:
            found = import_once(csv_path, url, Path(tmp))
        report["postgresql"][PG_SIZE] = found
        print(line("PostgreSQL", PG_SIZE, found), flush=True)

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print("targets:")
    big = report["sqlite"].get(1_000_000)
    if big:
        cpu = big["cpu_total"] / 1_000_000 * 1e6
        verdict = "met" if cpu <= TARGET_CPU_US else "MISSED"
        print(f"  1,000,000: CPU {cpu:.1f} µs/appt (target <= {TARGET_CPU_US:.0f}): {verdict}")
        rss = big["rss_total_mib"]
        verdict = "met" if rss <= TARGET_RSS_MIB else "MISSED"
        print(
            f"  1,000,000: peak RSS {rss:.0f} MiB, importing process + workers, each one's peak "
            f"added (PSS of all at once: {big['pss_peak_mib']:.0f} MiB) "
            f"(target <= {TARGET_RSS_MIB:.0f}): {verdict}"
        )
    curve = [(rows, m["rss_total_mib"]) for rows, m in sorted(report["sqlite"].items())]
    if len(curve) > 1:
        growth = curve[-1][1] / curve[0][1]
        print(
            f"  peak RSS from {curve[0][0]:,} to {curve[-1][0]:,} appointments: x{growth:.2f} "
            f"for x{curve[-1][0] / curve[0][0]:,.0f} the rows"
        )
    sqlite, pg = report["sqlite"].get(PG_SIZE), report["postgresql"].get(PG_SIZE)
    if sqlite and pg:
        ratio = pg["cpu_total"] / sqlite["cpu_total"]
        verdict = "met" if ratio <= TARGET_PG_RATIO else "MISSED"
        print(
            f"  PostgreSQL / SQLite CPU at {PG_SIZE:,}: {ratio:.2f}x "
            f"(target <= {TARGET_PG_RATIO:.0f}x): {verdict}"
        )


if __name__ == "__main__":
    main()
