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


def test_each_reminder_has_its_own_message_id_and_keeps_it_when_retried(
    smtp_service: Service, mail_server: SmtpServer, clock
) -> None:  # type: ignore[no-untyped-def]
    changes = [
        (
            row,
            appointment(external_id=f"A{row}", patient=patient(external_id=f"P{row}", mobile=None)),
        )
        for row in (2, 3, 4)
    ]
    smtp_service.importer.apply(changes, source="t", label="t")
    # The server hangs up after taking the first email: that one is in doubt, the others sent.
    assert smtp_service.dispatcher.dispatch_due().by_status == {"pending": 1, "sent": 2}
    with smtp_service.engine.connect() as conn:
        rows = conn.execute(select(reminders).where(reminders.c.channel == "email")).all()
    [retry] = [row for row in rows if row.status == "pending"]
    clock.now = retry.due_at
    assert smtp_service.dispatcher.dispatch_due().by_status == {"sent": 1}
    received = [r.message() for r in mail_server.handler.received]
    assert len(received) == 4
    by_reminder: dict[str, set[str]] = {}
    for message in received:
        by_reminder.setdefault(message["X-Reminder-Id"], set()).add(message["Message-ID"])
    assert by_reminder == {
        str(row.id): {f"<reminder-{row.id}.v1@reminder-service>"} for row in rows
    }
    assert len(rows) == 3
