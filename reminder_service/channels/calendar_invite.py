"""An appointment as an iCalendar invitation (RFC 5545/5546), attached to reminder emails.

One VEVENT per appointment: its UID stays the same across versions and SEQUENCE grows, so a
mail client updates (or, with METHOD:CANCEL, removes) the entry it already has instead of adding
a second one. Times are written in UTC, which every client reads without a VTIMEZONE block.
Nothing here chooses wording: the summary and location come from the caller.

Who is who. The ORGANIZER is the clinic (its name as CN, its From address), so a reply or a
question from the calendar goes to the clinic, the sender the patient sees. The patient is the
one ATTENDEE. RFC 5546 allows no ATTENDEE in a PUBLISH (3.2.1) and requires one in a REQUEST
and a CANCEL, so naming the patient means METHOD:REQUEST (and CANCEL to withdraw it); that is
also what Outlook, Apple Calendar and Gmail need to update or remove an entry they added from
an earlier email (a PUBLISH is often imported as a second, unlinked entry). The appointment is
booked already, not proposed: the patient is PARTSTAT=ACCEPTED with RSVP=FALSE, so clients add
it as accepted and do not prompt the patient to send an acceptance (an iTIP REPLY) back to the
clinic's mailbox; a client that offers "decline" anyway sends it to the clinic, whose staff
read that mailbox.

Written directly, line by line, like the MIME around it (`email_mime.py`): building it through
icalendar's objects cost about 0.19 ms of CPU an invitation (a sixth of the SMTP channel's CPU in
bench/email_send.py, where half the emails carry one); this fixed structure takes under 0.01 ms.
Text is escaped as RFC 5545 3.3.11 says, parameter values as RFC 6868 says (and always quoted),
and lines are folded at 75 octets, between characters and never inside an escape. A property
test reads it back with icalendar's parser, whatever the text.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from .base import CalendarEvent

PRODID = "-//reminder-service//appointment reminders//EN"
LINE_OCTETS = 75  # RFC 5545 3.1, without the CRLF
# What folding keeps together: an escape and the character it escapes, or one character. The
# escape is a backslash in TEXT values, a caret in parameter values (RFC 6868).
_TEXT_UNIT = re.compile(r"\\.|.", re.DOTALL)
_PARAMETER_UNIT = re.compile(r"\^.|.", re.DOTALL)


def invite_method(event: CalendarEvent) -> str:
    """The iTIP method: also the `method` parameter of the text/calendar MIME part."""
    return "CANCEL" if event.cancelled else "REQUEST"


def build_invite(event: CalendarEvent, stamp: datetime) -> bytes:
    """The .ics for one version of an appointment; `stamp` (DTSTAMP) is when it is sent."""
    lines = [
        "BEGIN:VCALENDAR",
        "VERSION:2.0",
        f"PRODID:{PRODID}",
        f"METHOD:{invite_method(event)}",
        "BEGIN:VEVENT",
        f"UID:{_text(event.uid)}",
        f"SEQUENCE:{int(event.sequence)}",
        f"DTSTAMP:{_utc(stamp)}",
        f"DTSTART:{_utc(event.start)}",
        f"DTEND:{_utc(event.end)}",
        f"SUMMARY:{_text(event.summary)}",
        f"LOCATION:{_text(event.location)}",
    ]
    people = [f"ORGANIZER{_cn(event.organizer_name)}:{_mailto(event.organizer)}"]
    if event.attendee:
        people.append(
            f"ATTENDEE{_cn(event.attendee_name)};ROLE=REQ-PARTICIPANT;PARTSTAT=ACCEPTED;"
            f"RSVP=FALSE:{_mailto(event.attendee)}"
        )
    end = [
        f"STATUS:{'CANCELLED' if event.cancelled else 'CONFIRMED'}",
        "END:VEVENT",
        "END:VCALENDAR",
    ]
    folded = [
        *(_fold(line, _TEXT_UNIT) for line in lines),
        *(_fold(line, _PARAMETER_UNIT) for line in people),
        *end,
    ]
    return ("\r\n".join(folded) + "\r\n").encode("utf-8")


def _utc(moment: datetime) -> str:
    if moment.tzinfo is None:
        # A naive time has no single meaning across clinics' zones; refuse rather than guess.
        raise ValueError("calendar times must be timezone-aware")
    return moment.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _text(value: str) -> str:
    """RFC 5545 TEXT: backslash, semicolon and comma escaped, any line break as \\n."""
    return (
        value.replace("\\", "\\\\")
        .replace(";", "\\;")
        .replace(",", "\\,")
        .replace("\r\n", "\\n")
        .replace("\n", "\\n")
        .replace("\r", "\\n")
    )


def _cn(name: str) -> str:
    """The CN parameter (a display name), or nothing. RFC 6868: ^ is ^^, a double quote ^',
    a line break ^n; quoted, so commas, colons and semicolons need nothing more."""
    if not name:
        return ""
    escaped = (
        name.replace("^", "^^")
        .replace('"', "^'")
        .replace("\r\n", "^n")
        .replace("\n", "^n")
        .replace("\r", "^n")
    )
    return f';CN="{escaped}"'


def _mailto(address: str) -> str:
    # A URI is written as it is: a line break in it would start a line of our choosing.
    if "\r" in address or "\n" in address:
        raise ValueError("calendar addresses may not contain line breaks")
    return f"mailto:{address}"


def _fold(line: str, units: re.Pattern[str]) -> str:
    if len(line) <= LINE_OCTETS and line.isascii():
        return line
    folded: list[str] = []
    current: list[str] = []
    octets = 0
    limit = LINE_OCTETS
    for unit in units.findall(line):
        size = len(unit.encode("utf-8"))
        if current and octets + size > limit:
            folded.append("".join(current))
            current, octets = [], 0
            limit = LINE_OCTETS - 1  # a continuation line starts with a space
        current.append(unit)
        octets += size
    folded.append("".join(current))
    return "\r\n ".join(folded)
