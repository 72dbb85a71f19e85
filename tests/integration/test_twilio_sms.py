"""TwilioSmsChannel against the local Twilio API server, through the real SDK and real HTTP.

Nothing here waits for time to pass: concurrency is read from the server's in-flight count, and
the rate from the arrival times it recorded.
"""

from __future__ import annotations

import asyncio
import logging
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from twilio.request_validator import RequestValidator

from reminder_service.channels.base import ChannelError, OutgoingSms, Receipt
from reminder_service.channels.twilio_sms import TwilioSmsChannel
from reminder_service.domain.failures import FailureKind
from reminder_service.settings import TwilioSettings
from tests.factories import free_port
from tests.servers.twilio_api import (
    ACCOUNT_SID,
    AUTH_TOKEN,
    FROM_NUMBER,
    MESSAGING_SERVICE_SID,
    Behaviour,
    TwilioApiServer,
    post_status_callback,
    serve_in_process,
    serve_in_thread,
    status_callback_params,
)

PATIENT = "+447700900123"
BODY = "Your biopsy is tomorrow at 09:30. Reply STOP to opt out."
CALLBACK = "https://reminders.example.test/webhooks/twilio/status/41"


@pytest.fixture
def server() -> Iterator[TwilioApiServer]:
    with serve_in_thread() as running:
        yield running


def settings_for(base_url: str, **changes: Any) -> TwilioSettings:
    settings = replace(
        TwilioSettings(ACCOUNT_SID, AUTH_TOKEN, FROM_NUMBER, api_base_url=base_url), **changes
    )
    settings.validate()
    return settings


def sms(
    to: str = PATIENT, *, reminder_id: int = 41, callback: str | None = CALLBACK
) -> OutgoingSms:
    return OutgoingSms(
        reminder_id=reminder_id,
        appointment_id="APT0000041",
        step="day_before",
        to=to,
        body=BODY,
        sent_at=datetime(2026, 11, 19, 11, 0, tzinfo=UTC),
        status_callback=callback,
    )


def channel_for(
    settings: TwilioSettings, *, concurrency: int = 10, rate_limit: float = 1000.0
) -> TwilioSmsChannel:
    return TwilioSmsChannel(settings, concurrency=concurrency, rate_limit=rate_limit)


def send_one(settings: TwilioSettings, message: OutgoingSms) -> Receipt:
    async def run() -> Receipt:
        channel = channel_for(settings)
        try:
            return await channel.send_sms(message)
        finally:
            await channel.aclose()

    return asyncio.run(run())


def failure_of(settings: TwilioSettings, message: OutgoingSms) -> ChannelError:
    with pytest.raises(ChannelError) as caught:
        send_one(settings, message)
    return caught.value


def send_all(channel: TwilioSmsChannel, messages: list[OutgoingSms]) -> list[Receipt]:
    async def run() -> list[Receipt]:
        try:
            return await asyncio.gather(*(channel.send_sms(m) for m in messages))
        finally:
            await channel.aclose()

    return asyncio.run(run())


def numbered(count: int) -> list[OutgoingSms]:
    return [
        sms(f"+447700900{i % 1000:03d}", reminder_id=i, callback=f"{CALLBACK}/{i}")
        for i in range(count)
    ]


# -- accepted ---------------------------------------------------------------------------------


def test_an_accepted_message_gives_twilios_sid_and_forwards_the_status_callback(
    server: TwilioApiServer,
) -> None:
    receipt = send_one(settings_for(server.base_url), sms())

    [message] = server.messages()
    assert receipt.provider_id == message["sid"]
    assert receipt.provider_id.startswith("SM") and len(receipt.provider_id) == 34
    assert message["To"] == PATIENT
    assert message["Body"] == BODY
    assert message["From"] == FROM_NUMBER
    assert message["StatusCallback"] == CALLBACK
    assert "MessagingServiceSid" not in message


def test_no_status_callback_is_sent_when_the_message_has_none(server: TwilioApiServer) -> None:
    send_one(settings_for(server.base_url), sms(callback=None))

    [message] = server.messages()
    assert "StatusCallback" not in message


def test_a_messaging_service_is_used_instead_of_a_from_number(server: TwilioApiServer) -> None:
    settings = settings_for(
        server.base_url, from_number="", messaging_service_sid=MESSAGING_SERVICE_SID
    )

    receipt = send_one(settings, sms())

    [message] = server.messages()
    assert receipt.provider_id == message["sid"]
    assert message["MessagingServiceSid"] == MESSAGING_SERVICE_SID
    assert "From" not in message


def test_requests_go_to_the_configured_base_url(server: TwilioApiServer) -> None:
    # A trailing slash is allowed; the server only answers the exact Messages path.
    send_one(settings_for(server.base_url + "/"), sms())

    [request] = server.requests()
    assert request.status == 201


def test_an_unreachable_base_url_is_a_connection_failure() -> None:
    port = free_port()  # nothing listens on it

    error = failure_of(settings_for(f"http://127.0.0.1:{port}"), sms())

    assert error.failure.kind is FailureKind.CONNECTION
    assert error.failure.status is None


def test_a_channel_can_be_closed_and_used_again_on_another_loop(server: TwilioApiServer) -> None:
    channel = channel_for(settings_for(server.base_url))

    first = send_all(channel, [sms(reminder_id=1)])
    second = send_all(channel, [sms(reminder_id=2)])

    assert [r.provider_id for r in first + second] == [m["sid"] for m in server.messages()]


# -- refused ----------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [21211, 21614, 21610])
def test_a_refused_number_is_an_http_failure_with_twilios_code_and_no_number(
    code: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with serve_in_thread(Behaviour(reject={PATIENT: code})) as server:
        error = failure_of(settings_for(server.base_url), sms())

    failure = error.failure
    assert (failure.provider, failure.kind) == ("twilio", FailureKind.HTTP)
    assert (failure.status, failure.code) == (400, str(code))
    # Twilio's message quotes the number; none of it may reach our failure, error or logs.
    assert PATIENT.lstrip("+") not in failure.detail + str(error) + failure.describe()
    assert BODY not in failure.detail
    assert error.__cause__ is None and error.__suppress_context__
    assert all(PATIENT.lstrip("+") not in record.getMessage() for record in caplog.records)


def test_wrong_credentials_are_an_http_401() -> None:
    with serve_in_thread() as server:
        error = failure_of(settings_for(server.base_url, auth_token="0" * 32), sms())

    assert error.failure.kind is FailureKind.HTTP
    assert (error.failure.status, error.failure.code) == (401, "20003")
    assert server.messages() == []


def test_too_many_requests_is_an_http_429() -> None:
    with serve_in_thread(Behaviour(throttle_429=1.0)) as server:
        error = failure_of(settings_for(server.base_url), sms())

    assert error.failure.kind is FailureKind.HTTP
    assert (error.failure.status, error.failure.code) == (429, "20429")
    assert len(server.requests()) == 1


def test_a_server_error_is_an_http_500_and_is_not_retried() -> None:
    with serve_in_thread(Behaviour(fail_500=1.0)) as server:
        error = failure_of(settings_for(server.base_url), sms())

    assert error.failure.kind is FailureKind.HTTP
    assert (error.failure.status, error.failure.code) == (500, "20500")
    assert len(server.requests()) == 1


def test_no_answer_in_time_is_a_timeout_and_is_not_retried() -> None:
    with serve_in_thread(Behaviour(slow={PATIENT: 60.0})) as server:
        error = failure_of(settings_for(server.base_url, timeout_seconds=0.3), sms())

        # Any retry would have happened before the send returned: one request, still waiting.
        [request] = server.requests()
        assert request.status is None
        assert server.stats()["in_flight"] == 1

    assert error.failure.kind is FailureKind.TIMEOUT
    assert error.failure.status is None
    assert PATIENT.lstrip("+") not in error.failure.describe()


# -- flow control -----------------------------------------------------------------------------


def test_many_sends_are_in_flight_at_once() -> None:
    with serve_in_thread(Behaviour(latency_ms=100)) as server:
        channel = channel_for(settings_for(server.base_url), concurrency=50, rate_limit=10_000)
        receipts = send_all(channel, numbered(50))

    assert len({r.provider_id for r in receipts}) == 50
    assert server.stats()["max_in_flight"] >= 40


def test_in_flight_requests_never_exceed_the_concurrency() -> None:
    with serve_in_thread(Behaviour(latency_ms=20)) as server:
        channel = channel_for(settings_for(server.base_url), concurrency=8, rate_limit=10_000)
        send_all(channel, numbered(100))

    assert 1 <= server.stats()["max_in_flight"] <= 8


def test_a_slow_answer_does_not_hold_up_other_sends() -> None:
    slow = "+447700900999"
    with serve_in_thread(Behaviour(slow={slow: 60.0})) as server:
        channel = channel_for(settings_for(server.base_url), concurrency=4, rate_limit=10_000)

        async def run() -> list[Receipt]:
            stuck = asyncio.create_task(channel.send_sms(sms(slow, reminder_id=999)))
            try:
                # Three free slots carry twenty sends while the slow one waits.
                return await asyncio.gather(*(channel.send_sms(m) for m in numbered(20)))
            finally:
                assert not stuck.done()
                stuck.cancel()
                await asyncio.gather(stuck, return_exceptions=True)
                await channel.aclose()

        receipts = asyncio.run(run())
        waiting = [r for r in server.requests() if r.status is None]

    assert len(receipts) == 20
    assert len(waiting) == 1


def test_the_rate_per_sender_stays_within_five_percent_of_the_limit() -> None:
    rate, count = 100.0, 300
    with serve_in_thread() as server:
        channel = channel_for(settings_for(server.base_url), concurrency=50, rate_limit=rate)
        send_all(channel, numbered(count))
        arrivals = sorted(r.arrival for r in server.requests())

    assert len(arrivals) == count
    # No one-second window, the first included (the limiter's initial burst), holds more than
    # the rate plus 5%.
    busiest = max(bisect_left(arrivals, t + 1.0) - i for i, t in enumerate(arrivals))
    assert busiest <= rate * 1.05
    # And over the run the rate is the limit, within 5%.
    measured = (count - 1) / (arrivals[-1] - arrivals[0])
    assert rate * 0.95 <= measured <= rate * 1.05, measured


# -- the test server's own helpers --------------------------------------------------------------


def test_the_server_runs_in_its_own_process_and_reports_stats() -> None:
    behaviour = Behaviour(latency_ms=5, reject={"+447700900666": 21211})
    with serve_in_process(behaviour) as server:
        settings = settings_for(server.base_url)
        receipt = send_one(settings, sms())
        with pytest.raises(ChannelError):
            send_one(settings, sms("+447700900666"))

        stats = server.stats()
        [message] = server.messages()
        server.reset()
        assert server.stats()["requests"] == 0

    assert message["sid"] == receipt.provider_id
    assert (stats["requests"], stats["accepted"]) == (2, 1)
    assert stats["status_codes"] == {"201": 1, "400": 1}
    assert stats["accepted_per_callback"] == {CALLBACK: 1}
    assert len(stats["arrivals"]) == 2 and sum(stats["per_second"]) == 2


def test_a_status_callback_is_signed_as_twilio_signs_it(server: TwilioApiServer) -> None:
    send_one(settings_for(server.base_url), sms())
    [message] = server.messages()
    params = status_callback_params(message, "delivered")
    seen: list[dict[str, str]] = []

    async def webhook(request: web.Request) -> web.Response:
        form = {key: str(value) for key, value in (await request.post()).items()}
        signature = request.headers.get("X-Twilio-Signature", "")
        valid = RequestValidator(AUTH_TOKEN).validate(str(request.url), form, signature)
        seen.append(form)
        return web.Response(status=204 if valid else 403)

    async def run() -> list[int]:
        app = web.Application()
        app.router.add_post("/status", webhook)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/status"
        try:
            genuine, _ = await post_status_callback(url, params)
            forged, _ = await post_status_callback(url, params, signature="bm90IGl0")
            return [genuine, forged]
        finally:
            await runner.cleanup()

    assert asyncio.run(run()) == [204, 403]
    assert seen[0]["MessageSid"] == message["sid"]
    assert seen[0]["MessageStatus"] == "delivered"
    assert seen[0]["To"] == PATIENT
