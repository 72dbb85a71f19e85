"""Inbound SMS through the real HTTP app, signed as Twilio signs them: STOP stops at once (even a
reminder due a second later), START brings texts back, HELP answers, 1 confirms, 2 asks staff for
a new time on the nearest appointment of a shared number (in its own words), free text is
acknowledged once per number per 12 hours and never to an opted-out number."""

from __future__ import annotations

import email
import logging
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from itertools import count
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from twilio.request_validator import RequestValidator

from reminder_service import bootstrap
from reminder_service.bootstrap import Service
from reminder_service.services.reporting import status_report
from reminder_service.settings import Settings, TwilioSettings
from reminder_service.store.tables import appointments, audit_log, inbound_messages, reminders
from tests.factories import appointment, local, patient

TOKEN = "test-auth-token"
PUBLIC = "https://reminders.example.org"
NUMBER = "+447700900123"
SIDS = count(1)


@pytest.fixture
def replying(settings: Settings, clock) -> Iterator[tuple[Service, TestClient]]:  # type: ignore[no-untyped-def]
    twilio = TwilioSettings(
        account_sid="AC" + "0" * 32, auth_token=TOKEN, from_number="+15005550006"
    )
    service = bootstrap.build(replace(settings, twilio=twilio, public_url=PUBLIC), clock)
    yield service, TestClient(service.http_app())
    service.close()


def text(client: TestClient, body: str, *, sid: str | None = None, sign: bool = True,
         phone: str = NUMBER) -> Any:  # fmt: skip
    params = {"MessageSid": sid or f"SM{next(SIDS):032d}", "From": phone, "To": "+15005550006",
              "Body": body, "AccountSid": "AC" + "0" * 32}  # fmt: skip
    headers = {}
    if sign:
        signature = RequestValidator(TOKEN).compute_signature(
            f"{PUBLIC}/webhooks/twilio/inbound", params
        )
        headers["X-Twilio-Signature"] = signature
    return client.post("/webhooks/twilio/inbound", data=params, headers=headers)


def answer_of(response: Any) -> str:
    assert response.status_code == 200
    return str(response.text)


def sms(service: Service, step: str) -> Any:
    with service.engine.connect() as conn:
        return (
            conn.execute(
                select(reminders).where(reminders.c.step_id == step, reminders.c.channel == "sms")
            )
            .mappings()
            .one()
        )


def test_stop_a_second_before_a_reminder_start_again_and_1_confirms(replying, clock) -> None:  # type: ignore[no-untyped-def]
    service, client = replying
    service.importer.apply([(2, appointment())], source="t", label="t")
    service.dispatcher.dispatch_due()
    assert sms(service, "booked")["status"] == "sent"
    # Medicines advice is due Thu 3 Dec 10:00; "Stop." arrives one second before.
    clock.now = local("Europe/London", 2026, 12, 3, 10, 0) - timedelta(seconds=1)
    service.materializer.materialize()
    assert "no more texts" in answer_of(text(client, "Stop."))
    assert "<Message>" not in answer_of(text(client, "STOP"))  # one confirmation at most
    clock.now = local("Europe/London", 2026, 12, 3, 10, 0)
    service.dispatcher.dispatch_due()
    medicines = sms(service, "medicines")
    assert medicines["status"] == "skipped"
    assert medicines["reason"] == "the number has opted out of SMS"
    # START brings texts back: the day-before message (Wed 9 Dec 18:00) goes by SMS again.
    assert "texts again" in answer_of(text(client, "start"))
    clock.now = local("Europe/London", 2026, 12, 9, 18, 0)
    service.materializer.materialize()
    service.dispatcher.dispatch_due()
    assert sms(service, "day_before")["status"] == "sent"
    assert "confirmed" in answer_of(text(client, "1"))
    with service.engine.connect() as conn:
        assert conn.execute(select(appointments.c.confirmed_at)).scalar_one() == clock.now
    assert status_report(service.engine).replies == {
        "confirmed": 1, "new_time_requested": 0, "free_text": 0,
    }  # fmt: skip


def test_help_answers_with_the_clinic_and_its_phone(replying) -> None:  # type: ignore[no-untyped-def]
    _, client = replying
    answer = answer_of(text(client, "HELP"))
    assert "Riverside Haematology" in answer and "020 7946 0123" in answer


def test_an_unsigned_or_forged_message_is_refused_and_a_repeat_changes_nothing(replying) -> None:  # type: ignore[no-untyped-def]
    service, client = replying
    service.importer.apply([(2, appointment())], source="t", label="t")
    assert text(client, "STOP", sign=False).status_code == 403
    assert "no more texts" in answer_of(text(client, "STOP", sid="SM" + "9" * 32))
    text(client, "START")
    # Twilio posting the same STOP again (a retry) does not opt the number out again.
    assert "<Message>" not in answer_of(text(client, "STOP", sid="SM" + "9" * 32))
    with service.engine.connect() as conn:
        kinds = (
            conn.execute(select(inbound_messages.c.kind).order_by(inbound_messages.c.id))
            .scalars()
            .all()
        )
    assert kinds == ["opt_out", "opt_in"]


def test_on_a_shared_number_2_applies_to_the_nearest_appointment_and_alerts_staff(
    replying, clock
) -> None:  # type: ignore[no-untyped-def]
    service, client = replying
    later = appointment(external_id="LATER", patient=patient(external_id="P2", first_name="Other"),
                        start=appointment().start + timedelta(days=5))  # fmt: skip
    service.importer.apply([(2, later), (3, appointment())], source="t", label="t")
    assert "new time" in answer_of(text(client, "2"))
    with service.engine.connect() as conn:
        requested = dict(
            conn.execute(
                select(appointments.c.external_id, appointments.c.new_time_requested_at)
            ).all()
        )
        alerts = (
            conn.execute(select(reminders.c.alert).where(reminders.c.channel == "staff"))
            .scalars()
            .all()
        )
    assert requested == {"A1": clock.now, "LATER": None}
    wording = (
        "T. P. (mobile ending 123) asked to change their appointment on Thu 10 Dec 2026 09:30 "
        "GMT; please call them"
    )
    assert alerts == [wording]
    text(client, "Can I bring my daughter?")
    with service.engine.connect() as conn:
        kept = conn.execute(select(inbound_messages.c.body, inbound_messages.c.kind)).all()
    assert ("Can I bring my daughter?", "other") in kept


def test_the_staff_email_for_a_2_asks_them_to_call_and_never_quotes_a_message(
    replying, settings, caplog
) -> None:  # type: ignore[no-untyped-def]
    service, client = replying
    caplog.set_level(logging.DEBUG)
    service.importer.apply([(2, appointment())], source="t", label="t")
    text(client, "2")
    service.dispatcher.dispatch_due()
    with service.engine.connect() as conn:
        alert = (
            conn.execute(select(reminders).where(reminders.c.channel == "staff")).mappings().one()
        )
        audit = conn.execute(select(audit_log.c.reason)).scalars().all()
    assert (alert["status"], alert["template"]) == ("sent", "new_time_request")
    message = email.message_from_bytes(
        (settings.outbox_dir / "email" / f"{alert['id']}.eml").read_bytes()
    )
    assert message["To"] == "haematology.bookings@example.org"
    assert message["Subject"] == (
        "Riverside Haematology: a patient asks to change their appointment"
    )
    plain = next(p for p in message.walk() if p.get_content_type() == "text/plain")
    body = plain.get_payload(decode=True).decode()
    assert body.startswith(
        "T. P. (mobile ending 123) asked to change their appointment on Thu 10 Dec 2026 09:30 "
        "GMT; please call them."
    )
    assert "could not be delivered" not in body and "reached the patient" not in body
    assert "+447700900123" not in body and "Test Patient" not in body
    assert any("asked to change their appointment" in reason for reason in audit)
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert "900123" not in logged and "Test" not in logged


def test_free_text_is_acknowledged_once_per_number_per_12_hours(replying, clock, caplog) -> None:  # type: ignore[no-untyped-def]
    service, client = replying
    caplog.set_level(logging.DEBUG)
    service.importer.apply([(2, appointment())], source="t", label="t")
    first = answer_of(text(client, "Can I bring my daughter?"))
    assert "we have passed your message to the team" in first
    assert "For anything urgent call 020 7946 0999 (24 hours) or 999" in first
    assert "<Message>" not in answer_of(text(client, "And is parking free?"))
    clock.advance(hours=11, minutes=59)
    assert "<Message>" not in answer_of(text(client, "Hello?"))
    other = answer_of(text(client, "Who is this?", phone="+447700900456"))
    assert "passed your message" in other  # each number has its own interval
    clock.advance(minutes=1)
    assert "passed your message" in answer_of(text(client, "Thanks"))
    # A keyword or code in between is answered as always and does not count.
    assert "confirmed" in answer_of(text(client, "1"))
    with service.engine.connect() as conn:
        rows = conn.execute(
            select(inbound_messages.c.kind, inbound_messages.c.answer,
                   inbound_messages.c.handled_by).order_by(inbound_messages.c.id)
        ).all()  # fmt: skip
    assert rows == [
        ("other", "acknowledged", None), ("other", None, None), ("other", None, None),
        ("other", "acknowledged", None), ("other", "acknowledged", None),
        ("confirm", "confirmed", "automatic"),
    ]  # fmt: skip
    logged = " ".join(record.getMessage() for record in caplog.records)
    assert "daughter" not in logged and "parking" not in logged and "900123" not in logged


def test_an_opted_out_number_gets_no_answer_but_help_and_its_replies_still_count(
    replying, clock
) -> None:  # type: ignore[no-untyped-def]
    service, client = replying
    service.importer.apply([(2, appointment())], source="t", label="t")
    assert "no more texts" in answer_of(text(client, "STOP"))
    assert "<Message>" not in answer_of(text(client, "Sorry, I meant to ask about parking"))
    assert "<Message>" not in answer_of(text(client, "1"))
    assert "<Message>" not in answer_of(text(client, "2"))
    assert "Call 020 7946 0123" in answer_of(text(client, "HELP"))  # carriers require it
    with service.engine.connect() as conn:
        recorded = conn.execute(
            select(appointments.c.confirmed_at, appointments.c.new_time_requested_at)
        ).one()
        staff = conn.execute(select(reminders.c.id).where(reminders.c.channel == "staff")).all()
        answers = conn.execute(
            select(inbound_messages.c.answer).order_by(inbound_messages.c.id)
        ).scalars().all()  # fmt: skip
    assert recorded == (clock.now, clock.now)
    assert len(staff) == 1  # staff still hear about the 2
    assert answers == ["opted_out", None, None, None, "help"]
    assert "texts again" in answer_of(text(client, "START"))
    assert "passed your message" in answer_of(text(client, "Now, about parking"))


def test_a_spanish_speaking_patient_is_acknowledged_in_spanish(replying) -> None:  # type: ignore[no-untyped-def]
    service, client = replying
    spanish = appointment(patient=patient(language="es-ES"))
    service.importer.apply([(2, spanish)], source="t", label="t")
    answer = answer_of(text(client, "Hola, tengo una pregunta"))
    assert "hemos pasado su mensaje al equipo" in answer and "020 7946 0999" in answer
    assert "Responda START" in answer_of(text(client, "STOP"))


def test_stop_from_a_patient_with_no_email_alerts_staff_at_once_for_critical_steps_to_come(
    replying, clock
) -> None:  # type: ignore[no-untyped-def]
    """Texts were their only channel: the steps still to come that matter reach no one now, so
    the clinic hears of each at once (and once), not on the day it was due."""
    service, client = replying
    no_email = appointment(patient=patient(email=None))
    service.importer.apply([(2, no_email)], source="t", label="t")
    service.dispatcher.dispatch_due()
    clock.now = local("Europe/London", 2026, 12, 7, 12, 0)  # medicines sent; escort on the 8th
    service.materializer.materialize()
    service.dispatcher.dispatch_due()

    def alerts() -> list[tuple[str, str]]:
        with service.engine.connect() as conn:
            query = select(reminders.c.step_id, reminders.c.alert, reminders.c.due_at)
            rows = conn.execute(query.where(reminders.c.channel == "staff")).all()
        return sorted((r.step_id, r.alert) for r in rows if r.due_at == clock.now)

    assert alerts() == []
    text(client, "STOP")
    told = alerts()
    assert [step for step, _ in told] == ["after_care", "day_before", "escort", "next_day"]
    assert told[0][1] == (
        "after_care: a critical message reaches no one; please phone the patient "
        "(sms: the number has opted out; email: no email address)"
    )
    text(client, "START")
    text(client, "STOP")  # again: the same alerts are not raised twice
    assert alerts() == told


def test_stop_from_a_patient_with_an_email_alerts_no_one(replying, clock) -> None:  # type: ignore[no-untyped-def]
    service, client = replying
    service.importer.apply([(2, appointment())], source="t", label="t")
    text(client, "STOP")
    with service.engine.connect() as conn:
        staff = conn.execute(select(reminders.c.id).where(reminders.c.channel == "staff")).all()
    assert staff == []  # the email still reaches them
