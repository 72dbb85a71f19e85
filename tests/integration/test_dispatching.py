"""Dispatching from a real database to the real file outbox."""

from __future__ import annotations

import email
import json
import os
from dataclasses import replace
from datetime import timedelta
from email.message import EmailMessage
from email.policy import default

import pytest
from icalendar import Calendar
from sqlalchemy import select

from reminder_service.bootstrap import Service
from reminder_service.channels.outbox import OutboxChannel
from reminder_service.domain.appointment import AppointmentStatus
from reminder_service.domain.planning import ReminderStatus
from reminder_service.services.reporting import status_report
from reminder_service.store.tables import audit_log, reminders
from tests.factories import appointment, local, patient


def load(service: Service, step: str, channel: str):  # type: ignore[no-untyped-def]
    with service.engine.connect() as conn:
        return (
            conn.execute(
                select(reminders).where(reminders.c.step_id == step, reminders.c.channel == channel)
            )
            .mappings()
            .one()
        )


def tick(service: Service):  # type: ignore[no-untyped-def]
    """What the running timer does: store what came within the horizon, then dispatch."""
    service.materializer.materialize()
    return service.dispatcher.dispatch_due()


def test_due_reminders_land_in_the_outbox_once(service: Service, settings) -> None:  # type: ignore[no-untyped-def]
    service.importer.apply([(2, appointment())], source="test", label="t")
    report = service.dispatcher.dispatch_due()
    assert report.by_status == {"sent": 2}
    sms_row = load(service, "booked", "sms")
    document = json.loads((settings.outbox_dir / "sms" / f"{sms_row['id']}.json").read_text())
    assert document["to"] == "+447700900123"
    assert document["appointment_id"] == "A1" and document["step"] == "booked"
    assert document["reminder_id"] == sms_row["id"]
    assert "Riverside Haematology" in document["body"]
    assert (
        sms_row["status"] == "sent" and sms_row["provider_id"] == f"outbox:sms/{sms_row['id']}.json"
    )

    email_row = load(service, "booked", "email")
    raw = (settings.outbox_dir / "email" / f"{email_row['id']}.eml").read_bytes()
    message = email.message_from_bytes(raw, policy=default)
    assert isinstance(message, EmailMessage)
    assert message["To"] == "test.patient@example.org"
    assert message["Message-ID"] == f"<reminder-{email_row['id']}.v1@reminder-service>"
    # The booking email carries the appointment as a calendar entry (the step says calendar: true).
    assert message.get_content_type() == "multipart/mixed"
    body, invite = message.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    assert {part.get_content_type() for part in body.iter_parts()} == {"text/plain", "text/html"}
    assert invite.get_content_type() == "text/calendar"
    assert b"METHOD:REQUEST" in invite.get_payload(decode=True)
    assert "biopsy" not in message["Subject"].lower()

    assert service.dispatcher.dispatch_due().claimed == 0  # nothing is sent twice


def test_each_step_goes_out_at_its_time_and_not_before(service, clock, settings) -> None:  # type: ignore[no-untyped-def]
    service.importer.apply([(2, appointment())], source="test", label="t")
    tick(service)
    clock.now = local("Europe/London", 2026, 12, 3, 9, 59)
    assert tick(service).claimed == 0
    assert service.dispatcher.next_due() == local("Europe/London", 2026, 12, 3, 10, 0)
    clock.now = local("Europe/London", 2026, 12, 3, 10, 0)
    assert tick(service).by_status == {"sent": 2}
    assert load(service, "medicines", "sms")["sent_at"] == clock.now


def test_a_crashed_claim_is_sent_after_the_lease_expires_exactly_once(
    service, clock, settings
) -> None:  # type: ignore[no-untyped-def]
    service.importer.apply([(2, appointment())], source="test", label="t")
    claimed = service.dispatcher._claim()  # a worker claims, commits, then dies before sending
    assert len(claimed) == 2
    assert service.dispatcher.dispatch_due().claimed == 0  # the lease still holds
    clock.advance(seconds=61)
    report = service.dispatcher.dispatch_due()
    assert report.by_status == {"sent": 2}
    assert len(list((settings.outbox_dir / "sms").iterdir())) == 1
    assert load(service, "booked", "sms")["attempts"] == 2


def test_a_stale_worker_cannot_overwrite_a_newer_attempt(service, clock) -> None:  # type: ignore[no-untyped-def]
    service.importer.apply([(2, appointment())], source="test", label="t")
    stale = service.dispatcher._claim()
    clock.advance(seconds=61)
    service.dispatcher.dispatch_due()
    service.dispatcher._record(stale[0], ReminderStatus.FAILED, "stale", {}, clock.now)
    assert load(service, stale[0].step_id, stale[0].channel)["status"] == "sent"


def test_outside_the_send_window_a_due_reminder_waits_for_the_morning(service, clock) -> None:  # type: ignore[no-untyped-def]
    service.importer.apply([(2, appointment())], source="test", label="t")
    tick(service)
    # The dispatcher was down from 17:00 until 22:00 the day before: day_before (18:00) is overdue.
    clock.now = local("Europe/London", 2026, 12, 9, 22, 0)
    tick(service)
    with service.engine.connect() as conn:
        went = conn.execute(
            select(reminders.c.channel, reminders.c.step_id)
            .where(reminders.c.sent_at.is_not(None))
            .order_by(reminders.c.id)  # PostgreSQL returns rows in no set order without one
        ).all()
    # Nothing to the patient at 22:00. The escort advice (critical) missed its deadline (24 hours
    # before the start) while the dispatcher was down, so the clinic's staff were told at once.
    assert [tuple(r) for r in went if r.channel != "staff"] == [
        ("sms", "booked"),
        ("email", "booked"),
    ]
    assert [r.step_id for r in went if r.channel == "staff"] == ["escort"]
    row = load(service, "day_before", "sms")
    assert row["status"] == "pending" and row["reason"] == "deferred to the send window"
    assert row["due_at"] == local("Europe/London", 2026, 12, 10, 8, 0)
    assert row["attempts"] == 0
    clock.now = row["due_at"]
    assert tick(service).by_status.get("sent", 0) >= 2


def test_nothing_goes_out_after_its_deadline(service, clock) -> None:  # type: ignore[no-untyped-def]
    service.importer.apply([(2, appointment())], source="test", label="t")
    tick(service)
    # Down for two weeks: every pre-procedure step is past its deadline by the time it runs.
    clock.now = appointment().start + timedelta(minutes=5)
    tick(service)
    for step in ("medicines", "escort", "day_before"):
        row = load(service, step, "sms")
        assert row["status"] == "skipped", step
        assert row["reason"] == "deadline passed before it could be sent"
    with service.engine.connect() as conn:
        skipped = (
            conn.execute(select(audit_log.c.reason).where(audit_log.c.event == "skipped"))
            .scalars()
            .all()
        )
    assert len(skipped) == 6


def test_cancelled_appointment_sends_nothing_even_if_already_claimed(service, clock) -> None:  # type: ignore[no-untyped-def]
    service.importer.apply([(2, appointment())], source="test", label="t")
    claimed = service.dispatcher._claim()
    service.importer.apply(
        [(2, appointment(status=AppointmentStatus.CANCELLED))], source="t", label="t"
    )
    # The claimed batch is prepared after the cancellation landed: the send-time check sees it.
    prepared = service.dispatcher._preparation.prepare_all(claimed)
    assert {p.status.value for p in prepared} == {"cancelled"}  # type: ignore[union-attr]


def test_the_outbox_sweeps_temp_files_a_crash_left_behind(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "email").mkdir()
    old = tmp_path / "email" / ".7.eml.abc.tmp"
    fresh = tmp_path / "email" / ".8.eml.def.tmp"
    message = tmp_path / "email" / "6.eml"
    for path in (old, fresh, message):
        path.write_text("x")
    os.utime(old, (1_000_000_000, 1_000_000_000))
    OutboxChannel(tmp_path)
    assert not old.exists() and fresh.exists() and message.exists()


def test_reads_do_not_wait_for_a_writer_on_sqlite(service, settings) -> None:  # type: ignore[no-untyped-def]
    if service.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL readers never wait for writers; this is SQLite's locking")
    service.importer.apply([(2, appointment())], source="test", label="t")
    writer = service.engine.connect()
    writer.begin()  # BEGIN IMMEDIATE: holds the write lock, as a long import does
    try:
        writer.exec_driver_sql("UPDATE appointments SET location = location")
        # Readers answer at once instead of waiting out the 30 s busy timeout.
        assert service.dispatcher.next_due() is not None
        assert status_report(service.engine).appointments_by_status == {"booked": 1}
    finally:
        writer.rollback()
        writer.close()


def test_a_calendar_entry_is_updated_by_a_reschedule_and_withdrawn_by_a_cancellation(
    service, clock, settings
) -> None:  # type: ignore[no-untyped-def]
    def invite(reminder_id: int) -> Calendar:
        raw = (settings.outbox_dir / "email" / f"{reminder_id}.eml").read_bytes()
        message = email.message_from_bytes(raw, policy=default)
        assert isinstance(message, EmailMessage)
        [part] = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
        return Calendar.from_ical(part.get_payload(decode=True))

    service.importer.apply([(2, appointment())], source="t", label="t")
    service.dispatcher.dispatch_due()
    first = invite(load(service, "booked", "email")["id"])
    clock.advance(hours=1)
    moved = appointment(start=appointment().start + timedelta(days=2))
    service.importer.apply([(2, moved)], source="t", label="t")
    service.dispatcher.dispatch_due()  # the "your appointment has moved" email, with the entry
    with service.engine.connect() as conn:
        booked = (
            conn.execute(
                select(reminders.c.id)
                .where(reminders.c.step_id == "booked", reminders.c.channel == "email")
                .order_by(reminders.c.id)
            )
            .scalars()
            .all()
        )
    second = invite(booked[-1])
    clock.advance(hours=1)
    service.importer.apply(
        [(2, replace(moved, status=AppointmentStatus.CANCELLED))], source="t", label="t"
    )
    report = service.dispatcher.dispatch_due()
    assert report.by_status == {"sent": 1}
    cancel = invite(load(service, "cancelled", "email")["id"])
    events = [next(iter(c.walk("VEVENT"))) for c in (first, second, cancel)]
    assert len({str(e["UID"]) for e in events}) == 1  # one calendar entry throughout
    assert [int(e["SEQUENCE"]) for e in events] == [1, 2, 3]
    assert events[1].decoded("DTSTART") == moved.start
    assert [str(c["METHOD"]) for c in (first, second, cancel)] == ["REQUEST", "REQUEST", "CANCEL"]
    assert str(events[2]["STATUS"]) == "CANCELLED"


def test_do_not_contact_set_after_planning_stops_the_send(service, clock) -> None:  # type: ignore[no-untyped-def]
    service.importer.apply([(2, appointment())], source="t", label="t")
    claimed = service.dispatcher._claim()
    flagged = appointment(patient=patient(do_not_contact=True))
    service.importer.apply([(2, flagged)], source="t", label="t")
    prepared = service.dispatcher._preparation.prepare_all(claimed)
    assert {(p.status.value, p.reason) for p in prepared} == {  # type: ignore[union-attr]
        ("skipped", "the patient is marked do-not-contact")
    }


def test_a_language_without_templates_falls_back_whole_and_says_so(service, settings) -> None:  # type: ignore[no-untyped-def]
    french = appointment(patient=patient(language="fr-FR"))
    spanish = appointment(external_id="A2", patient=patient(external_id="P2", language="es-US"))
    service.importer.apply([(2, french), (3, spanish)], source="t", label="t")
    service.dispatcher.dispatch_due()
    with service.engine.connect() as conn:
        sms_rows = {
            r.appointment_id: r
            for r in conn.execute(
                select(reminders.c.id, reminders.c.appointment_id, reminders.c.language).where(
                    reminders.c.channel == "sms"
                )
            )
        }
        fallback = conn.execute(
            select(audit_log.c.detail).where(
                audit_log.c.event == "sent", audit_log.c.reminder_id == sms_rows[1].id
            )
        ).scalar_one()
    bodies = {
        appointment_id: json.loads((settings.outbox_dir / "sms" / f"{row.id}.json").read_text())[
            "body"
        ]
        for appointment_id, row in sms_rows.items()
    }
    assert "Thursday" in bodies[1] and "jeudi" not in bodies[1]  # English text, English dates
    assert json.loads(fallback)["language_fallback"] == "no fr-FR template: sent in en"
    assert "jueves" in bodies[2]  # Spanish text with Spanish dates
    assert sms_rows[2].language == "es"
