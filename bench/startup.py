"""Start-up: the CPU `reminder-service --help` costs, and how soon `run` sends what is due at start.

- `--help` (and each subcommand's `--help`): user + sys CPU of the whole process, from
  getrusage(RUSAGE_CHILDREN) before and after it, the median of several runs. Beside it, in the
  same run: `python -c pass` and `python -c "import sqlalchemy, fastapi"`, so ratios are visible
  on whatever machine this runs.
- first send: a SQLite database with one appointment whose booking text is due now (migrate and
  import, not timed), then `reminder-service run` (its HTTP endpoints on a free port, the file
  outbox) as a process; the time from starting the process to the first file in the outbox,
  wall clock, the median of several runs, each on a database of its own.

Targets: `--help` at most 0.3 s of CPU; the first send at most 2 s after the process starts.

    .venv/bin/python bench/startup.py [--runs 5] [--json bench/out/startup.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import typer.main

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.generate_appointments import HEADERS  # noqa: E402
from reminder_service.configuration.clinics import load_clinics  # noqa: E402
from reminder_service.entrypoints.cli import app as cli_app  # noqa: E402
from reminder_service.entrypoints.sample_data import daytime_zone  # noqa: E402

HELP_TARGET_SECONDS = 0.3
FIRST_SEND_TARGET_SECONDS = 2.0
CONFIG_DIR = ROOT / "config"
TEMPLATES_DIR = ROOT / "templates"


def console_script() -> list[str]:
    """`reminder-service` as installed beside this interpreter (what a person runs)."""
    script = Path(sys.executable).with_name("reminder-service")
    if script.is_file():
        return [str(script)]
    found = shutil.which("reminder-service")
    if found is None:
        raise SystemExit("reminder-service is not installed: run `make install`")
    return [found]


def cpu_seconds(command: list[str], runs: int, env: dict[str, str] | None = None) -> float:
    """Median user + sys CPU of `command` as a whole process (interpreter start included)."""
    samples = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        done = subprocess.run(command, capture_output=True, env=env, cwd=ROOT, check=False)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if done.returncode != 0:
            raise RuntimeError(f"{command} failed: {done.stderr.decode()[-2000:]}")
        samples.append(
            after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime,
        )
    return statistics.median(samples)


def subcommands() -> list[list[str]]:
    """Every command's path (`api-key create` is two words), read from the CLI itself."""

    def walk(group: Any, prefix: list[str]) -> list[list[str]]:
        found: list[list[str]] = []
        for name, command in sorted(group.commands.items()):
            if hasattr(command, "commands"):  # a group, such as api-key
                found += walk(command, [*prefix, name])
            else:
                found.append([*prefix, name])
        return found

    return walk(typer.main.get_command(cli_app), [])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def service_env(workdir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "REMINDER_DATABASE_URL": f"sqlite:///{workdir / 'reminders.db'}",
        "REMINDER_OUTBOX_DIR": str(workdir / "outbox"),
        "REMINDER_CONFIG_DIR": str(CONFIG_DIR),
        "REMINDER_TEMPLATES_DIR": str(TEMPLATES_DIR),
        "REMINDER_HTTP_PORT": str(free_port()),
        "REMINDER_LOG_LEVEL": "WARNING",
    }


def write_due_text(path: Path, now: datetime) -> None:
    """One SMS-only patient whose booking text is due now, in a zone where it is daytime (inside
    the clinic's send window)."""
    clinic = load_clinics(CONFIG_DIR / "clinics.yaml").default
    start = (now + timedelta(days=10)).strftime("%Y-%m-%d 10:00")
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(HEADERS)
        writer.writerow(
            ["S1", "SP1", "Test", "Patient", "+447700900001", "", "en-GB",
             daytime_zone(clinic, now), "BMBX", start, "60", "Room 4", "no", "no", "booked"]
        )  # fmt: skip


def seed(workdir: Path, env: dict[str, str]) -> None:
    csv_path = workdir / "due.csv"
    write_due_text(csv_path, datetime.now(UTC))
    for command in (["migrate"], ["import", str(csv_path)]):
        done = subprocess.run(
            [*console_script(), *command], env=env, cwd=ROOT, capture_output=True, check=False
        )
        if done.returncode != 0:
            raise RuntimeError(f"{command[0]} failed: {done.stderr.decode()[-2000:]}")


def sent_files(outbox: Path) -> list[Path]:
    """Messages in the outbox; dot-files are a write in progress, never a message."""
    return [p for p in outbox.glob("*/*") if not p.name.startswith(".")]


def first_send_seconds(run_args: list[str], timeout: float = 60.0) -> float:
    """Seconds from starting `run` to the first outbox file, on a freshly seeded database."""
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        workdir = Path(tmp)
        env = service_env(workdir)
        seed(workdir, env)
        outbox = workdir / "outbox"
        log = workdir / "run.log"
        with log.open("wb") as stderr:
            started = time.monotonic()
            process = subprocess.Popen(
                [*console_script(), "run", *run_args],
                env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=stderr,
            )  # fmt: skip
            try:
                while not sent_files(outbox):
                    if process.poll() is not None:
                        raise RuntimeError(f"run exited ({process.returncode}): {log.read_text()}")
                    if time.monotonic() - started > timeout:
                        raise RuntimeError(f"nothing sent in {timeout:.0f} s: {log.read_text()}")
                    time.sleep(0.002)
                took = time.monotonic() - started
            finally:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
        return took


def verdict(value: float, target: float) -> str:
    return "met" if value <= target else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each measurement")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "out" / "startup.json")
    args = parser.parse_args()
    runs = args.runs
    cli = console_script()

    python_pass = cpu_seconds([sys.executable, "-c", "pass"], runs)
    heavy = cpu_seconds([sys.executable, "-c", "import sqlalchemy, fastapi"], runs)
    top_help = cpu_seconds([*cli, "--help"], runs)
    per_command = {" ".join(c): cpu_seconds([*cli, *c, "--help"], runs) for c in subcommands()}
    slowest = max(per_command, key=lambda name: per_command[name])
    first_send = [first_send_seconds([]) for _ in range(runs)]
    first_send_no_http = [first_send_seconds(["--no-http"]) for _ in range(runs)]

    print(f"start-up, median of {runs} runs, {os.cpu_count()} cores")
    print(f"  baseline: python -c pass {python_pass:.3f} s CPU; "
          f"python -c 'import sqlalchemy, fastapi' {heavy:.3f} s CPU")  # fmt: skip
    print(f"  reminder-service --help: {top_help:.3f} s CPU "
          f"({top_help / heavy:.2f}x the sqlalchemy+fastapi import; target "
          f"<= {HELP_TARGET_SECONDS} s: {verdict(top_help, HELP_TARGET_SECONDS)})")  # fmt: skip
    print(f"  each subcommand's --help ({len(per_command)}): median "
          f"{statistics.median(per_command.values()):.3f} s CPU, slowest '{slowest} --help' "
          f"{per_command[slowest]:.3f} s (target <= {HELP_TARGET_SECONDS} s: "
          f"{verdict(per_command[slowest], HELP_TARGET_SECONDS)})")  # fmt: skip
    for name, samples in (("run", first_send), ("run --no-http", first_send_no_http)):
        median = statistics.median(samples)
        met = verdict(median, FIRST_SEND_TARGET_SECONDS)
        print(f"  {name}: first send {median:.2f} s after the process started (min "
              f"{min(samples):.2f}, max {max(samples):.2f}; target <= "
              f"{FIRST_SEND_TARGET_SECONDS} s: {met})")  # fmt: skip

    report = {
        "cores": os.cpu_count(),
        "runs": runs,
        "cpu_seconds": {
            "python_pass": python_pass,
            "import_sqlalchemy_fastapi": heavy,
            "help": top_help,
            "subcommand_help": per_command,
        },
        "first_send_seconds": {"run": first_send, "run_no_http": first_send_no_http},
        "targets": {"help_cpu": HELP_TARGET_SECONDS, "first_send": FIRST_SEND_TARGET_SECONDS},
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
