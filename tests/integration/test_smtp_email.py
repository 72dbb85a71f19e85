"""SmtpEmailChannel against real local SMTP servers (aiosmtpd, see tests/servers/smtp_server.py):
what arrives, TLS and login, refusals as facts, and how sessions are reused and replaced."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from icalendar import Calendar

from reminder_service.channels.base import CalendarEvent, ChannelError, OutgoingEmail, Receipt
from reminder_service.channels.smtp_email import SmtpEmailChannel
from reminder_service.domain.failures import FailureKind
from tests.servers.smtp_server import (
    Received,
    RecordingHandler,
    ServerTls,
    SmtpServer,
    make_tls,
    serve_in_thread,
)

PATIENT = "test.patient@example.org"
SENT_AT = datetime(2026, 11, 19, 11, 0, tzinfo=UTC)
START = datetime(2026, 12, 9, 9, 30, tzinfo=UTC)
EVENT = CalendarEvent(
    uid="appointment-A1@reminder-service",
    sequence=0,
    start=START,
    end=START + timedelta(minutes=90),
    summary="Your appointment at Riverside Haematology",
    location="Riverside Hospital, Day Unit",
    organizer="reminders@example.org",
)


def email_for(number: int, **changes: Any) -> OutgoingEmail:
    base = OutgoingEmail(
        reminder_id=number,
        appointment_id="A1",
        step="booked",
        to=PATIENT,
        from_name="Riverside Haematology",
        subject="Your appointment on 9 December",
        text="Dear Test Patient,\nyour appointment is on 9 December at 09:30.\n",
        html="<p>Dear Test Patient,</p><p>your appointment is on 9 December at 09:30.</p>",
        message_id=f"<reminder-{number}.v1@reminder-service>",
        sent_at=SENT_AT,
    )
    return replace(base, **changes)


Outcome = Receipt | ChannelError


async def attempt(channel: SmtpEmailChannel, message: OutgoingEmail) -> Outcome:
    try:
        return await channel.send_email(message)
    except ChannelError as error:
        return error


def send(
    channel: SmtpEmailChannel, *messages: OutgoingEmail, concurrently: bool = False
) -> list[Outcome]:
    """Send on a fresh event loop, then close the channel."""

    async def main() -> list[Outcome]:
        try:
            if concurrently:
                return list(await asyncio.gather(*(attempt(channel, m) for m in messages)))
            return [await attempt(channel, m) for m in messages]
        finally:
            await channel.aclose()

    return asyncio.run(main())


def failure_of(outcome: Outcome) -> ChannelError:
    assert isinstance(outcome, ChannelError), outcome
    return outcome


@pytest.fixture
def tls(tmp_path: Path) -> ServerTls:
    return make_tls(tmp_path)


@pytest.fixture
def plain() -> Iterator[SmtpServer]:
    with serve_in_thread() as server:
        yield server


# -- what arrives ------------------------------------------------------------------------------


def test_an_email_arrives_as_text_and_html_with_its_message_id(plain: SmtpServer) -> None:
    [receipt] = send(SmtpEmailChannel(plain.settings()), email_for(1))

    assert receipt == Receipt(provider_id="<reminder-1.v1@reminder-service>")
    [received] = plain.handler.received
    assert received.mail_from == "reminders@example.org"
    assert received.rcpt_tos == (PATIENT,)
    message = received.message()
    assert message["Message-ID"] == "<reminder-1.v1@reminder-service>"
    assert message["To"] == PATIENT
    assert message["From"].addresses[0].display_name == "Riverside Haematology"
    assert message["X-Reminder-Id"] == "1"
    assert message.get_content_type() == "multipart/alternative"
    parts = {part.get_content_type(): part.get_content() for part in message.iter_parts()}
    assert set(parts) == {"text/plain", "text/html"}
    assert "Dear Test Patient" in parts["text/plain"] and "<p>" in parts["text/html"]


def test_the_receipt_is_the_servers_queue_id_when_it_gives_one() -> None:
    with serve_in_thread(RecordingHandler(queue_ids=True)) as server:
        outcomes = send(SmtpEmailChannel(server.settings()), email_for(1), email_for(2))
    assert outcomes == [Receipt("Q000001"), Receipt("Q000002")]


def test_non_ascii_text_arrives_intact(plain: SmtpServer) -> None:
    message = email_for(1, subject="Rendez-vous à l'hôpital", text="Chère patiente — à bientôt\n")
    send(SmtpEmailChannel(plain.settings()), message)
    received = plain.handler.received[0].message()
    assert received["Subject"] == "Rendez-vous à l'hôpital"
    body = received.get_body(("plain",))
    assert body is not None
    assert body.get_content().splitlines() == ["Chère patiente — à bientôt"]  # CRLF on the wire


def invite_of(received: Received) -> tuple[str, Any, Any]:
    """(the part's method parameter, the calendar, its one event) from a received email."""
    parsed = received.message()
    assert parsed.get_content_type() == "multipart/mixed"
    body, invite = parsed.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in body.iter_parts()] == ["text/plain", "text/html"]
    assert invite.get_content_type() == "text/calendar"
    assert invite.get_filename() == "invite.ics"
    calendar = Calendar.from_ical(invite.get_content())
    [event] = calendar.walk("VEVENT")
    return str(invite.get_param("method")), calendar, event


def test_each_version_of_an_appointment_updates_one_calendar_entry(plain: SmtpServer) -> None:
    moved = START + timedelta(days=7)
    rescheduled = replace(EVENT, sequence=1, start=moved, end=moved + timedelta(minutes=90))
    versions = [
        email_for(1, calendar=EVENT),
        email_for(2, calendar=rescheduled),
        email_for(3, calendar=replace(rescheduled, sequence=2, cancelled=True)),
    ]
    send(SmtpEmailChannel(plain.settings()), *versions)

    invites = [invite_of(received) for received in plain.handler.received]
    assert [method for method, _, _ in invites] == ["REQUEST", "REQUEST", "CANCEL"]
    assert [str(cal["METHOD"]) for _, cal, _ in invites] == ["REQUEST", "REQUEST", "CANCEL"]
    assert {str(event["UID"]) for _, _, event in invites} == {EVENT.uid}
    assert [int(event["SEQUENCE"]) for _, _, event in invites] == [0, 1, 2]
    assert [str(event["STATUS"]) for _, _, event in invites] == [
        "CONFIRMED",
        "CONFIRMED",
        "CANCELLED",
    ]
    assert [event.decoded("DTSTART") for _, _, event in invites] == [START, moved, moved]


# -- TLS and login -----------------------------------------------------------------------------


def test_starttls_with_the_test_ca(tls: ServerTls) -> None:
    with serve_in_thread(tls=tls, starttls=True) as server:
        [receipt] = send(SmtpEmailChannel(server.settings()), email_for(1))
    assert isinstance(receipt, Receipt)
    assert [received.tls for received in server.handler.received] == [True]


def test_implicit_tls_with_the_test_ca(tls: ServerTls) -> None:
    with serve_in_thread(tls=tls, implicit_tls=True) as server:
        assert server.settings().security == "tls"
        [receipt] = send(SmtpEmailChannel(server.settings()), email_for(1))
    assert isinstance(receipt, Receipt)
    assert [received.tls for received in server.handler.received] == [True]


@pytest.mark.parametrize("mode", ["starttls", "tls"])
def test_a_certificate_not_signed_by_the_given_ca_is_refused(tmp_path: Path, mode: str) -> None:
    untrusted = make_tls(tmp_path, signed_by_trusted_ca=False)
    with serve_in_thread(
        tls=untrusted, starttls=mode == "starttls", implicit_tls=mode == "tls"
    ) as server:
        [outcome] = send(SmtpEmailChannel(server.settings()), email_for(1))
    failure = failure_of(outcome).failure
    assert failure.provider == "smtp" and failure.kind is FailureKind.CONNECTION
    assert "certificate" in failure.detail
    assert server.handler.received == []


def test_starttls_mode_never_sends_in_clear_to_a_server_without_starttls(
    plain: SmtpServer,
) -> None:
    [outcome] = send(SmtpEmailChannel(plain.settings(security="starttls")), email_for(1))
    failure = failure_of(outcome).failure
    assert failure.kind is FailureKind.CONNECTION
    assert "STARTTLS" in failure.detail
    assert plain.handler.received == []


def test_login_over_starttls(tls: ServerTls) -> None:
    with serve_in_thread(tls=tls, starttls=True, login=("clinic", "s3cret")) as server:
        settings = server.settings(username="clinic", password="s3cret")
        [ok] = send(SmtpEmailChannel(settings), email_for(1))
        [refused] = send(SmtpEmailChannel(replace(settings, password="wrong")), email_for(2))
    assert isinstance(ok, Receipt)
    assert [received.authenticated for received in server.handler.received] == [True]
    failure = failure_of(refused).failure
    assert (failure.kind, failure.status) == (FailureKind.SMTP, 535)
    assert "s3cret" not in str(refused) and "wrong" not in str(refused)


def test_credentials_for_a_server_that_offers_no_login_are_a_failure(plain: SmtpServer) -> None:
    # aiosmtpd offers AUTH only over TLS: this plain server offers none.
    settings = plain.settings(username="clinic", password="s3cret")
    [outcome] = send(SmtpEmailChannel(settings), email_for(1))
    failure = failure_of(outcome).failure
    assert (failure.kind, failure.status) == (FailureKind.SMTP, None)
    assert "AUTH" in failure.detail
    assert plain.handler.received == []


# -- refusals and failures, as facts -----------------------------------------------------------


@pytest.mark.parametrize("code", [550, 451])
def test_a_refused_recipient_is_an_smtp_failure_with_the_reply_code(
    code: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="reminder_service")
    refused = "refused.patient@example.org"
    with serve_in_thread(RecordingHandler(refuse={refused: code})) as server:
        outcomes = send(
            SmtpEmailChannel(server.settings(connections=1)),
            email_for(1, to=refused),
            email_for(2),
        )
    failure = failure_of(outcomes[0]).failure
    assert (failure.provider, failure.kind, failure.status) == ("smtp", FailureKind.SMTP, code)
    # The server's reply quotes the address; nothing of it is passed on, or logged.
    assert "example.org" not in str(outcomes[0]) and "refused" in failure.detail
    assert "Test Patient" not in str(outcomes[0])
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("reminder_service")]
    assert not [line for line in ours if "example.org" in line or "Test Patient" in line]
    # The session was reset and carried the next message.
    assert isinstance(outcomes[1], Receipt)
    assert [received.rcpt_tos for received in server.handler.received] == [(PATIENT,)]
    assert server.handler.connections == 1


def test_a_header_injection_is_refused_before_connecting(plain: SmtpServer) -> None:
    injected = email_for(1, subject="Your appointment\r\nBcc: someone.else@example.org")
    [outcome] = send(SmtpEmailChannel(plain.settings()), injected)
    failure = failure_of(outcome).failure
    assert failure.kind is FailureKind.LOCAL and "example.org" not in failure.detail
    assert plain.handler.connections == 0


def test_nothing_listening_is_a_connection_failure() -> None:
    with socket.socket() as reserved:  # bound, never listening: connecting is refused
        reserved.bind(("127.0.0.1", 0))
        port = reserved.getsockname()[1]
        with serve_in_thread() as server:
            settings = server.settings(port=port)
        [outcome] = send(SmtpEmailChannel(settings), email_for(1))
    failure = failure_of(outcome).failure
    assert failure.kind is FailureKind.CONNECTION and failure.status is None


def test_a_server_that_never_answers_is_a_timeout() -> None:
    # It accepts the connection (the OS does, from the backlog) but never greets.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        with serve_in_thread() as server:
            settings = server.settings(port=silent.getsockname()[1], timeout_seconds=0.2)
        [outcome] = send(SmtpEmailChannel(settings), email_for(1))
    assert failure_of(outcome).failure.kind is FailureKind.TIMEOUT


def test_a_connection_lost_after_the_message_went_out_is_reported_not_resent() -> None:
    with serve_in_thread(RecordingHandler(drop_after_data=1)) as server:
        [outcome] = send(SmtpEmailChannel(server.settings()), email_for(1))
    failure = failure_of(outcome).failure
    assert failure.kind is FailureKind.CONNECTION
    assert "may have been accepted" in failure.detail
    assert len(server.handler.received) == 1  # taken once, and not sent again
    assert server.handler.connections == 1


# -- reuse and reconnection --------------------------------------------------------------------


def test_twenty_sends_on_one_connection(plain: SmtpServer) -> None:
    outcomes = send(
        SmtpEmailChannel(plain.settings(connections=1)), *(email_for(n) for n in range(20))
    )
    assert all(isinstance(outcome, Receipt) for outcome in outcomes)
    assert len(plain.handler.received) == 20
    assert plain.handler.connections == 1
    assert plain.handler.quits == 1  # aclose said goodbye


def test_concurrent_sends_use_at_most_the_configured_connections(plain: SmtpServer) -> None:
    outcomes = send(
        SmtpEmailChannel(plain.settings(connections=4)),
        *(email_for(n) for n in range(40)),
        concurrently=True,
    )
    assert all(isinstance(outcome, Receipt) for outcome in outcomes)
    assert sorted(r.message()["X-Reminder-Id"] for r in plain.handler.received) == sorted(
        str(n) for n in range(40)
    )
    # The first four sends find no idle session and open one each; the rest wait for those.
    assert plain.handler.connections == 4
    assert plain.handler.quits == 4


def test_after_the_server_drops_an_idle_connection_the_next_send_reconnects(
    plain: SmtpServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="reminder_service")
    channel = SmtpEmailChannel(plain.settings(connections=1))

    async def main() -> list[Outcome]:
        try:
            first = await attempt(channel, email_for(1))
            # Blocking this loop while the server closes: the channel has not seen the close
            # when it next sends, as with a session that timed out while nothing was happening.
            assert plain.drop_connections() == 1
            second = await attempt(channel, email_for(2))
            return [first, second]
        finally:
            await channel.aclose()

    outcomes = asyncio.run(main())
    assert all(isinstance(outcome, Receipt) for outcome in outcomes)
    assert [r.message()["X-Reminder-Id"] for r in plain.handler.received] == ["1", "2"]
    assert plain.handler.connections == 2
    # Seen before sending (the socket had the server's close waiting), not by a failed MAIL.
    assert [r.getMessage() for r in caplog.records if r.name.startswith("reminder_service")] == [
        "smtp: the server closed an idle connection; opening a new one"
    ]


def test_a_session_dropped_before_the_message_is_retried_once_on_a_new_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="reminder_service")
    handler = RecordingHandler()
    with serve_in_thread(handler) as server:
        channel = SmtpEmailChannel(server.settings(connections=1))

        async def main() -> list[Outcome]:
            try:
                first = await attempt(channel, email_for(1))
                handler.drop_at_mail = 1  # the server hangs up at the reused session's MAIL
                second = await attempt(channel, email_for(2))
                return [first, second]
            finally:
                await channel.aclose()

        outcomes = asyncio.run(main())
    assert all(isinstance(outcome, Receipt) for outcome in outcomes)
    assert [r.message()["X-Reminder-Id"] for r in handler.received] == ["1", "2"]
    assert handler.connections == 2
    assert [r.getMessage() for r in caplog.records if r.name.startswith("reminder_service")] == [
        "smtp: the server closed an idle connection; sending on a new one"
    ]


def test_a_new_session_dropped_before_the_message_is_a_failure_not_a_loop() -> None:
    with serve_in_thread(RecordingHandler(drop_at_mail=1)) as server:
        [outcome] = send(SmtpEmailChannel(server.settings()), email_for(1))
    assert failure_of(outcome).failure.kind is FailureKind.CONNECTION
    assert server.handler.received == []
    assert server.handler.connections == 1


def test_the_pool_never_holds_more_sessions_than_configured_and_replaces_dropped_ones(
    plain: SmtpServer,
) -> None:
    channel = SmtpEmailChannel(plain.settings(connections=3))

    async def main() -> list[Outcome]:
        try:
            first = await asyncio.gather(*(attempt(channel, email_for(n)) for n in range(30)))
            # Blocking this loop while the server closes every idle session, as one does
            # after an idle timeout or a restart: the pool has not seen the closes yet.
            assert plain.drop_connections() == 3
            second = await asyncio.gather(*(attempt(channel, email_for(n)) for n in range(30, 60)))
            return [*first, *second]
        finally:
            await channel.aclose()

    outcomes = asyncio.run(main())
    assert all(isinstance(outcome, Receipt) for outcome in outcomes)
    # Each email exactly once, though every session it had was dropped in between.
    assert sorted(int(r.message()["X-Reminder-Id"]) for r in plain.handler.received) == list(
        range(60)
    )
    assert plain.handler.connections == 6  # three, then three to replace them
    assert plain.handler.most_open == 3  # never more at once than configured


def test_in_a_pool_an_email_in_doubt_is_not_resent_and_its_retry_keeps_its_message_id() -> None:
    handler = RecordingHandler(drop_after_data=1)  # takes the first message, then hangs up
    with serve_in_thread(handler) as server:
        channel = SmtpEmailChannel(server.settings(connections=2))

        async def main() -> tuple[list[Outcome], Outcome]:
            try:
                outcomes = await asyncio.gather(
                    *(attempt(channel, email_for(n)) for n in range(10))
                )
                in_doubt = [
                    n for n, outcome in enumerate(outcomes) if isinstance(outcome, ChannelError)
                ]
                assert len(in_doubt) == 1
                # The dispatcher's retry: the same reminder, the same Message-ID.
                retried = await attempt(channel, email_for(in_doubt[0]))
                return outcomes, retried
            finally:
                await channel.aclose()

        outcomes, retried = asyncio.run(main())
    [failure] = [failure_of(o).failure for o in outcomes if isinstance(o, ChannelError)]
    assert failure.kind is FailureKind.CONNECTION
    assert "may have been accepted" in failure.detail
    assert isinstance(retried, Receipt)
    messages = [received.message() for received in handler.received]
    # Ten emails, the one in doubt taken once and once more by the retry: never resent by the
    # channel itself.
    assert len(messages) == 11
    ids: dict[str, set[str]] = {}
    for message in messages:
        ids.setdefault(message["X-Reminder-Id"], set()).add(message["Message-ID"])
    # One Message-ID per reminder, the same on both deliveries, and no two reminders sharing one.
    assert all(len(message_ids) == 1 for message_ids in ids.values())
    assert len({next(iter(message_ids)) for message_ids in ids.values()}) == len(ids) == 10
    assert handler.connections == 3  # the session lost after DATA was replaced, not reused
    assert handler.most_open <= 2
