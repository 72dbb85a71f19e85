"""The .ics written directly (channels/calendar_invite.py) reads back, through icalendar's
parser, as the event it was written from, whatever the text; its TEXT values keep RFC 5545's
grammar and its lines RFC 5545's length."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import example, given
from hypothesis import strategies as st
from icalendar import Calendar

from reminder_service.channels.base import CalendarEvent
from reminder_service.channels.calendar_invite import PRODID, build_invite, invite_method

# Any text a clinic's configuration or an import could carry, line breaks and tabs included.
TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x85")
    | st.sampled_from("\r\n\t\\;,:\"'^"),
    max_size=120,
)
ADDRESS = st.emails() | st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x85\u2028\u2029"),
    min_size=1,
    max_size=80,
)
MOMENT = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)


@st.composite
def events(draw: st.DrawFn) -> CalendarEvent:
    start = draw(MOMENT)
    return CalendarEvent(
        uid=draw(TEXT),
        sequence=draw(st.integers(0, 10_000)),
        start=start,
        end=start + timedelta(minutes=draw(st.integers(0, 600))),
        summary=draw(TEXT),
        location=draw(TEXT),
        organizer=draw(ADDRESS),
        cancelled=draw(st.booleans()),
        organizer_name=draw(TEXT),
        attendee=draw(st.just("") | ADDRESS),
        attendee_name=draw(TEXT),
    )


def read(ics: bytes) -> dict[str, Any]:
    """What a calendar reads: the invitation parsed by icalendar."""
    calendar = Calendar.from_ical(ics)
    [entry] = calendar.walk("VEVENT")
    facts: dict[str, Any] = {name: str(calendar[name]) for name in ("VERSION", "PRODID", "METHOD")}
    for name in ("UID", "SEQUENCE", "DTSTAMP", "DTSTART", "DTEND", "SUMMARY", "LOCATION"):
        facts[name] = entry.decoded(name)
    facts["STATUS"] = str(entry["STATUS"])
    for name in ("ORGANIZER", "ATTENDEE"):
        if name in entry:
            facts[name] = (str(entry[name]), dict(entry[name].params))
    return facts


def meant(event: CalendarEvent, stamp: datetime) -> dict[str, Any]:
    """What it should read: the event's own values (a line break is one "\\n" in iCalendar;
    times in whole seconds)."""

    def lines(text: str) -> str:
        return text.replace("\r\n", "\n").replace("\r", "\n")

    def person(address: str, name: str, **params: str) -> tuple[str, dict[str, str]]:
        return f"mailto:{address}", ({"CN": lines(name)} if name else {}) | params

    facts: dict[str, Any] = {
        "VERSION": "2.0",
        "PRODID": PRODID,
        "METHOD": invite_method(event),
        "UID": lines(event.uid),
        "SEQUENCE": event.sequence,
        "DTSTAMP": stamp.replace(microsecond=0),
        "DTSTART": event.start.replace(microsecond=0),
        "DTEND": event.end.replace(microsecond=0),
        "SUMMARY": lines(event.summary),
        "LOCATION": lines(event.location),
        "STATUS": "CANCELLED" if event.cancelled else "CONFIRMED",
        "ORGANIZER": person(event.organizer, event.organizer_name),
    }
    if event.attendee:
        facts["ATTENDEE"] = person(
            event.attendee,
            event.attendee_name,
            ROLE="REQ-PARTICIPANT",
            PARTSTAT="ACCEPTED",
            RSVP="FALSE",
        )
    return facts


# RFC 5545 3.3.11: TEXT is safe characters and the escapes \\ \; \, \n \N; icalendar's
# parser would also take a bare comma or semicolon, so the grammar is checked as written.
TEXT_VALUE = re.compile(r"(?:[^\\;,\x00-\x08\x0a-\x1f\x7f]|\\[\\;,nN])*")


# A fold right after an escape's backslash: allowed by RFC 5545, mishandled by some clients.
FOLD_IN_ESCAPE = re.compile(r"(?<!\\)(?:\\\\)*\\\r\n ")


def text_lines(ics: bytes) -> list[str]:
    """The UID, SUMMARY and LOCATION lines, as written (folded)."""
    logical = re.split(r"\r\n(?! )", ics.decode("utf-8"))
    return [line for line in logical if line.startswith(("UID:", "SUMMARY:", "LOCATION:"))]


HOSTILE = "Zoë \"O'Test\"; a\\b, c^d^n^'^^\r\ne\\N:" + "ü" * 40  # every escape, then folding


@given(event=events(), stamp=MOMENT)
@example(
    event=CalendarEvent(
        uid=HOSTILE,
        sequence=1,
        start=datetime(2026, 12, 9, 9, 30, tzinfo=UTC),
        end=datetime(2026, 12, 9, 11, 0, tzinfo=UTC),
        summary=HOSTILE,
        location=HOSTILE,
        organizer="reminders@example.org",
        organizer_name=HOSTILE,
        attendee="test.patient@example.org",
        attendee_name=HOSTILE,
    ),
    stamp=datetime(2026, 11, 19, 11, 0, 0, 123456, tzinfo=UTC),
)
@example(  # escapes where the lines fold, at either parity
    event=CalendarEvent(
        uid="u" * 70 + ";" * 40,
        sequence=0,
        start=datetime(2026, 12, 9, 9, 30, tzinfo=UTC),
        end=datetime(2026, 12, 9, 11, 0, tzinfo=UTC),
        summary="a" * 66 + ",\\;" * 30,
        location="a" * 67 + ",\\;" * 30,
        organizer="reminders@example.org",
        organizer_name="c" * 60 + '^"' * 30,
    ),
    stamp=datetime(2026, 11, 19, 11, 0, tzinfo=UTC),
)
def test_the_direct_form_reads_as_the_one_icalendar_builds(
    event: CalendarEvent, stamp: datetime
) -> None:
    ics = build_invite(event, stamp)
    assert read(ics) == meant(event, stamp)
    lines = text_lines(ics)
    assert len(lines) == 3
    for line in lines:
        assert TEXT_VALUE.fullmatch(line.replace("\r\n ", "").partition(":")[2]), line
        assert not FOLD_IN_ESCAPE.search(line), line
    physical = ics.split(b"\r\n")
    assert physical[-1] == b""  # every line ends with CRLF
    for line in physical:
        assert len(line) <= 75  # RFC 5545 3.1, in octets
        line.decode("utf-8")  # folded between characters, never inside one
