"""TwilioSmsChannel.find_accepted against the local Twilio API server, through the real SDK: the
filters it sends, paging, body matching, queued messages, the sender, and failures."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from reminder_service.channels.base import AcceptedSms, ChannelError, SentQuery, body_sha256
from reminder_service.channels.twilio_sms import CLOCK_SKEW, TwilioSmsChannel
from reminder_service.settings import TwilioSettings
from tests.fakes import FakeClock
from tests.servers.twilio_api import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    MESSAGING_SERVICE_SID,
    Behaviour,
    TwilioApiServer,
    serve_in_thread,
)

NOW = datetime(2026, 11, 19, 11, 0, tzinfo=UTC)  # when the attempt began
PATIENT = "+447700900123"
BODY = "Riverside Clinic:\nbooked Thu 10 Dec 09:30, Day Unit.\nReply STOP to opt out"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW + timedelta(minutes=5))  # the server's now: when we ask


@pytest.fixture
def server(clock: FakeClock) -> Iterator[TwilioApiServer]:
    with serve_in_thread(Behaviour(), clock=clock) as running:
        yield running


def find(server: TwilioApiServer, since: datetime, **sender: str) -> list[AcceptedSms]:
    sender = sender or {"from_number": FROM_NUMBER}
    settings = TwilioSettings(ACCOUNT_SID, AUTH_TOKEN, api_base_url=server.base_url, **sender)

    async def run() -> list[AcceptedSms]:
        channel = TwilioSmsChannel(settings, concurrency=4, rate_limit=10)
        try:
            return await channel.find_accepted(SentQuery(PATIENT, body_sha256(BODY), since))
        finally:
            await channel.aclose()

    return asyncio.run(run())


def test_the_sdk_sends_twilio_s_filters_and_finds_the_message(server: TwilioApiServer) -> None:
    sid = server.add_message(PATIENT, BODY, NOW + timedelta(seconds=2))
    [found] = find(server, NOW)
    assert (found.provider_id, found.status) == (sid, "sent")
    assert found.accepted_at == NOW + timedelta(seconds=2)  # Twilio's date_created
    [query] = server.list_queries()
    # DateSent> as the SDK writes a datetime (second precision, UTC, "Z"); and the sender.
    assert query == {
        "To": PATIENT, "From": FROM_NUMBER, "DateSent>": "2026-11-19T10:59:00Z", "PageSize": "1000",
    }  # fmt: skip


def test_messages_from_before_the_attempt_are_not_taken(server: TwilioApiServer) -> None:
    server.add_message(PATIENT, BODY, NOW - CLOCK_SKEW - timedelta(seconds=1))  # an older copy
    assert find(server, NOW) == []
    recent = server.add_message(PATIENT, BODY, NOW - CLOCK_SKEW + timedelta(seconds=1))  # skew
    assert [m.provider_id for m in find(server, NOW)] == [recent]


def test_paging_reaches_a_match_beyond_the_first_page(server: TwilioApiServer) -> None:
    ours = server.add_message(PATIENT, BODY, NOW)  # the oldest: sorted last, on page 2
    for i in range(1100):
        server.add_message(PATIENT, f"Another text {i}", NOW + timedelta(milliseconds=i + 1))
    assert [m.provider_id for m in find(server, NOW)] == [ours]
    first, second = server.list_queries()
    assert "PageToken" not in first
    assert second["Page"] == "1" and second["PageToken"].startswith("PASM")


def test_the_body_must_match_exactly_and_the_oldest_match_comes_first(
    server: TwilioApiServer,
) -> None:
    server.add_message(PATIENT, BODY + " ", NOW)
    server.add_message(PATIENT, BODY.replace("09:30", "10:30"), NOW)
    later = server.add_message(PATIENT, BODY, NOW + timedelta(seconds=30))
    earlier = server.add_message(PATIENT, BODY, NOW + timedelta(seconds=10))
    assert [m.provider_id for m in find(server, NOW)] == [earlier, later]


def test_a_queued_message_is_found_though_no_date_sent_filter_matches_it(
    server: TwilioApiServer,
) -> None:
    server.behaviour.queued_seconds = 3600
    sid = server.add_message(PATIENT, BODY, NOW)
    [found] = find(server, NOW)
    assert (found.provider_id, found.status) == (sid, "queued")
    sent_since, everything = server.list_queries()
    assert "DateSent>" in sent_since and "DateSent>" not in everything


def test_with_a_messaging_service_only_its_messages_match(server: TwilioApiServer) -> None:
    ours = server.add_message(PATIENT, BODY, NOW, MessagingServiceSid=MESSAGING_SERVICE_SID)
    server.add_message(PATIENT, BODY, NOW, MessagingServiceSid="MG" + "0" * 32)
    server.add_message(PATIENT, BODY, NOW)  # from a number, not the service
    found = find(server, NOW, messaging_service_sid=MESSAGING_SERVICE_SID)
    assert [m.provider_id for m in found] == [ours]
    assert all("From" not in query for query in server.list_queries())  # Twilio has no such filter


@pytest.mark.parametrize("status", [500, 401])
def test_a_list_that_cannot_be_read_is_a_channel_error(
    server: TwilioApiServer, status: int
) -> None:
    if status == 500:
        server.behaviour.list_fail_500 = 1.0
    else:
        server.behaviour.auth_token = "0" * 32
    with pytest.raises(ChannelError) as raised:
        find(server, NOW)
    assert raised.value.failure.status == status
    assert PATIENT not in str(raised.value)


def test_the_server_reads_a_day_as_the_whole_utc_day(server: TwilioApiServer) -> None:
    """Twilio's documented form: DateSent>=YYYY-MM-DD is on or after midnight of that day."""
    morning = server.add_message(PATIENT, BODY, NOW.replace(hour=0, minute=5))
    settings = TwilioSettings(ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, api_base_url=server.base_url)

    async def run() -> tuple[list[str], list[str]]:
        channel = TwilioSmsChannel(settings, concurrency=1, rate_limit=10)
        messages = channel._messages  # the SDK's MessageList, as the channel calls it
        try:
            by_day = await messages.list_async(to=PATIENT, date_sent_after="2026-11-19")
            by_moment = await messages.list_async(to=PATIENT, date_sent_after=NOW)
            return [m.sid for m in by_day], [m.sid for m in by_moment]
        finally:
            await channel.aclose()

    assert asyncio.run(run()) == ([morning], [])
