"""Email cannot be asked whether it arrived. When the mail server hangs up after taking a message
(after DATA), the retry goes with the same Message-ID, so mail clients that keep one message
per Message-ID show the two deliveries as one."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from sqlalchemy import select

from reminder_service import bootstrap
from reminder_service.bootstrap import Service
from reminder_service.settings import Settings
from reminder_service.store.tables import reminders
from tests.factories import appointment, patient
from tests.servers.smtp_server import RecordingHandler, SmtpServer, serve_in_thread


@pytest.fixture
def mail_server() -> Iterator[SmtpServer]:
    with serve_in_thread(RecordingHandler(drop_after_data=1)) as server:
        yield server


@pytest.fixture
def smtp_service(settings: Settings, clock, mail_server: SmtpServer) -> Iterator[Service]:  # type: ignore[no-untyped-def]
    service = bootstrap.build(
        replace(settings, email_channel="smtp", smtp=mail_server.settings()), clock
    )
    yield service
    service.close()


def test_an_email_retried_after_a_lost_answer_keeps_its_message_id(
    smtp_service: Service, mail_server: SmtpServer, clock
) -> None:  # type: ignore[no-untyped-def]
    person = patient(mobile=None, email="test.patient@example.org")
    smtp_service.importer.apply([(2, appointment(patient=person))], source="t", label="t")
    assert smtp_service.dispatcher.dispatch_due().by_status == {"pending": 1}  # hung up
    with smtp_service.engine.connect() as conn:
        row = conn.execute(select(reminders).where(reminders.c.channel == "email")).one()
    clock.now = row.due_at
    assert smtp_service.dispatcher.dispatch_due().by_status == {"sent": 1}
    first, second = (received.message() for received in mail_server.handler.received)
    assert first["Message-ID"] == second["Message-ID"] == f"<reminder-{row.id}.v1@reminder-service>"
    assert first["X-Reminder-Id"] == second["X-Reminder-Id"] == str(row.id)
