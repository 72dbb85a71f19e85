"""Confirmation deadlines with the clock moving across them: one alert per clinic listing every
appointment whose deadline passed unconfirmed, each listed once (a second run, a restart, two
processes at once), never a confirmed (by reply through the webhook, or by staff), cancelled or
unsedated one; one booked after its deadline is listed at the next check."""

from __future__ import annotations

import email
import logging
import threading
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from email.message import Message
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from reminder_service import bootstrap
from reminder_service.bootstrap import Service
from reminder_service.domain.appointment import Tristate
from reminder_service.domain.confirmation import latest_anchor_due
from reminder_service.services.confirmations import CheckReport
from reminder_service.settings import Settings, TwilioSettings
from reminder_service.store import confirmations as store_confirmations
from reminder_service.store.tables import appointments, reminders
from tests.factories import appointment, local, patient
from tests.integration.test_replies import PUBLIC, TOKEN, answer_of, text


@pytest.fixture
def clinic_service(settings: Settings, clock) -> Iterator[tuple[Service, TestClient]]:  # type: ignore[no-untyped-def]
    twilio = TwilioSettings(
        account_sid="AC" + "0" * 32, auth_token=TOKEN, from_number="+15005550006"
    )
    service = bootstrap.build(replace(settings, twilio=twilio, public_url=PUBLIC), clock)
    yield service, TestClient(service.http_app())
    service.close()


def booking(external_id: str, n: int, **changes: Any) -> Any:
    person = patient(external_id=f"P{external_id}", first_name="Test", last_name=f"Patient{n}",
                     mobile=f"+4477009001{n:02d}")  # fmt: skip
    return appointment(external_id=external_id, patient=person, **changes)


def staff_emails(service: Service, settings: Settings) -> dict[str, Message]:
    """The confirmation alerts sent, by recipient (the latest of each)."""
    with service.engine.connect() as conn:
        ids = conn.execute(
            select(reminders.c.id)
            .where(reminders.c.channel == "staff", reminders.c.template == "unconfirmed")
            .where(reminders.c.status == "sent")
            .order_by(reminders.c.id)
        ).scalars()
        found = {}
        for reminder_id in ids:
            path = settings.outbox_dir / "email" / f"{reminder_id}.eml"
            message = email.message_from_bytes(path.read_bytes())
            found[message["To"]] = message
    return found


def text_of(message: Message) -> str:
    plain = next(p for p in message.walk() if p.get_content_type() == "text/plain")
    return str(plain.get_payload(decode=True).decode())


def test_unconfirmed_appointments_are_listed_once_per_clinic_after_their_deadline(
    clinic_service, settings, clock, caplog
) -> None:  # type: ignore[no-untyped-def]
    service, client = clinic_service
    caplog.set_level(logging.DEBUG)
    start = local("Europe/London", 2026, 12, 10, 9, 30)
    chicago = patient(external_id="PL1", first_name="Lake", last_name="Side",
                      mobile="+447700900150", timezone="America/Chicago")  # fmt: skip
    service.importer.apply(
        enumerate(
            [
                booking("A1", 1),
                booking("A2", 2, sedation=Tristate.UNKNOWN, start=start + timedelta(hours=4.5)),
                booking("A3", 3),  # confirms by replying 1
                booking("A4", 4),  # cancelled
                booking("A5", 5, sedation=Tristate.NO),  # no confirmation needed
                booking("A6", 6),  # staff confirm it after a call
                appointment(external_id="L1", clinic_id="lakeside", patient=chicago,
                            start=local("America/Chicago", 2026, 12, 10, 9, 0)),
            ],
            2,
        ),
        source="t",
        label="t",
    )  # fmt: skip
    assert "confirmed" in answer_of(text(client, "1", phone="+447700900103"))
    service.importer.cancel("A4", source="t")
    service.confirmations.confirm("A6", "nurse.jones")
    assert service.confirmations.check() == CheckReport()

    # A1's deadline is Tue 8 Dec 09:30 London: a minute before, nothing; at it, A1 alone.
    clock.now = local("Europe/London", 2026, 12, 8, 9, 29)
    assert service.confirmations.check() == CheckReport()
    clock.now = local("Europe/London", 2026, 12, 8, 9, 30)
    assert service.confirmations.check() == CheckReport(appointments=1, alerts=1)
    # Later: A2 (09:30 + 4.5 h) and Lakeside's L1 (09:00 Chicago = 15:00 London) come due.
    clock.now = local("Europe/London", 2026, 12, 8, 16, 0)
    assert service.confirmations.check() == CheckReport(appointments=2, alerts=2)
    assert service.confirmations.check() == CheckReport()  # idempotent
    restarted = bootstrap.build(settings, clock)  # a restart lists nothing again
    try:
        assert restarted.confirmations.check() == CheckReport()
    finally:
        restarted.close()

    service.dispatcher.dispatch_due()
    sent = staff_emails(service, settings)
    assert set(sent) == {"haematology.bookings@example.org", "hematology.scheduling@example.org"}
    lakeside = sent["hematology.scheduling@example.org"]
    assert lakeside["Subject"] == "Lakeside Hematology: 1 appointment not confirmed, please phone"
    assert "- L1: Thu 10 Dec 2026 09:00 CST, L. S. (mobile ending 150); confirmation was due " \
           "by Tue 08 Dec 2026 09:00 CST" in text_of(lakeside)  # fmt: skip
    riverside = text_of(sent["haematology.bookings@example.org"])
    # One alert per check: the 09:30 one lists A1, the 16:00 one A2; the others never appear.
    assert "A2: Thu 10 Dec 2026 14:00 GMT, T. P. (mobile ending 102)" in riverside
    for other in ("A1:", "A3", "A4", "A5", "A6", "+4477"):
        assert other not in riverside
    with service.engine.connect() as conn:
        listed = dict(conn.execute(
            select(appointments.c.external_id, appointments.c.confirmation_alerted_at)
        ).all())  # fmt: skip
        riverside_alerts = conn.execute(
            select(reminders.c.alert).where(reminders.c.template == "unconfirmed")
            .where(reminders.c.status == "sent").order_by(reminders.c.id)
        ).scalars().all()  # fmt: skip
    assert {k for k, v in listed.items() if v is not None} == {"A1", "A2", "L1"}
    assert [a.split(":")[0] for a in riverside_alerts if not a.startswith("L1")] == ["A1", "A2"]

    # Booked after its deadline (starts tomorrow): listed at the next check, alone.
    clock.now = local("Europe/London", 2026, 12, 8, 17, 0)
    service.importer.apply([(9, booking("A7", 7, start=clock.now + timedelta(hours=18)))],
                           source="t", label="t")  # fmt: skip
    assert service.confirmations.check() == CheckReport(appointments=1, alerts=1)

    preview = service.previewer().preview("A1")
    assert preview.confirmation is not None
    assert preview.confirmation.required_by == local("Europe/London", 2026, 12, 8, 9, 30)
    assert preview.confirmation.staff_alerted_at == local("Europe/London", 2026, 12, 8, 9, 30)
    by_staff = service.previewer().preview("A6").confirmation
    assert by_staff is not None and by_staff.confirmed_by == "nurse.jones"
    by_reply = service.previewer().preview("A3").confirmation
    assert by_reply is not None and by_reply.confirmed_by == "patient (SMS)"
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert "Patient" not in logged and "9001" not in logged


def test_two_processes_checking_at_once_list_each_appointment_once(settings, clock) -> None:  # type: ignore[no-untyped-def]
    first = bootstrap.build(settings, clock)
    second = bootstrap.build(settings, clock)
    try:
        first.importer.apply(
            enumerate([booking(f"B{n}", n) for n in range(1, 6)], 2), source="t", label="t"
        )
        clock.now = local("Europe/London", 2026, 12, 8, 12, 0)
        barrier = threading.Barrier(2)
        reports: list[CheckReport] = []

        def check(service: Service) -> None:
            barrier.wait()
            reports.append(service.confirmations.check())

        threads = [threading.Thread(target=check, args=(s,)) for s in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert sorted(reports, key=lambda r: r.alerts) == [
            CheckReport(),
            CheckReport(appointments=5, alerts=1),
        ]
        with first.engine.connect() as conn:
            [alert] = conn.execute(
                select(reminders.c.alert).where(reminders.c.template == "unconfirmed")
            ).scalars().all()  # fmt: skip
        assert [line.split(":")[0] for line in alert.splitlines()] == [
            "B1", "B2", "B3", "B4", "B5"
        ]  # fmt: skip
    finally:
        first.close()
        second.close()


def test_a_moved_appointment_must_be_confirmed_again(clinic_service, clock) -> None:  # type: ignore[no-untyped-def]
    service, _ = clinic_service
    first = booking("M1", 1)
    service.importer.apply([(2, first)], source="t", label="t")
    service.confirmations.confirm("M1", "nurse.jones")
    # Re-sent unchanged, or with other details changed: still confirmed.
    service.importer.apply([(2, replace(first, location="Room 9"))], source="t", label="t")
    assert service.previewer().preview("M1").confirmation.confirmed_at is not None
    moved = replace(first, location="Room 9", start=first.start + timedelta(days=1))
    assert service.importer.apply([(2, moved)], source="t", label="t").rescheduled == 1
    confirmation = service.previewer().preview("M1").confirmation
    assert (confirmation.confirmed_at, confirmation.confirmed_by) == (None, None)
    assert confirmation.required_by == moved.start - timedelta(hours=48)


def test_only_appointments_meeting_the_condition_are_read(service, clock) -> None:  # type: ignore[no-untyped-def]
    # Every check runs this query; unsedated appointments near their deadline need no call, and
    # reading each of them every few minutes held them all in memory at once.
    start = local("Europe/London", 2026, 12, 10, 9, 30)
    service.importer.apply(
        enumerate([booking("S1", 1, sedation=Tristate.YES, start=start),
                   booking("S2", 2, sedation=Tristate.UNKNOWN, start=start),
                   booking("N1", 3, sedation=Tristate.NO, start=start)]),
        source="t", label="t",
    )  # fmt: skip
    rule = next(p.confirmation for p in service.catalog.protocols if p.confirmation)
    now = local("Europe/London", 2026, 12, 9, 9, 0)
    latest = [("bone_marrow_biopsy", *latest_anchor_due(rule, now), rule.condition)]
    with service.engine.connect() as conn:
        read = [
            row["external_id"] for row in store_confirmations.unlisted_candidates(conn, latest, now)
        ]
    assert read == ["S1", "S2"]
