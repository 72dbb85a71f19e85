"""Signed Twilio webhooks with values no real callback carries: never a 500, nothing half-written.

A signature only proves the request came from someone holding the auth token; the values must
still fit the columns they go to (PostgreSQL refuses an over-long value, a NUL, or an id past
the integer range, and a refusal there would answer 500).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from reminder_service import bootstrap
from reminder_service.bootstrap import Service
from reminder_service.settings import Settings, TwilioSettings
from reminder_service.store.tables import inbound_messages

TOKEN = "test-auth-token"
PUBLIC = "https://reminders.example.org"


@pytest.fixture
def signed(settings: Settings, clock) -> Iterator[tuple[Service, TestClient]]:  # type: ignore[no-untyped-def]
    twilio = TwilioSettings(
        account_sid="AC" + "0" * 32, auth_token=TOKEN, from_number="+15005550006"
    )
    service = bootstrap.build(replace(settings, twilio=twilio, public_url=PUBLIC), clock)
    yield service, TestClient(service.http_app())
    service.close()


def post(client: TestClient, path: str, params: dict[str, str]) -> Any:
    signature = RequestValidator(TOKEN).compute_signature(f"{PUBLIC}{path}", params)
    return client.post(path, data=params, headers={"X-Twilio-Signature": signature})


def inbound_count(service: Service) -> int:
    with service.engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(inbound_messages)).scalar_one()


@pytest.mark.parametrize(
    "reminder", ["99999999999999999999", "2147483648", "0", "1"], ids=["huge", "int32+1", "0", "1"]
)
def test_a_status_callback_for_an_impossible_reminder_changes_nothing(signed, reminder) -> None:  # type: ignore[no-untyped-def]
    _, client = signed
    params = {"MessageSid": "SM" + "1" * 32, "MessageStatus": "delivered"}
    answer = post(client, f"/webhooks/twilio/status?reminder={reminder}", params)
    assert answer.status_code == 200


@pytest.mark.parametrize(
    "params",
    [
        {"MessageSid": "SM" + "x" * 300, "MessageStatus": "delivered"},
        {"MessageSid": "SM\x00" + "1" * 31, "MessageStatus": "delivered"},
        {"MessageSid": "SM" + "1" * 32, "MessageStatus": "undelivered", "ErrorCode": "9" * 40},
    ],
    ids=["long-sid", "nul-sid", "long-error"],
)
def test_a_status_callback_with_unstorable_values_is_answered(signed, params) -> None:  # type: ignore[no-untyped-def]
    _, client = signed
    answer = post(client, "/webhooks/twilio/status?reminder=1", params)
    assert answer.status_code == 200


@pytest.mark.parametrize(
    ("sid", "phone"),
    [
        ("SM" + "x" * 300, "+447700900123"),
        ("SM\x00" + "1" * 31, "+447700900123"),
        ("SM" + "2" * 32, "whatsapp:+447700900123" + "9" * 40),
        ("SM" + "3" * 32, "+4477\x00900123"),
    ],
    ids=["long-sid", "nul-sid", "long-from", "nul-from"],
)
def test_an_inbound_message_with_unstorable_ids_is_refused_cleanly(signed, sid, phone) -> None:  # type: ignore[no-untyped-def]
    service, client = signed
    params = {"MessageSid": sid, "From": phone, "To": "+15005550006", "Body": "STOP"}
    answer = post(client, "/webhooks/twilio/inbound", params)
    assert answer.status_code == 400
    assert inbound_count(service) == 0


def test_an_inbound_body_with_a_nul_is_kept_for_staff(signed) -> None:  # type: ignore[no-untyped-def]
    service, client = signed
    params = {"MessageSid": "SM" + "4" * 32, "From": "+447700900123", "To": "+15005550006",
              "Body": "running late\x00 sorry"}  # fmt: skip
    answer = post(client, "/webhooks/twilio/inbound", params)
    assert answer.status_code == 200
    with service.engine.connect() as conn:
        body = conn.execute(select(inbound_messages.c.body)).scalar_one()
    assert body == "running late\ufffd sorry"
