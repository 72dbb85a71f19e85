"""`reminder-service bounces` as a real process: a DSN sent to an email's envelope sender marks
that email bounced; SIGTERM stops it cleanly."""

from __future__ import annotations

import os
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, select

from reminder_service.channels.bounces import BounceAddress
from reminder_service.settings import Settings
from reminder_service.store.engine import make_engine, migrate
from reminder_service.store.tables import reminders
from tests.factories import CONFIG_DIR, ROOT, TEMPLATES_DIR, appointment, free_port, patient

pytestmark = pytest.mark.slow
FIXTURES = Path(__file__).parents[1] / "fixtures" / "bounces"
SECRET = "a bounce secret for the e2e test"


def test_the_bounce_listener_marks_the_email_it_names(tmp_path: Path) -> None:
    database = f"sqlite:///{tmp_path / 'reminders.db'}"
    env = {
        **os.environ,
        "REMINDER_DATABASE_URL": database,
        "REMINDER_CONFIG_DIR": str(CONFIG_DIR),
        "REMINDER_TEMPLATES_DIR": str(TEMPLATES_DIR),
        "REMINDER_LOG_LEVEL": "WARNING",
        "REMINDER_EMAIL_CHANNEL": "smtp",
        "SMTP_HOST": "127.0.0.1",
        "SMTP_SECURITY": "none",
        "SMTP_FROM": "reminders@clinic.example",
        "SMTP_BOUNCE_ADDRESS": "bounces@mail.clinic.example",
        "SMTP_BOUNCE_SECRET": SECRET,
    }
    reminder_id = _an_email_reminder(Settings.from_env(env))
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "reminder_service", "bounces", "--port", str(port)],
        env=env, cwd=ROOT, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        client = _connect(process, port)
        address = BounceAddress("bounces@mail.clinic.example", SECRET.encode())
        with client:
            refused = client.sendmail(
                "",
                [address.for_reminder(reminder_id)],
                (FIXTURES / "postfix-user-unknown.eml").read_bytes(),
            )
        assert refused == {}
        engine = create_engine(database)
        try:
            with engine.connect() as conn:
                status = conn.execute(
                    select(reminders.c.delivery_status).where(reminders.c.id == reminder_id)
                ).scalar_one()
        finally:
            engine.dispose()
        assert status == "bounced"
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()
    assert code == 0


def _an_email_reminder(settings: Settings) -> int:
    """Import one booking (email only) straight into the database; its booking email's id."""
    from reminder_service import bootstrap  # noqa: PLC0415 - only this set-up needs the service

    engine = make_engine(settings.database_url)
    migrate(engine)
    engine.dispose()
    service = bootstrap.build(settings)
    try:
        booking = appointment(patient=patient(mobile=None))
        service.importer.apply([(2, booking)], source="t", label="t")
        with service.engine.connect() as conn:
            query = select(reminders.c.id).where(
                reminders.c.channel == "email", reminders.c.step_id == "booked"
            )
            return int(conn.execute(query).scalar_one())
    finally:
        service.close()


def _connect(process: subprocess.Popen[str], port: int) -> smtplib.SMTP:
    deadline = time.monotonic() + 60
    while True:  # wait for a real listening socket (not a sleep standing in for a clock)
        try:
            return smtplib.SMTP("127.0.0.1", port, timeout=10)
        except OSError:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the bounce listener did not start"
            time.sleep(0.1)
