"""Import + planning throughput for 100,000 appointments, beside the textbook design.

Ours: `reminder-service import`'s code path (parallel row validation, one transaction, bulk
inserts) into a fresh SQLite file. Textbook: the same rows, validated and planned by the same code,
then one APScheduler job per reminder in a SQLAlchemyJobStore on SQLite (`add_job` per reminder).
The textbook run is measured on a sample and extrapolated, because the full workload takes tens of
minutes that way; the sample size is printed. Each side runs in its own process, so peak memory
(max RSS) is its own.

Targets (issue 2): 100,000 appointments imported and planned in under 10 s on 2 cores, and at least
50 times the textbook way.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore  # noqa: E402
from apscheduler.schedulers.background import BackgroundScheduler  # noqa: E402

from bench.generate_appointments import generate, write_csv  # noqa: E402
from reminder_service import bootstrap  # noqa: E402
from reminder_service.domain.appointment import Appointment  # noqa: E402
from reminder_service.domain.planning import ReminderStatus, plan_reminders  # noqa: E402
from reminder_service.importers.csv_rows import (  # noqa: E402
    ImportDefaults,
    RowConverter,
    read_csv,
    split_warnings,
)
from reminder_service.services.csv_import import import_csv_file  # noqa: E402
from reminder_service.settings import Settings  # noqa: E402

TARGET_SECONDS = 10.0
TARGET_RATIO = 50.0


def settings_for(workdir: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{workdir / 'reminders.db'}",
        outbox_dir=workdir / "outbox",
        config_dir=ROOT / "config",
        templates_dir=ROOT / "templates",
    )


def defaults_for(service: bootstrap.Service) -> ImportDefaults:
    clinic = service.catalog.clinics.default
    return ImportDefaults(clinic.id, clinic.timezone, clinic.phone_region, clinic.default_language)


def max_rss_mib(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024


def run_ours(csv_path: Path, workdir: Path, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    service = bootstrap.build(settings_for(workdir))
    started = time.perf_counter()
    summary = import_csv_file(csv_path, service.importer, defaults_for(service))
    elapsed = time.perf_counter() - started
    max_rss = max_rss_mib(resource.RUSAGE_SELF)
    # The rest of every plan, stored as it comes within the horizon: here all at once, with the
    # clock moved past the last appointment, as a measure of that later work.
    later = datetime.now(UTC) + timedelta(days=200)
    catch_up = bootstrap.build(settings_for(workdir), clock=lambda: later)
    started = time.perf_counter()
    report = catch_up.materializer.materialize()
    materialize_seconds = time.perf_counter() - started
    queue.put(
        {
            "seconds": elapsed,
            "summary": summary.counts(),
            "max_rss_mib": max_rss,
            "workers_max_rss_mib": max_rss_mib(resource.RUSAGE_CHILDREN),
            "horizon_hours": service.settings.planning_horizon_hours,
            "later": {
                "seconds": materialize_seconds,
                "appointments": report.appointments,
                "reminders": report.reminders,
            },
        }
    )


def send_reminder(reminder_key: str) -> None:
    """The job the textbook design would run; never called here (the scheduler is paused)."""


def run_textbook(csv_path: Path, workdir: Path, sample: int, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    service = bootstrap.build(settings_for(workdir))
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{workdir / 'jobs.db'}")},
        timezone=UTC,
    )
    scheduler.start(paused=True)  # jobs are stored, never run
    table = read_csv(csv_path.read_bytes(), filename=str(csv_path))
    converter = RowConverter(table.headers, None, defaults_for(service))
    now = datetime.now(UTC)
    started = time.perf_counter()
    appointments = jobs = 0
    for raw in table.rows[:sample]:
        appointment, _warnings = split_warnings(converter.convert(raw))
        if not isinstance(appointment, Appointment):
            continue  # row errors, or a cancellation: nothing to schedule
        appointments += 1
        protocol = service.catalog.protocol_for(appointment.procedure)
        clinic = service.catalog.clinics.get(appointment.clinic_id)
        if protocol is None or clinic is None:
            continue
        for plan in plan_reminders(appointment, protocol, clinic.send_window, now, now):
            if plan.status is ReminderStatus.PENDING:
                scheduler.add_job(
                    send_reminder,
                    "date",
                    run_date=plan.due_at,
                    args=[f"{appointment.external_id}/{plan.step_id}/{plan.channel.value}"],
                    id=f"{appointment.external_id}/{plan.step_id}/{plan.channel.value}",
                    misfire_grace_time=3600,
                )
                jobs += 1
    elapsed = time.perf_counter() - started
    # No shutdown(): a stopping APScheduler runs one last pass over due jobs, and this process
    # exits right after reporting (the scheduler thread is a daemon).
    queue.put(
        {
            "seconds": elapsed,
            "rows": sample,
            "appointments": appointments,
            "jobs": jobs,
            "max_rss_mib": max_rss_mib(resource.RUSAGE_SELF),
        }
    )


def in_process(target, *args):  # type: ignore[no-untyped-def]
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=target, args=(*args, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--textbook-sample", type=int, default=2_000)
    parser.add_argument(
        "--json", type=Path, default=ROOT / "bench" / "out" / "import_planning.json"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-import-") as tmp:
        workdir = Path(tmp)
        rows, _expected, _bad = generate(args.rows, seed=7, today=datetime.now(UTC).date())
        csv_path = workdir / "appointments.csv"
        write_csv(csv_path, rows, excel=False)
        (workdir / "ours").mkdir()
        (workdir / "textbook").mkdir()
        ours = in_process(run_ours, csv_path, workdir / "ours")
        textbook = in_process(run_textbook, csv_path, workdir / "textbook", args.textbook_sample)

    planned = ours["summary"]["reminders_planned"]
    ours_rate = args.rows / ours["seconds"]
    textbook_rate = textbook["rows"] / textbook["seconds"]
    textbook_full = args.rows / textbook_rate
    ratio = ours_rate / textbook_rate
    report = {
        "cores": os.cpu_count(),
        "rows": args.rows,
        "ours": {
            **ours,
            "rows_per_second": ours_rate,
            "reminders_per_second": planned / ours["seconds"],
        },
        "textbook": {
            **textbook,
            "rows_per_second": textbook_rate,
            "jobs_per_second": textbook["jobs"] / textbook["seconds"],
            "extrapolated_seconds_for_all_rows": textbook_full,
        },
        "speedup": ratio,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, default=str))

    print(f"import + planning, {args.rows:,} appointments (CSV rows), {os.cpu_count()} cores")
    print(
        f"  ours:     {ours['seconds']:6.2f} s  {ours_rate:9,.0f} appointments/s  "
        f"{planned / ours['seconds']:10,.0f} reminders/s  ({planned:,} reminder rows, "
        f"incl. skipped)  peak RSS {ours['max_rss_mib']:.0f} MiB "
        f"(+ validation worker {ours['workers_max_rss_mib']:.0f} MiB)"
    )
    later = ours["later"]
    print(
        f"            reminder rows are those due within the {ours['horizon_hours']} h planning "
        f"horizon; the rest of every plan ({later['reminders']:,} rows for "
        f"{later['appointments']:,} appointments) is stored as it comes within it: all at once "
        f"that takes {later['seconds']:.2f} s ({later['reminders'] / later['seconds']:,.0f} "
        "rows/s)"
    )
    print(f"  summary:  {ours['summary']}")
    print(
        f"  textbook: {textbook['rows']:,}-row sample in {textbook['seconds']:.2f} s: "
        f"{textbook_rate:,.0f} appointments/s, {textbook['jobs'] / textbook['seconds']:,.0f} "
        f"jobs/s; all rows would take ~{textbook_full:,.0f} s; peak RSS "
        f"{textbook['max_rss_mib']:.0f} MiB"
    )
    verdict_time = "met" if ours["seconds"] < TARGET_SECONDS else "MISSED"
    verdict_ratio = "met" if ratio >= TARGET_RATIO else "MISSED"
    print(
        f"  target < {TARGET_SECONDS:.0f} s: {verdict_time};  speedup {ratio:,.0f}x "
        f"(target >= {TARGET_RATIO:.0f}x): {verdict_ratio}"
    )


if __name__ == "__main__":
    main()
