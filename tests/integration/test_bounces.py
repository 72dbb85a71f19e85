"""Bounces end to end: emails go out through the real SMTP channel with an envelope sender that
names each one; a delivery status notification sent to that address over SMTP (the stdlib
client, to the real listener) marks the email bounced and tells staff when nothing else of the
step reached the patient."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import select

from reminder_service import bootstrap
from reminder_service.bootstrap import Service
from reminder_service.entrypoints.bounce_listener import BounceListener
from reminder_service.settings import Settings
from reminder_service.store.tables import audit_log, reminders
from tests.factories import appointment, listening_on_a_thread, patient
from tests.servers.smtp_server import RecordingHandler, SmtpServer, serve_in_thread

FIXTURES = Path(__file__).parents[1] / "fixtures" / "bounces"
BOUNCES = "bounces@mail.clinic.example"


@pytest.fixture
def mail_server() -> Iterator[SmtpServer]:
    with serve_in_thread(RecordingHandler()) as server:
        yield server


@pytest.fixture
def smtp_service(settings: Settings, clock, mail_server: SmtpServer) -> Iterator[Service]:  # type: ignore[no-untyped-def]
    smtp = mail_server.settings(bounce_address=BOUNCES, bounce_secret="x" * 32)
    service = bootstrap.build(replace(settings, email_channel="smtp", smtp=smtp), clock)
    yield service
    service.close()


@pytest.fixture
def listener(smtp_service: Service) -> Iterator[int]:
    receiver = smtp_service.bounces()
    assert receiver is not None
    with listening_on_a_thread(BounceListener(receiver.receive, "127.0.0.1", 0)) as port:
        yield port


def email_only_booking(service: Service, mail_server: SmtpServer) -> tuple[int, str]:
    """Book a patient with no mobile and send the booking email; (its reminder id, the envelope
    sender it went with)."""
    person = patient(mobile=None, email="no.such.patient@example.net")
    service.importer.apply([(2, appointment(patient=person))], source="t", label="t")
    assert service.dispatcher.dispatch_due().by_status.get("sent") == 1
    [received] = mail_server.handler.received
    with service.engine.connect() as conn:
        reminder_id = conn.execute(
            select(reminders.c.id).where(reminders.c.channel == "email")
        ).scalar_one()
    return reminder_id, received.mail_from


def bounce(port: int, to: str, fixture: str = "postfix-user-unknown.eml") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        client.sendmail("", [to], (FIXTURES / fixture).read_bytes())  # DSNs have a null sender


def row(service: Service, reminder_id: int) -> dict[str, object]:
    with service.engine.connect() as conn:
        found = conn.execute(select(reminders).where(reminders.c.id == reminder_id))
        return dict(found.mappings().one())


def staff_alerts(service: Service) -> list[str]:
    with service.engine.connect() as conn:
        query = select(reminders.c.alert).where(reminders.c.channel == "staff")
        return [str(a) for a in conn.execute(query).scalars()]


def test_each_email_goes_with_an_envelope_sender_naming_it(
    smtp_service: Service, mail_server: SmtpServer
) -> None:
    reminder_id, sender = email_only_booking(smtp_service, mail_server)
    receiver = smtp_service.bounces()
    assert receiver is not None
    assert sender.startswith("bounces+r") and sender.endswith("@mail.clinic.example")
    assert receiver._address.reminder_of(sender) == reminder_id


def test_a_bounce_marks_the_email_and_tells_staff_once(
    smtp_service: Service, mail_server: SmtpServer, listener: int
) -> None:
    reminder_id, sender = email_only_booking(smtp_service, mail_server)
    bounce(listener, sender)
    bounced = row(smtp_service, reminder_id)
    assert (bounced["delivery_status"], bounced["delivery_error"]) == ("bounced", "5.1.1")
    [alert] = staff_alerts(smtp_service)
    assert "no channel reached the patient" in alert
    assert "email: bounced: no such mailbox (status 5.1.1)" in alert
    assert "no.such.patient" not in alert  # the clinic is told which appointment, not the address
    bounce(listener, sender)  # the mail system sends it again: nothing more happens
    assert len(staff_alerts(smtp_service)) == 1
    with smtp_service.engine.connect() as conn:
        events = list(
            conn.execute(
                select(audit_log.c.event).where(audit_log.c.reminder_id == reminder_id)
            ).scalars()
        )
    assert events.count("delivery_bounced") == 1


def test_a_delay_is_noted_and_changes_nothing_else(
    smtp_service: Service, mail_server: SmtpServer, listener: int
) -> None:
    reminder_id, sender = email_only_booking(smtp_service, mail_server)
    bounce(listener, sender, "postfix-delayed.eml")
    assert row(smtp_service, reminder_id)["delivery_status"] is None
    assert staff_alerts(smtp_service) == []
    with smtp_service.engine.connect() as conn:
        events = conn.execute(
            select(audit_log.c.event).where(audit_log.c.reminder_id == reminder_id)
        ).scalars()
        assert "delivery_delayed" in set(events)


def test_a_forged_or_stray_message_changes_nothing(
    smtp_service: Service, mail_server: SmtpServer, listener: int
) -> None:
    reminder_id, sender = email_only_booking(smtp_service, mail_server)
    guessed = f"bounces+r{reminder_id}-0123456789@mail.clinic.example"
    bounce(listener, guessed)  # a DSN for a guessed reminder id: the tag does not match
    bounce(listener, BOUNCES)  # mail to the bare address
    with smtplib.SMTP("127.0.0.1", listener, timeout=10) as client:  # an auto-reply, not a DSN
        client.sendmail("patient@example.net", [sender], b"Subject: Away\r\n\r\nBack Monday.\r\n")
    assert row(smtp_service, reminder_id)["delivery_status"] is None
    assert staff_alerts(smtp_service) == []


def test_no_alert_when_the_step_s_text_reached_the_patient(
    smtp_service: Service, mail_server: SmtpServer, listener: int
) -> None:
    person = patient(email="no.such.patient@example.net")  # a mobile too
    smtp_service.importer.apply([(2, appointment(patient=person))], source="t", label="t")
    assert smtp_service.dispatcher.dispatch_due().by_status.get("sent") == 2  # SMS and email
    [received] = mail_server.handler.received
    bounce(listener, received.mail_from)
    with smtp_service.engine.connect() as conn:
        statuses = dict(
            conn.execute(select(reminders.c.channel, reminders.c.delivery_status)).tuples().all()
        )
    assert statuses == {"sms": None, "email": "bounced"}
    assert staff_alerts(smtp_service) == []
