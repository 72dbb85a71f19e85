"""Synthetic test data: names, Ofcom drama-range numbers and example.org addresses only."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from reminder_service.domain.appointment import Appointment, AppointmentStatus, Patient, Tristate
from reminder_service.domain.timing import local_to_utc, zone
from reminder_service.entrypoints.listening import Listener
from reminder_service.store.engine import make_engine, migrate

ROOT = Path(__file__).parents[1]
CONFIG_DIR = ROOT / "config"
TEMPLATES_DIR = ROOT / "templates"


def migrated(url: str) -> str:
    """`url`, its database created at the newest schema, as `reminder-service migrate` leaves it
    (other commands need that and never change the schema themselves)."""
    engine = make_engine(url)
    try:
        migrate(engine)
    finally:
        engine.dispose()
    return url


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def local(tz: str, y: int, m: int, d: int, hh: int, mm: int = 0) -> datetime:
    return local_to_utc(date(y, m, d), time(hh, mm), zone(tz))


def patient(**changes: Any) -> Patient:
    base = Patient(
        external_id="P1",
        first_name="Test",
        last_name="Patient",
        mobile="+447700900123",
        email="test.patient@example.org",
        language="en-GB",
        timezone="Europe/London",
    )
    return replace(base, **changes)


def appointment(**changes: Any) -> Appointment:
    base = Appointment(
        external_id="A1",
        clinic_id="riverside",
        patient=patient(),
        procedure="BMBX",
        start=local("Europe/London", 2026, 12, 10, 9, 30),
        duration_minutes=60,
        location="Day Unit, Level 2",
        status=AppointmentStatus.BOOKED,
        sedation=Tristate.YES,
        anticoagulant=Tristate.YES,
    )
    return replace(base, **changes)


def config_without_sms_caps(tmp_path: Path) -> Path:
    """A copy of the shipped configuration with the SMS caps off, for tests about something else
    (retries, deadlines) that send several texts to one patient in a day."""
    import shutil  # noqa: PLC0415

    config = tmp_path / "config-no-caps"
    shutil.copytree(CONFIG_DIR, config)
    clinics = config / "clinics.yaml"
    clinics.write_text(
        clinics.read_text().replace(
            "sms_caps: {per_day: 1, per_7_days: 3}", "sms_caps: {per_day: 0, per_7_days: 0}"
        )
    )
    return config


def walk_clock(service: Any, clock: Any, until: datetime) -> None:
    """Move a FakeClock to `until` as the running service's timer would wake: to each next due
    time, and at least every six hours (so the planning horizon keeps being extended)."""
    while clock.now < until:
        service.materializer.materialize()
        service.dispatcher.dispatch_due()
        due = service.dispatcher.next_due()
        step = clock.now + timedelta(hours=6)
        clock.now = min(due, step) if due is not None and due > clock.now else step


@contextmanager
def listening_on_a_thread(listener: Listener) -> Iterator[int]:
    """Run a listener (MLLP, bounces) on its own event loop in a thread; yields its port."""
    loop = asyncio.new_event_loop()
    loop.run_until_complete(listener.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield listener.port
    finally:
        asyncio.run_coroutine_threadsafe(listener.close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def free_port() -> int:
    """A port nothing listens on now (bound to port 0 and released): for a server a test starts,
    or for one that must find nothing there."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_cli(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`reminder-service ARGS` as a real process, with `env`; its output captured."""
    return subprocess.run(
        [sys.executable, "-m", "reminder_service", *args],
        env=env, capture_output=True, text=True, cwd=ROOT, timeout=timeout, check=False,
    )  # fmt: skip
