"""The whole path through Twilio's API: the real dispatcher and the real SDK against a local
server that speaks Twilio's Messages API, failing and throttling; then Twilio's signed status
callbacks to our HTTP app."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from reminder_service import bootstrap
from reminder_service.bootstrap import Service
from reminder_service.settings import Settings, TwilioSettings
from reminder_service.store.tables import audit_log, reminders, sms_opt_outs
from tests.factories import appointment, config_without_sms_caps, local, patient
from tests.servers.twilio_api import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    Behaviour,
    TwilioApiServer,
    serve_in_thread,
    sign_callback,
    status_callback_params,
)

PUBLIC = "https://reminders.example.org"
REJECTED = "+447700900666"
UNSUBSCRIBED = "+447700900610"


@pytest.fixture
def server(clock) -> Iterator[TwilioApiServer]:  # type: ignore[no-untyped-def]
    behaviour = Behaviour(
        latency_ms=20, jitter_ms=10, fail_500=0.2, throttle_429=0.1, seed=5,
        reject={REJECTED: 21211, UNSUBSCRIBED: 21610},
    )  # fmt: skip
    with serve_in_thread(behaviour, clock=clock) as running:  # its messages dated as ours
        yield running


@pytest.fixture
def twilio_service(
    settings: Settings, clock, server: TwilioApiServer, tmp_path
) -> Iterator[Service]:  # type: ignore[no-untyped-def]
    twilio = TwilioSettings(
        account_sid=ACCOUNT_SID,
        auth_token=AUTH_TOKEN,
        from_number=FROM_NUMBER,
        api_base_url=server.base_url,
        timeout_seconds=5,
    )
    # Caps off: these tests send several texts to one patient in a day on purpose.
    configured = replace(
        settings, sms_channel="twilio", twilio=twilio, public_url=PUBLIC, sms_rate_limit=1000,
        config_dir=config_without_sms_caps(tmp_path),
    )  # fmt: skip
    service = bootstrap.build(configured, clock)
    yield service
    service.close()


def sms_only(count: int) -> list[tuple[int, object]]:
    made = []
    for i in range(count):
        number = {0: REJECTED, 1: UNSUBSCRIBED}.get(i, f"+447700900{100 + i:03d}")
        person = patient(external_id=f"P{i}", mobile=number, email=None)
        made.append((i + 2, appointment(external_id=f"A{i}", patient=person)))
    return made


def test_every_message_is_accepted_exactly_once_through_failures_and_throttling(
    twilio_service: Service, server: TwilioApiServer, clock
) -> None:  # type: ignore[no-untyped-def]
    service = twilio_service
    service.importer.apply(sms_only(120), source="t", label="t")
    for _ in range(30):
        service.dispatcher.dispatch_due()
        due = service.dispatcher.next_due()
        if due is None or due > clock.now + timedelta(days=1):
            break
        clock.now = due + timedelta(minutes=2)  # past this retry and those jittered around it
    stats = server.stats()
    accepted = stats["accepted_per_callback"]
    assert stats["status_codes"].get("500", 0) > 0 and stats["status_codes"].get("429", 0) > 0
    # 118 numbers take messages; each booking SMS accepted exactly once.
    assert len(accepted) == 118 and set(accepted.values()) == {1}
    for url in accepted:
        assert url.startswith(f"{PUBLIC}/webhooks/twilio/status?reminder=")
    # A permanent error ends the tries for that message (a random 500 before it was retried).
    for number in (REJECTED, UNSUBSCRIBED):
        answers = [r.status for r in server.requests() if r.to == number]
        assert answers[-1] == 400 and answers.count(400) == 1 and set(answers) <= {400, 429, 500}
    with service.engine.connect() as conn:
        statuses = dict(
            conn.execute(
                select(reminders.c.status, func.count())
                .where(reminders.c.channel == "sms")
                .group_by(reminders.c.status)
            ).all()
        )
        opted_out = conn.execute(select(sms_opt_outs.c.phone)).scalars().all()
        alerts = conn.execute(
            select(func.count()).select_from(reminders).where(reminders.c.channel == "staff")
        ).scalar_one()
    assert statuses == {"sent": 118, "failed": 2}
    assert opted_out == [UNSUBSCRIBED]  # 21610 marks the number; 21211 does not
    assert alerts == 2  # no email to fall back to: the clinic is told, once each


def test_a_signed_callback_from_twilio_updates_the_reminder(
    twilio_service: Service, server: TwilioApiServer
) -> None:
    service = twilio_service
    server.behaviour.fail_500 = server.behaviour.throttle_429 = 0.0
    service.importer.apply(sms_only(3)[2:], source="t", label="t")
    assert service.dispatcher.dispatch_due().by_status == {"sent": 1}
    [message] = server.messages()
    url = message["StatusCallback"]
    client = TestClient(service.http_app())
    path = urlsplit(url).path + "?" + urlsplit(url).query
    for status in ("sent", "delivered"):
        params = status_callback_params(message, status)
        answer = client.post(
            path, data=params, headers={"X-Twilio-Signature": sign_callback(url, params)}
        )
        assert answer.status_code == 200
    forged = status_callback_params(message, "failed")
    answer = client.post(
        path, data=forged, headers={"X-Twilio-Signature": sign_callback(url, forged, "0" * 32)}
    )
    assert answer.status_code == 403
    with service.engine.connect() as conn:
        row = conn.execute(
            select(reminders.c.provider_id, reminders.c.delivery_status).where(
                reminders.c.channel == "sms"
            )
        ).one()
    assert row.provider_id == message["sid"] and row.delivery_status == "delivered"


def test_nothing_goes_out_after_its_deadline_however_many_retries(
    twilio_service: Service, server: TwilioApiServer, clock
) -> None:  # type: ignore[no-untyped-def]
    service = twilio_service
    server.behaviour.fail_500 = 1.0  # Twilio is down
    appt = appointment(patient=patient(email=None))
    service.importer.apply([(2, appt)], source="t", label="t")
    clock.now = local("Europe/London", 2026, 12, 9, 18, 0)  # the day-before message is due
    service.materializer.materialize()
    for _ in range(40):
        service.dispatcher.dispatch_due()
        due = service.dispatcher.next_due()
        if due is None:
            break
        clock.now = max(clock.now, due)
    day_before = [r for r in server.requests() if r.to == appt.patient.mobile]
    assert day_before  # it was tried, and kept being retried while there was time
    with service.engine.connect() as conn:
        row = (
            conn.execute(
                select(reminders).where(
                    reminders.c.step_id == "day_before", reminders.c.channel == "sms"
                )
            )
            .mappings()
            .one()
        )
    assert row["status"] in {"failed", "skipped"}
    assert row["due_at"] <= appt.start  # no retry was ever planned past the start
    with service.engine.connect() as conn:
        attempts = (
            conn.execute(select(audit_log.c.at).where(audit_log.c.reminder_id == row["id"]))
            .scalars()
            .all()
        )
    assert len(attempts) >= 3 and max(attempts) <= appt.start


LOST = "+447700900444"  # Twilio takes the message; its answer never reaches us


@pytest.fixture
def impatient_service(
    settings: Settings, clock, server: TwilioApiServer, tmp_path
) -> Iterator[Service]:  # type: ignore[no-untyped-def]
    """Gives up on Twilio's answer after 0.3 s, so a lost answer is quick to test."""
    server.behaviour.fail_500 = server.behaviour.throttle_429 = 0.0
    server.behaviour.lose_answer = {LOST}
    twilio = TwilioSettings(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, from_number=FROM_NUMBER,
        api_base_url=server.base_url, timeout_seconds=0.3,
    )  # fmt: skip
    configured = replace(
        settings, sms_channel="twilio", twilio=twilio, public_url=PUBLIC,
        config_dir=config_without_sms_caps(tmp_path),
    )  # fmt: skip
    service = bootstrap.build(configured, clock)
    yield service
    service.close()


def _lost_booking_text(service: Service, clock) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Import one booking for the LOST number and try its text once; returns the reminder."""
    person = patient(external_id="P-lost", mobile=LOST, email=None)
    booking = [(2, appointment(external_id="A-lost", patient=person))]
    service.importer.apply(booking, source="t", label="t")
    assert service.dispatcher.dispatch_due().by_status == {"pending": 1}
    with service.engine.connect() as conn:
        row = conn.execute(select(reminders).where(reminders.c.channel == "sms")).mappings().one()
    assert row["maybe_accepted_at"] == clock.now
    assert "may have been accepted" in row["last_error"]
    assert row["due_at"] >= clock.now + timedelta(minutes=3)  # time for Twilio's callback
    return dict(row)


def _callback(service: Service, message: dict[str, object], status: str) -> int:
    url = str(message["StatusCallback"])
    params = status_callback_params(message, status)
    client = TestClient(service.http_app())
    answer = client.post(
        urlsplit(url).path + "?" + urlsplit(url).query,
        data=params,
        headers={"X-Twilio-Signature": sign_callback(url, params)},
    )
    return answer.status_code


def _audit_events(service: Service, reminder_id: object) -> list[str]:
    with service.engine.connect() as conn:
        query = select(audit_log.c.event).where(audit_log.c.reminder_id == reminder_id)
        return list(conn.execute(query.order_by(audit_log.c.id)).scalars())


def test_a_lost_answer_is_settled_by_twilio_s_callback_and_never_sent_twice(
    impatient_service: Service, server: TwilioApiServer, clock
) -> None:  # type: ignore[no-untyped-def]
    service = impatient_service
    row = _lost_booking_text(service, clock)
    [message] = server.messages()  # Twilio has it, though we never heard back
    assert _callback(service, message, "sent") == 200
    clock.now += timedelta(hours=2)  # long past the retry it had planned
    assert service.dispatcher.dispatch_due().claimed == 0
    assert [m["To"] for m in server.messages()] == [LOST]  # one copy, not two
    assert _callback(service, message, "delivered") == 200
    with service.engine.connect() as conn:
        now = conn.execute(select(reminders).where(reminders.c.id == row["id"])).mappings().one()
    assert (now["status"], now["provider_id"]) == ("sent", message["sid"])
    assert now["sent_at"] == row["maybe_accepted_at"] and now["delivery_status"] == "delivered"
    assert "lost_answer_accepted" in _audit_events(service, row["id"])


def test_a_callback_after_the_retry_went_is_noted_once_for_staff(
    impatient_service: Service, server: TwilioApiServer, clock
) -> None:  # type: ignore[no-untyped-def]
    service = impatient_service
    row = _lost_booking_text(service, clock)
    server.behaviour.lose_answer = set()  # Twilio answers again, but the first callback is late
    server.behaviour.list_lag_seconds = 86400  # and its list does not show the first message yet
    clock.now = row["due_at"]
    assert service.dispatcher.dispatch_due().by_status == {"sent": 1}
    first, second = server.messages()
    for status in ("sent", "delivered"):  # the first message's callbacks, late
        assert _callback(service, first, status) == 200
    with service.engine.connect() as conn:
        now = conn.execute(select(reminders).where(reminders.c.id == row["id"])).mappings().one()
    assert (now["status"], now["provider_id"]) == ("sent", second["sid"])  # the retry's
    assert now["delivery_status"] is None  # the first message's statuses are not the retry's
    assert _audit_events(service, row["id"]).count("lost_answer_duplicate") == 1
