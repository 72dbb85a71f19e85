"""An SMS attempt whose outcome is unknown is not simply sent again: the dispatcher asks Twilio's
Message list first (the real SDK against the local Twilio API server, which dates its messages
with the test's clock)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from urllib.parse import urlsplit

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from reminder_service import bootstrap
from reminder_service.bootstrap import Service
from reminder_service.channels.base import body_sha256
from reminder_service.domain.appointment import Caregiver
from reminder_service.settings import Settings, TwilioSettings
from reminder_service.store.tables import appointments, audit_log, reminders
from tests.factories import appointment, config_without_sms_caps, patient
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

MOBILE = "+447700900321"
ADOPTED = "sent: the provider had accepted an earlier attempt"


@pytest.fixture
def server(clock) -> Iterator[TwilioApiServer]:  # type: ignore[no-untyped-def]
    with serve_in_thread(Behaviour(), clock=clock) as running:
        yield running


@pytest.fixture
def service(settings: Settings, clock, server: TwilioApiServer, tmp_path) -> Iterator[Service]:  # type: ignore[no-untyped-def]
    twilio = TwilioSettings(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, from_number=FROM_NUMBER,
        api_base_url=server.base_url, timeout_seconds=5,
    )  # fmt: skip
    configured = replace(
        settings, sms_channel="twilio", twilio=twilio, public_url="https://reminders.example.org",
        config_dir=config_without_sms_caps(tmp_path),
    )  # fmt: skip
    built = bootstrap.build(configured, clock)
    yield built
    built.close()


def book(service: Service, external_id: str = "A1", patient_id: str = "P1") -> None:
    person = patient(external_id=patient_id, mobile=MOBILE, email=None)
    service.importer.apply(
        [(2, appointment(external_id=external_id, patient=person))], source="t", label="t"
    )


def sms_row(service: Service, external_id: str = "A1") -> dict[str, object]:
    with service.engine.connect() as conn:
        query = (
            select(reminders)
            .join(appointments, appointments.c.id == reminders.c.appointment_id)
            .where(reminders.c.channel == "sms", appointments.c.external_id == external_id)
        )
        return dict(conn.execute(query).mappings().one())


def first_attempt_unknown(  # type: ignore[no-untyped-def]
    service: Service, server: TwilioApiServer, clock, **faults: float
) -> dict[str, object]:
    """Book, and try the booking text once against a server with `faults`; returns the row."""
    server.behaviour = replace(server.behaviour, **faults)
    book(service)
    assert service.dispatcher.dispatch_due().by_status == {"pending": 1}
    server.behaviour = Behaviour()
    row = sms_row(service)
    assert "may have been accepted" in str(row["reason"])
    # Written down before the request went out, and kept: the outcome is still unknown.
    assert row["attempt_started_at"] == clock.now and row["attempt_to"] == MOBILE
    return row


def retry(service: Service, clock, row: dict[str, object]) -> None:  # type: ignore[no-untyped-def]
    clock.now = row["due_at"]
    service.dispatcher.dispatch_due()


def crashed(service: Service, clock, row: dict[str, object]) -> None:  # type: ignore[no-untyped-def]
    """Leave the row as a process that died mid-send leaves it: claimed, its lease run out."""
    with service.engine.begin() as conn:
        conn.execute(
            update(reminders)
            .where(reminders.c.id == row["id"])
            .values(status="sending", claim_token="0" * 32, lease_until=clock.now)
        )
    clock.now += timedelta(seconds=1)


@pytest.mark.parametrize("how", ["answered 500", "hung up", "crashed"])
def test_an_attempt_twilio_accepted_is_found_and_not_sent_again(
    service: Service, server: TwilioApiServer, clock, how: str
) -> None:  # type: ignore[no-untyped-def]
    fault = {"answered 500": "accept_then_500", "hung up": "accept_then_drop"}.get(how)
    row = first_attempt_unknown(service, server, clock, **{fault or "accept_then_500": 1.0})
    [message] = server.messages()  # Twilio has it, whatever we heard
    assert row["attempt_sha256"] == body_sha256(message["Body"])
    if how == "crashed":
        crashed(service, clock, row)
        assert service.dispatcher.dispatch_due().by_status == {"sent": 1}
    else:
        retry(service, clock, row)
    after = sms_row(service)
    assert (after["status"], after["provider_id"]) == ("sent", message["sid"])
    assert str(after["reason"]).startswith(ADOPTED)
    assert after["sent_at"] == row["attempt_started_at"]  # when Twilio created it
    assert after["attempt_started_at"] is None  # settled
    assert len(server.messages()) == 1 and server.stats()["requests"] == 1  # no second POST


def test_an_attempt_twilio_never_got_is_sent_once(
    service: Service, server: TwilioApiServer, clock
) -> None:  # type: ignore[no-untyped-def]
    row = first_attempt_unknown(service, server, clock, fail_500=1.0)  # 500: nothing created
    assert server.messages() == []
    retry(service, clock, row)
    [message] = server.messages()
    after = sms_row(service)
    assert (after["status"], after["provider_id"]) == ("sent", message["sid"])
    assert after["reason"] == "sent" and after["attempt_started_at"] is None
    assert server.stats()["list_requests"] == {"200": 2}  # sent ones, then the whole list


def test_when_twilio_cannot_be_asked_nothing_is_sent_and_it_asks_again_later(
    service: Service, server: TwilioApiServer, clock
) -> None:  # type: ignore[no-untyped-def]
    row = first_attempt_unknown(service, server, clock, accept_then_500=1.0)
    server.behaviour.list_fail_500 = 1.0  # the list is down
    retry(service, clock, row)
    waiting = sms_row(service)
    assert waiting["status"] == "pending" and waiting["due_at"] > clock.now
    assert "could not ask the provider" in str(waiting["reason"])
    assert waiting["attempt_started_at"] == row["attempt_started_at"]  # still in doubt
    assert server.stats()["requests"] == 1  # nothing sent blindly
    server.behaviour.list_fail_500 = 0.0
    retry(service, clock, waiting)
    [message] = server.messages()
    after = sms_row(service)
    assert (after["status"], after["provider_id"]) == ("sent", message["sid"])
    assert server.stats()["requests"] == 1


def test_the_lookup_picks_the_message_with_this_body_among_others_to_the_number(
    service: Service, server: TwilioApiServer, clock
) -> None:  # type: ignore[no-untyped-def]
    row = first_attempt_unknown(service, server, clock, accept_then_500=1.0)
    [ours] = server.messages()
    for minutes, body in ((-1, "Your results are ready."), (1, "A different text.")):
        server.add_message(MOBILE, body, clock.now + timedelta(minutes=minutes))
    server.add_message(MOBILE, ours["Body"], clock.now, From="+447700900999")  # another sender
    server.add_message("+447700900322", ours["Body"], clock.now)  # another number
    retry(service, clock, row)
    assert sms_row(service)["provider_id"] == ours["sid"]
    assert server.stats()["requests"] == 1


def test_a_queued_message_without_date_sent_is_still_found(
    service: Service, server: TwilioApiServer, clock
) -> None:  # type: ignore[no-untyped-def]
    row = first_attempt_unknown(service, server, clock, accept_then_500=1.0)
    server.behaviour.queued_seconds = 86400  # still in the sender's queue when we ask
    retry(service, clock, row)
    [message] = server.messages()
    after = sms_row(service)
    assert (after["status"], after["provider_id"]) == ("sent", message["sid"])
    assert after["delivery_status"] == "queued"
    # DateSent> missed it (no date_sent yet); the whole list had it.
    assert server.stats()["list_requests"] == {"200": 2}


def test_a_message_recorded_for_another_reminder_is_not_taken_for_this_one(
    service: Service, server: TwilioApiServer, clock
) -> None:  # type: ignore[no-untyped-def]
    """Twins on one parent's mobile, booked together: their texts are the same words. The first
    twin's text, already recorded, is not the second twin's, whose attempt got a 500."""
    book(service, "A1", "P1")
    assert service.dispatcher.dispatch_due().by_status == {"sent": 1}
    [first] = server.messages()
    server.behaviour.fail_500 = 1.0
    book(service, "A2", "P2")
    assert service.dispatcher.dispatch_due().by_status == {"pending": 1}
    server.behaviour.fail_500 = 0.0
    retry(service, clock, sms_row(service, "A2"))
    first_sms, second_sms = sms_row(service, "A1"), sms_row(service, "A2")
    assert [m["Body"] for m in server.messages()] == [first["Body"]] * 2  # the same words
    assert first_sms["provider_id"] == first["sid"]
    assert second_sms["status"] == "sent"
    assert second_sms["provider_id"] == server.messages()[1]["sid"]  # its own, sent now


def test_sends_in_flight_are_bounded_by_the_setting(
    settings: Settings, clock, server: TwilioApiServer, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    """REMINDER_MAX_IN_FLIGHT bounds what one process has claimed and not recorded, so a crash
    leaves at most that many outcomes to ask about, however many connections it may open."""
    server.behaviour.latency_ms = 30
    twilio = TwilioSettings(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, from_number=FROM_NUMBER,
        api_base_url=server.base_url,
    )  # fmt: skip
    configured = replace(
        settings, sms_channel="twilio", twilio=twilio, public_url="https://reminders.example.org",
        sms_concurrency=50, sms_rate_limit=1000, max_in_flight=4,
    )  # fmt: skip
    service = bootstrap.build(configured, clock)
    try:
        for i in range(30):
            person = patient(external_id=f"P{i}", mobile=f"+447700900{i:03d}", email=None)
            service.importer.apply(
                [(2, appointment(external_id=f"A{i}", patient=person))], source="t", label="t"
            )
        assert service.dispatcher.dispatch_due().by_status == {"sent": 30}
    finally:
        service.close()
    assert 1 <= server.stats()["max_in_flight"] <= 4


def _callback(service: Service, message: dict[str, object], status: str) -> None:
    url = str(message["StatusCallback"])
    params = status_callback_params(message, status)
    answer = TestClient(service.http_app()).post(
        urlsplit(url).path + "?" + urlsplit(url).query,
        data=params,
        headers={"X-Twilio-Signature": sign_callback(url, params)},
    )
    assert answer.status_code == 200


@pytest.mark.parametrize("lease", ["run out", "still held"])
def test_a_callback_for_a_crashed_attempt_settles_it_unless_a_dispatcher_holds_it(
    service: Service, server: TwilioApiServer, clock, lease: str
) -> None:  # type: ignore[no-untyped-def]
    row = first_attempt_unknown(service, server, clock, accept_then_500=1.0)
    [message] = server.messages()
    crashed(service, clock, row)  # no maybe_accepted_at needed: the attempt is written down
    with service.engine.begin() as conn:
        conn.execute(
            update(reminders)
            .where(reminders.c.id == row["id"])
            .values(maybe_accepted_at=None)
            .values(lease_until=clock.now + timedelta(seconds=30 if lease == "still held" else -1))
        )
    _callback(service, message, "sent")
    after = sms_row(service)
    if lease == "run out":
        assert (after["status"], after["provider_id"]) == ("sent", message["sid"])
        assert after["claim_token"] is None and after["attempt_started_at"] is None
        assert after["sent_at"] == row["attempt_started_at"]
    else:  # the dispatcher holding it is asking Twilio about this very attempt
        assert (after["status"], after["provider_id"]) == ("sending", None)


def test_a_crashed_attempt_the_list_showed_too_late_is_noted_for_staff(
    service: Service, server: TwilioApiServer, clock
) -> None:  # type: ignore[no-untyped-def]
    row = first_attempt_unknown(service, server, clock, accept_then_500=1.0)
    crashed(service, clock, row)
    with service.engine.begin() as conn:  # a crash, not a lost answer: only written down
        conn.execute(
            update(reminders).where(reminders.c.id == row["id"]).values(maybe_accepted_at=None)
        )
    server.behaviour.list_lag_seconds = 86400  # Twilio's list does not show it yet
    assert service.dispatcher.dispatch_due().by_status == {"sent": 1}
    first, second = server.messages()  # the residual risk: a second copy went
    _callback(service, first, "delivered")  # the first one's callback, late
    after = sms_row(service)
    assert (after["status"], after["provider_id"]) == ("sent", second["sid"])
    with service.engine.connect() as conn:
        events = conn.execute(
            select(audit_log.c.event).where(audit_log.c.reminder_id == row["id"])
        ).scalars()
        assert "lost_answer_duplicate" in list(events)


def test_a_caregivers_copy_goes_through_the_same_attempts_exactly_once(
    service: Service, server: TwilioApiServer, clock
) -> None:  # type: ignore[no-untyped-def]
    """The patient's text and the caregiver's copy both accepted, both answers lost, one
    dispatcher dead mid-send: each is found by asking, neither is sent twice."""
    carer = "+447700900322"
    person = patient(mobile=MOBILE, email=None,
                     caregiver=Caregiver("Ann Carer", carer, "mother", True, True))  # fmt: skip
    server.behaviour = replace(server.behaviour, accept_then_500=1.0)
    service.importer.apply([(2, appointment(patient=person))], source="t", label="t")
    assert service.dispatcher.dispatch_due().by_status == {"pending": 2}
    server.behaviour = Behaviour()
    texts = select(reminders).where(reminders.c.channel == "sms", reminders.c.step_id == "booked")
    with service.engine.connect() as conn:
        rows = {r["recipient"]: dict(r) for r in conn.execute(texts).mappings()}
    assert {k: r["attempt_to"] for k, r in rows.items()} == {"patient": MOBILE, "caregiver": carer}
    crashed(service, clock, rows["caregiver"])
    clock.now = max(clock.now, rows["patient"]["due_at"])  # type: ignore[type-var]
    assert service.dispatcher.dispatch_due().by_status == {"sent": 2}
    sent = {m["To"]: m for m in server.messages()}
    assert set(sent) == {MOBILE, carer} and server.stats()["requests"] == 2  # no second POST
    assert sent[carer]["Body"] == f"For Test: {sent[MOBILE]['Body']}"
    with service.engine.connect() as conn:
        after = {r["recipient"]: r for r in conn.execute(texts).mappings()}
    assert after["caregiver"]["provider_id"] == sent[carer]["sid"]
    assert after["patient"]["provider_id"] == sent[MOBILE]["sid"]
