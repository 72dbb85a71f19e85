"""Twilio delivery status callbacks through the real HTTP app: signatures checked with the SDK's
own validator, statuses recorded in order, and an SMS that never arrives followed up."""

from __future__ import annotations

import shutil
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update
from twilio.request_validator import RequestValidator

from reminder_service import bootstrap
from reminder_service.bootstrap import Service
from reminder_service.settings import Settings, TwilioSettings
from reminder_service.store.tables import audit_log, reminders
from tests.factories import appointment, patient

TOKEN = "test-auth-token"
PUBLIC = "https://reminders.example.org"


@pytest.fixture
def twilio_settings(settings: Settings) -> Settings:
    twilio = TwilioSettings(
        account_sid="AC" + "0" * 32, auth_token=TOKEN, from_number="+15005550006"
    )
    return replace(settings, twilio=twilio, public_url=PUBLIC)


def build(settings: Settings, clock) -> tuple[Service, TestClient]:  # type: ignore[no-untyped-def]
    service = bootstrap.build(settings, clock)
    return service, TestClient(service.http_app())


def sent_sms(service: Service, step: str = "booked") -> Any:
    """Mark the step's SMS as sent by Twilio with a message SID, as the dispatcher would."""
    with service.engine.begin() as conn:
        conn.execute(
            update(reminders)
            .where(reminders.c.step_id == step, reminders.c.channel == "sms")
            .values(status="sent", provider_id="SM" + "a" * 32, sent_at=service.clock())
        )
        return (
            conn.execute(
                select(reminders).where(reminders.c.step_id == step, reminders.c.channel == "sms")
            )
            .mappings()
            .one()
        )


def callback(client: TestClient, reminder_id: int, params: dict[str, str], *, sign: bool = True,
             token: str = TOKEN):  # type: ignore[no-untyped-def]  # fmt: skip
    path = f"/webhooks/twilio/status?reminder={reminder_id}"
    headers = {}
    if sign:
        headers["X-Twilio-Signature"] = RequestValidator(token).compute_signature(
            PUBLIC + path, params
        )
    return client.post(path, data=params, headers=headers)


def status_of(service: Service, reminder_id: int) -> tuple[Any, Any]:
    with service.engine.connect() as conn:
        row = conn.execute(
            select(reminders.c.delivery_status, reminders.c.delivery_error).where(
                reminders.c.id == reminder_id
            )
        ).one()
    return row.delivery_status, row.delivery_error


def params(status: str, sid: str = "SM" + "a" * 32, **extra: str) -> dict[str, str]:
    return {"MessageSid": sid, "MessageStatus": status, "AccountSid": "AC" + "0" * 32, **extra}


def test_health_says_ok(twilio_settings, clock) -> None:  # type: ignore[no-untyped-def]
    service, client = build(twilio_settings, clock)
    try:
        assert client.get("/healthz").json() == {"status": "ok", "database": "ok"}
    finally:
        service.close()


def test_forged_and_unsigned_callbacks_get_403_and_change_nothing(twilio_settings, clock) -> None:  # type: ignore[no-untyped-def]
    service, client = build(twilio_settings, clock)
    try:
        service.importer.apply([(2, appointment())], source="t", label="t")
        row = sent_sms(service)
        assert callback(client, row["id"], params("delivered"), sign=False).status_code == 403
        forged = callback(client, row["id"], params("delivered"), token="not-the-token")
        assert forged.status_code == 403
        # A genuine signature over different parameters is a forgery too.
        signed = RequestValidator(TOKEN).compute_signature(
            f"{PUBLIC}/webhooks/twilio/status?reminder={row['id']}", params("queued")
        )
        tampered = client.post(
            f"/webhooks/twilio/status?reminder={row['id']}",
            data=params("delivered"),
            headers={"X-Twilio-Signature": signed},
        )
        assert tampered.status_code == 403
        assert status_of(service, row["id"]) == (None, None)
    finally:
        service.close()


def test_signed_callbacks_record_the_status_and_a_late_one_never_goes_back(
    twilio_settings, clock
) -> None:  # type: ignore[no-untyped-def]
    service, client = build(twilio_settings, clock)
    try:
        service.importer.apply([(2, appointment())], source="t", label="t")
        row = sent_sms(service)
        assert callback(client, row["id"], params("sent")).status_code == 200
        assert status_of(service, row["id"]) == ("sent", None)
        assert callback(client, row["id"], params("delivered")).status_code == 200
        assert callback(client, row["id"], params("queued")).status_code == 200  # out of order
        assert status_of(service, row["id"]) == ("delivered", None)
        with service.engine.connect() as conn:
            events = (
                conn.execute(select(audit_log.c.event).where(audit_log.c.reminder_id == row["id"]))
                .scalars()
                .all()
            )
        assert events == ["delivery_sent", "delivery_delivered"]
    finally:
        service.close()


def test_an_unknown_message_gets_200_and_changes_nothing(twilio_settings, clock) -> None:  # type: ignore[no-untyped-def]
    service, client = build(twilio_settings, clock)
    try:
        service.importer.apply([(2, appointment())], source="t", label="t")
        row = sent_sms(service)
        other = params("delivered", sid="SM" + "b" * 32)
        assert callback(client, row["id"], other).status_code == 200
        assert callback(client, 999_999, params("delivered")).status_code == 200
        assert status_of(service, row["id"]) == (None, None)
    finally:
        service.close()


def test_an_undelivered_sms_goes_by_email_when_the_step_has_no_email(
    twilio_settings, clock, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "config"
    shutil.copytree(twilio_settings.config_dir, config)
    protocol = config / "protocols" / "bone_marrow_biopsy.yaml"
    text = protocol.read_text()
    booked = text.index("- id: booked")
    channels = text.index("channels: {sms: always, email: always}", booked)
    protocol.write_text(text[:channels] + "channels: {sms: always}" + text[channels + 38 :])
    service, client = build(replace(twilio_settings, config_dir=config), clock)
    try:
        service.importer.apply([(2, appointment())], source="t", label="t")
        row = sent_sms(service)
        undelivered = params("undelivered", ErrorCode="30003")
        assert callback(client, row["id"], undelivered).status_code == 200
        assert status_of(service, row["id"]) == ("undelivered", "30003")
        with service.engine.connect() as conn:
            fallback = (
                conn.execute(select(reminders).where(reminders.c.fallback_for == row["id"]))
                .mappings()
                .one()
            )
        assert (fallback["channel"], fallback["template"], fallback["status"]) == (
            "email", "booked", "pending",
        )  # fmt: skip
        assert fallback["nominal_at"] == row["nominal_at"]
        # A second report of the same failure plans nothing more.
        assert callback(client, row["id"], params("failed", ErrorCode="30003")).status_code == 200
        with service.engine.connect() as conn:
            count = len(conn.execute(select(reminders.c.id).where(
                reminders.c.fallback_for == row["id"])).all())  # fmt: skip
        assert count == 1
    finally:
        service.close()


def test_when_no_channel_reaches_the_patient_staff_get_one_alert(twilio_settings, clock) -> None:  # type: ignore[no-untyped-def]
    service, client = build(twilio_settings, clock)
    try:
        no_email = appointment(patient=patient(email=None))
        service.importer.apply([(2, no_email)], source="t", label="t")
        row = sent_sms(service)
        assert (
            callback(client, row["id"], params("undelivered", ErrorCode="30005")).status_code == 200
        )
        with service.engine.connect() as conn:
            alerts = (
                conn.execute(select(reminders).where(reminders.c.channel == "staff"))
                .mappings()
                .all()
            )
        assert len(alerts) == 1
        assert "no channel reached the patient" in alerts[0]["alert"]
        assert "30005" in alerts[0]["alert"]
        # The alert goes out as an email to the clinic's staff address, without the message.
        report = service.dispatcher.dispatch_due()
        assert report.by_status.get("sent", 0) >= 1
        staff = list((twilio_settings.outbox_dir / "email").glob(f"{alerts[0]['id']}.eml"))
        assert len(staff) == 1
        raw = staff[0].read_text()
        assert "haematology.bookings@example.org" in raw and no_email.external_id in raw
        assert "Riverside Haematology: see you" not in raw  # never the patient's message
    finally:
        service.close()
