"""Each clinic's own senders, through the real dispatcher and the real Twilio SDK against the
local server that speaks Twilio's API: a clinic's number goes as From, a clinic's Messaging
Service as MessagingServiceSid (and no From), and a clinic with neither uses the configured
sender. A lost answer is found again by the lookup whichever of our senders sent it."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from reminder_service import bootstrap
from reminder_service.bootstrap import Service
from reminder_service.channels.base import SentQuery, SmsSender, body_sha256
from reminder_service.channels.twilio_sms import TwilioSmsChannel
from reminder_service.settings import Settings, TwilioSettings
from tests.factories import CONFIG_DIR, appointment, patient
from tests.servers.twilio_api import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    Behaviour,
    TwilioApiServer,
    serve_in_thread,
)

CLINIC_NUMBER = "+447700900001"
CLINIC_SERVICE = "MG" + "ab" * 16


def senders_config(tmp_path: Path) -> Path:
    """Riverside texts from its own number, Lakeside through its own Messaging Service, and
    Hillside (a copy of Lakeside) from the configured sender."""
    config = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config)
    path = config / "clinics.yaml"
    data = yaml.safe_load(path.read_text())
    clinics = data["clinics"]
    clinics["hillside"] = {**clinics["lakeside"], "name": "Hillside Hematology"}
    clinics["riverside"]["sms_from"] = CLINIC_NUMBER
    clinics["lakeside"]["messaging_service_sid"] = CLINIC_SERVICE
    for clinic in clinics.values():
        clinic["sms_caps"] = {"per_day": 0, "per_7_days": 0}
    path.write_text(yaml.safe_dump(data, allow_unicode=True))
    return config


@pytest.fixture
def server(clock) -> Iterator[TwilioApiServer]:  # type: ignore[no-untyped-def]
    with serve_in_thread(Behaviour(), clock=clock) as running:
        yield running


@pytest.fixture
def twilio_service(  # type: ignore[no-untyped-def]
    settings: Settings, clock, server: TwilioApiServer, tmp_path: Path
) -> Iterator[Service]:
    twilio = TwilioSettings(
        account_sid=ACCOUNT_SID, auth_token=AUTH_TOKEN, from_number=FROM_NUMBER,
        api_base_url=server.base_url, timeout_seconds=5,
    )  # fmt: skip
    configured = replace(
        settings, sms_channel="twilio", twilio=twilio, public_url="https://reminders.example.org",
        sms_rate_limit=1000, config_dir=senders_config(tmp_path),
    )  # fmt: skip
    service = bootstrap.build(configured, clock)
    yield service
    service.close()


def test_each_clinic_texts_from_its_own_sender(
    twilio_service: Service, server: TwilioApiServer
) -> None:
    booked = []
    for i, clinic in enumerate(("riverside", "lakeside", "hillside")):
        person = patient(external_id=f"P{i}", mobile=f"+44770090020{i}", email=None)
        booked.append((i + 2, appointment(external_id=f"A{i}", clinic_id=clinic, patient=person)))
    twilio_service.importer.apply(booked, source="t", label="t")

    assert twilio_service.dispatcher.dispatch_due().by_status == {"sent": 3}

    by_number = {m["To"]: m for m in server.messages()}
    riverside, lakeside, hillside = (by_number[f"+44770090020{i}"] for i in range(3))
    assert riverside["From"] == CLINIC_NUMBER and "MessagingServiceSid" not in riverside
    assert lakeside["MessagingServiceSid"] == CLINIC_SERVICE and "From" not in lakeside
    assert hillside["From"] == FROM_NUMBER and "MessagingServiceSid" not in hillside


def test_a_lookup_finds_a_message_from_a_clinics_sender_and_no_strangers(
    server: TwilioApiServer, clock
) -> None:  # type: ignore[no-untyped-def]
    to, body = "+447700900300", "Riverside Haematology: your appointment is booked."
    since = clock.now
    from_clinic = server.add_message(to, body, since + timedelta(seconds=1), From=CLINIC_NUMBER)
    via_service = server.add_message(
        to, body, since + timedelta(seconds=2), MessagingServiceSid=CLINIC_SERVICE
    )
    server.add_message(to, body, since + timedelta(seconds=3), From="+447700900999")  # not ours
    server.add_message(to, body, since, MessagingServiceSid="MG" + "0" * 32)  # not ours
    clock.advance(seconds=10)  # the server lists what it created by its clock's now
    settings = TwilioSettings(ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, api_base_url=server.base_url)

    async def run() -> list[str]:
        channel = TwilioSmsChannel(
            settings, concurrency=2, rate_limit=10,
            senders=[SmsSender(from_number=CLINIC_NUMBER), SmsSender("", CLINIC_SERVICE)],
        )  # fmt: skip
        try:
            found = await channel.find_accepted(SentQuery(to, body_sha256(body), since))
        finally:
            await channel.aclose()
        return [m.provider_id for m in found]

    assert asyncio.run(run()) == [from_clinic, via_service]
    # Several senders: Twilio filters on one From only, so none is asked for.
    assert all("From" not in query for query in server.list_queries())
