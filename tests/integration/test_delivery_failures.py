"""The dispatcher under provider failures, with a scripted channel: what is retried, what is
not, deadlines, opt-outs, fallbacks, staff alerts, and sends that do not wait for each other."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta
from typing import Any

from sqlalchemy import select

from reminder_service import bootstrap
from reminder_service.bootstrap import Service
from reminder_service.channels.base import OutgoingEmail, OutgoingSms
from reminder_service.domain.failures import Failure, FailureKind
from reminder_service.services.dispatching import DispatchService
from reminder_service.store.tables import reminders, sms_opt_outs
from tests.factories import appointment, config_without_sms_caps, local, patient
from tests.fakes import Script, ScriptedChannel


def dispatcher(service: Service, channel: ScriptedChannel) -> DispatchService:
    return DispatchService(
        service.engine, service.catalog, service.renderer, channel, channel, service.clock,
        failures=service.catalog.failures,
    )  # fmt: skip


def row(service: Service, step: str, channel: str) -> Any:
    with service.engine.connect() as conn:
        return (
            conn.execute(
                select(reminders).where(reminders.c.step_id == step, reminders.c.channel == channel)
            )
            .mappings()
            .one()
        )


def sms_fails(code: str, status: int = 400) -> Script:
    def script(message: OutgoingSms | OutgoingEmail) -> Any:
        if isinstance(message, OutgoingSms):
            return Failure("twilio", FailureKind.HTTP, status=status, code=code)
        return None

    return script


def test_a_permanent_error_is_never_retried(service, clock) -> None:  # type: ignore[no-untyped-def]
    service.importer.apply([(2, appointment())], source="t", label="t")
    channel = ScriptedChannel(sms_fails("21211"), clock)
    sender = dispatcher(service, channel)
    try:
        assert sender.dispatch_due().by_status == {"failed": 1, "sent": 1}
        failed = row(service, "booked", "sms")
        assert failed["status"] == "failed" and failed["attempts"] == 1
        assert "21211" in failed["reason"] and "not a valid phone number" in failed["reason"]
        clock.advance(hours=2)
        assert sender.dispatch_due().claimed == 0
        assert [a for a in channel.attempts if a[1] == "sms"] == [
            ("booked", "sms", clock.now - timedelta(hours=2))
        ]
    finally:
        sender.close()


def test_an_unsubscribed_recipient_is_marked_opted_out_and_gets_no_more_sms(service, clock) -> None:  # type: ignore[no-untyped-def]
    service.importer.apply([(2, appointment())], source="t", label="t")
    channel = ScriptedChannel(sms_fails("21610"), clock)
    sender = dispatcher(service, channel)
    try:
        sender.dispatch_due()
        with service.engine.connect() as conn:
            opted = conn.execute(select(sms_opt_outs)).mappings().all()
        assert [o["phone"] for o in opted] == ["+447700900123"]
        # The booking email covers the step: no fallback, no staff alert.
        with service.engine.connect() as conn:
            follow_ups = conn.execute(
                select(reminders.c.id).where(reminders.c.fallback_for.is_not(None))
            ).all()
        assert follow_ups == []
        # A week later the medicines SMS is due: it is not even tried.
        service.materializer.materialize()
        clock.now = local("Europe/London", 2026, 12, 3, 10, 0)
        service.materializer.materialize()
        sender.dispatch_due()
        medicines = row(service, "medicines", "sms")
        assert medicines["status"] == "skipped"
        assert medicines["reason"] == "the number has opted out of SMS"
        assert ("medicines", "sms") not in {(a[0], a[1]) for a in channel.attempts}
        assert row(service, "medicines", "email")["status"] == "sent"
    finally:
        sender.close()


def test_temporary_errors_are_retried_with_backoff_until_they_succeed(service, clock) -> None:  # type: ignore[no-untyped-def]
    service.importer.apply([(2, appointment())], source="t", label="t")
    answers = iter(
        [Failure("twilio", FailureKind.HTTP, status=500), Failure("twilio", FailureKind.TIMEOUT)]
    )

    def script(message: OutgoingSms | OutgoingEmail) -> Any:
        return next(answers, None) if isinstance(message, OutgoingSms) else None

    channel = ScriptedChannel(script, clock)
    sender = dispatcher(service, channel)
    try:
        sender.dispatch_due()
        first = row(service, "booked", "sms")
        assert first["status"] == "pending" and "retry 2" in first["reason"]
        wait = first["due_at"] - clock.now
        assert timedelta(seconds=15) <= wait <= timedelta(seconds=45)  # 30 s with jitter
        assert sender.dispatch_due().claimed == 0  # not before its time
        clock.now = first["due_at"]
        sender.dispatch_due()
        second = row(service, "booked", "sms")
        assert second["status"] == "pending" and second["due_at"] - clock.now >= timedelta(
            seconds=30
        )
        clock.now = second["due_at"]
        sender.dispatch_due()
        done = row(service, "booked", "sms")
        assert (done["status"], done["attempts"]) == ("sent", 3)
    finally:
        sender.close()


def test_retries_never_go_past_the_deadline(settings, clock, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Several texts fall due at once here: the caps would hold back all but one.
    service = bootstrap.build(
        replace(settings, config_dir=config_without_sms_caps(tmp_path)), clock
    )
    appt = appointment()
    service.importer.apply([(2, appt)], source="t", label="t")
    channel = ScriptedChannel(sms_fails("", status=503), clock)
    sender = dispatcher(service, channel)
    try:
        clock.now = appt.start - timedelta(minutes=3)  # day_before is overdue, start is near
        service.materializer.materialize()
        for _ in range(20):
            sender.dispatch_due()
            due = sender.next_due()
            if due is None or due > appt.start:
                break
            clock.now = max(clock.now, due)
        day_before = row(service, "day_before", "sms")
        assert day_before["status"] == "failed"
        assert "no retry left before the deadline" in day_before["reason"]
        assert all(
            when <= appt.start for step, ch, when in channel.attempts if step == "day_before"
        )
    finally:
        sender.close()
        service.close()


def test_when_every_channel_fails_staff_get_one_alert(service, clock) -> None:  # type: ignore[no-untyped-def]
    service.importer.apply([(2, appointment())], source="t", label="t")

    def script(message: OutgoingSms | OutgoingEmail) -> Any:
        if message.to == "haematology.bookings@example.org":
            return None  # the staff address works
        if isinstance(message, OutgoingSms):
            return Failure("twilio", FailureKind.HTTP, status=400, code="21614")
        return Failure("smtp", FailureKind.SMTP, status=550, detail="mailbox unavailable")

    channel = ScriptedChannel(script, clock)
    sender = dispatcher(service, channel)
    try:
        sender.dispatch_due()  # both booking messages fail; the alert is planned
        sender.dispatch_due()  # and sent
        alert = row(service, "booked", "staff")
        assert alert["status"] == "sent"
        assert "no channel reached the patient" in alert["alert"]
        assert "21614" in alert["alert"] and "550" in alert["alert"]  # each channel's reason
        staff_sends = [a for a in channel.attempts if a[1] == "email" and a[0] == "booked"]
        assert len(staff_sends) == 2  # the patient's email, then the one alert
        preview = service.previewer().preview("A1")
        [line] = [line for line in preview.lines if line.channel == "staff"]
        assert line.reason.startswith("alert to clinic staff: booked: no channel reached")
        assert line.body is None
    finally:
        sender.close()


def test_one_slow_send_does_not_hold_up_the_others(service, clock) -> None:  # type: ignore[no-untyped-def]
    others = [
        appointment(external_id=f"B{i}", patient=patient(external_id=f"Q{i}")) for i in range(5)
    ]
    service.importer.apply(enumerate([appointment(), *others], 2), source="t", label="t")
    seen: dict[str, int] = {}

    def sent_count() -> int:
        with service.engine.connect() as conn:
            rows = conn.execute(select(reminders.c.status)).scalars().all()
        return sum(1 for s in rows if s == "sent")

    async def slow() -> None:
        # Wait (bounded) until every other message is recorded as sent. If sends waited for
        # each other this would never happen, and the bound would end it with a wrong count.
        for _ in range(400):
            seen["sent"] = await asyncio.to_thread(sent_count)
            if seen["sent"] == 11:
                return None
            await asyncio.sleep(0.025)
        return None

    def script(message: OutgoingSms | OutgoingEmail) -> Any:
        if message.appointment_id == "A1" and isinstance(message, OutgoingSms):
            return slow()
        return None

    channel = ScriptedChannel(script, clock)
    sender = dispatcher(service, channel)
    try:
        assert sender.dispatch_due().by_status == {"sent": 12}
        assert seen["sent"] == 11
    finally:
        sender.close()
