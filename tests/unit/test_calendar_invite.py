"""The .ics for an appointment, and the email's MIME form (where the .ics goes, and that the
directly written form is 7-bit, decodes to the original and refuses header injection)."""

from __future__ import annotations

import email
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import default
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from icalendar import Calendar

from reminder_service.channels.base import CalendarEvent, ListUnsubscribe, OutgoingEmail
from reminder_service.channels.calendar_invite import build_invite, invite_method
from reminder_service.channels.email_mime import build_mime, render_mime

LONDON = ZoneInfo("Europe/London")
SENT_AT = datetime(2026, 11, 19, 11, 0, tzinfo=UTC)
START = datetime(2026, 12, 9, 9, 30, tzinfo=LONDON)

EVENT = CalendarEvent(
    uid="appointment-A1@reminder-service",
    sequence=0,
    start=START,
    end=START + timedelta(minutes=90),
    summary="Your appointment at Riverside Haematology",
    location="Riverside Hospital, Day Unit, Level 2",
    organizer="reminders@example.org",
)

EMAIL = OutgoingEmail(
    reminder_id=7,
    appointment_id="A1",
    step="booked",
    to="test.patient@example.org",
    from_name="Riverside Haematology",
    subject="Your appointment on 9 December",
    text="Dear Test Patient,\nyour appointment is on 9 December at 09:30.\n",
    html="<p>Dear Test Patient,</p><p>your appointment is on 9 December at 09:30.</p>",
    message_id="<reminder-7.v1@reminder-service>",
    sent_at=SENT_AT,
)


def parse(ics: bytes) -> tuple[Calendar, Any]:
    calendar = Calendar.from_ical(ics)
    events = calendar.walk("VEVENT")
    assert len(events) == 1
    return calendar, events[0]


def test_a_booking_is_a_request_with_every_field_in_utc() -> None:
    calendar, event = parse(build_invite(EVENT, SENT_AT))
    assert str(calendar["VERSION"]) == "2.0"
    assert str(calendar["PRODID"])
    assert str(calendar["METHOD"]) == "REQUEST"
    assert str(event["UID"]) == "appointment-A1@reminder-service"
    assert int(event["SEQUENCE"]) == 0
    assert event.decoded("DTSTAMP") == SENT_AT
    # 09:30 in London in December is 09:30 UTC; written as UTC ("...Z"), not in a local zone
    assert event.decoded("DTSTART") == datetime(2026, 12, 9, 9, 30, tzinfo=UTC)
    assert event.decoded("DTEND") == datetime(2026, 12, 9, 11, 0, tzinfo=UTC)
    assert event["DTSTART"].to_ical() == b"20261209T093000Z"
    assert str(event["SUMMARY"]) == EVENT.summary
    assert str(event["LOCATION"]) == EVENT.location
    assert str(event["ORGANIZER"]) == "mailto:reminders@example.org"
    assert str(event["STATUS"]) == "CONFIRMED"


def test_times_in_summer_are_converted_to_utc() -> None:
    summer = datetime(2026, 7, 1, 9, 30, tzinfo=LONDON)  # BST, UTC+1
    _, event = parse(build_invite(replace(EVENT, start=summer, end=summer), SENT_AT))
    assert event["DTSTART"].to_ical() == b"20260701T083000Z"


def test_versions_of_one_appointment_keep_the_uid_and_raise_the_sequence() -> None:
    moved = START + timedelta(days=7)
    versions = [
        EVENT,
        replace(EVENT, sequence=1, start=moved, end=moved + timedelta(minutes=90)),
        replace(EVENT, sequence=2, start=moved, end=moved + timedelta(minutes=90), cancelled=True),
    ]
    parsed = [parse(build_invite(version, SENT_AT)) for version in versions]
    assert {str(event["UID"]) for _, event in parsed} == {EVENT.uid}
    assert [int(event["SEQUENCE"]) for _, event in parsed] == [0, 1, 2]
    assert [str(calendar["METHOD"]) for calendar, _ in parsed] == ["REQUEST", "REQUEST", "CANCEL"]
    assert [str(event["STATUS"]) for _, event in parsed] == ["CONFIRMED", "CONFIRMED", "CANCELLED"]
    assert [invite_method(version) for version in versions] == ["REQUEST", "REQUEST", "CANCEL"]


def test_text_with_commas_and_non_ascii_round_trips() -> None:
    event = replace(EVENT, summary="Rendez-vous à l'hôpital", location="Bâtiment B, niveau 2")
    _, parsed = parse(build_invite(event, SENT_AT))
    assert str(parsed["SUMMARY"]) == "Rendez-vous à l'hôpital"
    assert str(parsed["LOCATION"]) == "Bâtiment B, niveau 2"


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        build_invite(replace(EVENT, start=datetime(2026, 12, 9, 9, 30)), SENT_AT)


def reparse(mime: EmailMessage) -> EmailMessage:
    parsed = email.message_from_bytes(bytes(mime), policy=default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_without_a_calendar_the_email_stays_multipart_alternative() -> None:
    message = reparse(build_mime(EMAIL, "reminders@example.org"))
    assert message.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in message.iter_parts()] == [
        "text/plain",
        "text/html",
    ]


@pytest.mark.parametrize("cancelled", [False, True])
def test_with_a_calendar_the_invite_is_attached_beside_the_alternative(cancelled: bool) -> None:
    message = reparse(
        build_mime(replace(EMAIL, calendar=replace(EVENT, cancelled=cancelled)), "r@example.org")
    )
    assert message.get_content_type() == "multipart/mixed"
    assert message["Message-ID"] == EMAIL.message_id
    body, invite = message.iter_parts()
    assert body.get_content_type() == "multipart/alternative"
    assert [part.get_content_type() for part in body.iter_parts()] == ["text/plain", "text/html"]
    method = "CANCEL" if cancelled else "REQUEST"
    assert invite.get_content_type() == "text/calendar"
    assert invite.get_param("method") == method
    assert invite.get_content_charset() == "utf-8"
    assert invite.get_filename() == "invite.ics"
    calendar, event = parse(invite.get_content().encode())
    assert str(calendar["METHOD"]) == method
    assert event.decoded("DTSTAMP") == EMAIL.sent_at


def test_the_wire_form_is_seven_bit_with_short_lines_and_decodes_to_the_original() -> None:
    long_html = "<p>" + "Riverside Haematology — " * 100 + "</p>"  # one 2,400-character line
    message = replace(
        EMAIL,
        from_name="Hôpital Riverside, Haematology",
        subject="Rendez-vous à l'hôpital le mercredi 9 décembre à 09:30, salle de traitement 4",
        text="Chère Test Patient,\nà bientôt.\n",
        html=long_html,
        calendar=replace(EVENT, summary="Rendez-vous à l'hôpital"),
    )
    raw = render_mime(message, "reminders@example.org")
    assert raw.isascii()
    assert max(len(line) for line in raw.split(b"\r\n")) <= 78
    parsed = email.message_from_bytes(raw, policy=default)
    assert isinstance(parsed, EmailMessage)
    assert parsed["Subject"] == message.subject
    assert parsed["From"].addresses[0].display_name == "Hôpital Riverside, Haematology"
    assert parsed["From"].addresses[0].addr_spec == "reminders@example.org"
    plain, html = (parsed.get_body((kind,)) for kind in ("plain", "html"))
    assert plain is not None and html is not None
    assert plain.get_content().splitlines() == ["Chère Test Patient,", "à bientôt."]
    assert html.get_content().strip() == long_html
    _, event = parse(_invite(parsed))
    assert str(event["SUMMARY"]) == "Rendez-vous à l'hôpital"


def _invite(message: EmailMessage) -> bytes:
    [invite] = [p for p in message.walk() if p.get_content_type() == "text/calendar"]
    return str(invite.get_content()).encode()


@pytest.mark.parametrize(
    "field", ["subject", "from_name", "to", "message_id"], ids=lambda name: name
)
def test_a_line_break_in_a_header_field_is_refused(field: str) -> None:
    injected = replace(EMAIL, **{field: getattr(EMAIL, field) + "\r\nBcc: x@example.org"})
    with pytest.raises(ValueError, match="line breaks"):
        render_mime(injected, "reminders@example.org")


def test_build_mime_is_the_rendered_form_parsed() -> None:
    raw = render_mime(EMAIL, "reminders@example.org")
    built = build_mime(EMAIL, "reminders@example.org")
    assert isinstance(built, EmailMessage)
    parsed = email.message_from_bytes(raw, policy=default)
    for name in ("From", "To", "Subject", "Date", "Message-ID", "X-Reminder-Id"):
        assert built[name] == parsed[name]


def test_the_clinic_organizes_and_the_patient_attends_without_being_asked_to_reply() -> None:
    event = replace(
        EVENT,
        organizer="haematology@riverside.example.org",
        organizer_name='Clínica "Riverside", Día',
        attendee="test.patient@example.org",
        attendee_name="Zoë O'Test",
    )
    for cancelled, method in ((False, "REQUEST"), (True, "CANCEL")):
        calendar, entry = parse(build_invite(replace(event, cancelled=cancelled), SENT_AT))
        # RFC 5546: a REQUEST or CANCEL names its attendees (a PUBLISH may name none).
        assert calendar["METHOD"] == method
        organizer, attendee = entry["ORGANIZER"], entry["ATTENDEE"]
        assert str(organizer) == "mailto:haematology@riverside.example.org"
        assert organizer.params["CN"] == 'Clínica "Riverside", Día'
        assert str(attendee) == "mailto:test.patient@example.org"
        assert attendee.params["CN"] == "Zoë O'Test"
        assert (attendee.params["ROLE"], attendee.params["PARTSTAT"]) == (
            "REQ-PARTICIPANT",
            "ACCEPTED",
        )
        assert attendee.params["RSVP"] == "FALSE"


def test_without_a_patient_address_there_is_no_attendee() -> None:
    _, entry = parse(build_invite(EVENT, SENT_AT))
    assert "ATTENDEE" not in entry
    assert str(entry["ORGANIZER"]) == "mailto:reminders@example.org"


def test_list_unsubscribe_carries_the_mailto_and_the_one_click_url() -> None:
    links = ListUnsubscribe(
        mailto="mailto:haematology@riverside.example.org?subject=unsubscribe",
        one_click="https://reminders.example.org/unsubscribe/12-" + "a" * 24,
    )
    raw = render_mime(replace(EMAIL, unsubscribe=links), "reminders@example.org")
    head = raw.split(b"\r\n\r\n")[0]
    # Folded between the URIs: one a line, each line within RFC 5322's limit.
    assert b"subject=unsubscribe>,\r\n <https://" in head
    assert all(len(line) <= 998 for line in head.split(b"\r\n"))
    message = email.message_from_bytes(raw, policy=default)
    assert str(message["List-Unsubscribe"]) == (
        "<mailto:haematology@riverside.example.org?subject=unsubscribe>, "
        f"<https://reminders.example.org/unsubscribe/12-{'a' * 24}>"
    )
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"


def test_a_mailto_alone_has_no_one_click_post_header() -> None:
    links = ListUnsubscribe(mailto="mailto:unsubscribe@example.org?subject=unsubscribe")
    message = build_mime(replace(EMAIL, unsubscribe=links), "reminders@example.org")
    assert message["List-Unsubscribe"] == "<mailto:unsubscribe@example.org?subject=unsubscribe>"
    assert message["List-Unsubscribe-Post"] is None
    assert build_mime(EMAIL, "reminders@example.org")["List-Unsubscribe"] is None


def test_an_unsubscribe_uri_with_a_line_break_is_refused() -> None:
    links = ListUnsubscribe(mailto="mailto:a@example.org\r\nBcc: x@example.org")
    with pytest.raises(ValueError, match="line breaks"):
        render_mime(replace(EMAIL, unsubscribe=links), "reminders@example.org")


@pytest.mark.parametrize(
    "name",
    ["Riverside Haematology", "Clínica Día", 'Riverside "Day Unit", Level 2', "診療所 Riverside"],
)
def test_the_from_is_the_clinics_named_address_encoded_as_rfc_5322_asks(name: str) -> None:
    message = replace(EMAIL, from_name=name, from_address="haematology@riverside.example.org")
    raw = render_mime(message, "reminders@example.org")
    assert raw.split(b"\r\n\r\n")[0].isascii()  # RFC 2047 words for non-ASCII names
    [sender] = build_mime(message, "reminders@example.org")["From"].addresses
    assert (sender.display_name, sender.addr_spec) == (name, "haematology@riverside.example.org")


@pytest.mark.parametrize("field", ["organizer", "attendee"])
def test_a_line_break_in_a_calendar_address_is_refused(field: str) -> None:
    # It would start an .ics line of the sender's choosing.
    hostile = replace(EVENT, **{field: "x@example.org\r\nATTENDEE:mailto:y@example.org"})
    with pytest.raises(ValueError, match="line breaks"):
        build_invite(hostile, SENT_AT)
