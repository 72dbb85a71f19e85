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
"""

from __future__ import annotations

from datetime import UTC, datetime

from icalendar import Calendar, Event, vCalAddress

from .base import CalendarEvent

PRODID = "-//reminder-service//appointment reminders//EN"


def invite_method(event: CalendarEvent) -> str:
    """The iTIP method: also the `method` parameter of the text/calendar MIME part."""
    return "CANCEL" if event.cancelled else "REQUEST"


def build_invite(event: CalendarEvent, stamp: datetime) -> bytes:
    """The .ics for one version of an appointment; `stamp` (DTSTAMP) is when it is sent."""
    calendar = Calendar()
    calendar.add("prodid", PRODID)
    calendar.add("version", "2.0")
    calendar.add("method", invite_method(event))

    entry = Event()
    entry.add("uid", event.uid)
    entry.add("sequence", event.sequence)
    entry.add("dtstamp", _utc(stamp))
    entry.add("dtstart", _utc(event.start))
    entry.add("dtend", _utc(event.end))
    entry.add("summary", event.summary)
    entry.add("location", event.location)
    organizer = vCalAddress(f"mailto:{_address(event.organizer)}")
    if event.organizer_name:
        organizer.params["CN"] = event.organizer_name
    entry.add("organizer", organizer)
    if event.attendee:
        attendee = vCalAddress(f"mailto:{_address(event.attendee)}")
        if event.attendee_name:
            attendee.params["CN"] = event.attendee_name
        attendee.params["ROLE"] = "REQ-PARTICIPANT"
        attendee.params["PARTSTAT"] = "ACCEPTED"
        attendee.params["RSVP"] = "FALSE"
        entry.add("attendee", attendee)
    entry.add("status", "CANCELLED" if event.cancelled else "CONFIRMED")
    calendar.add_component(entry)
    ics: bytes = calendar.to_ical()
    return ics


def _address(address: str) -> str:
    # icalendar writes a CAL-ADDRESS as given: a line break would start an .ics line of the
    # sender's choosing.
    if "\r" in address or "\n" in address:
        raise ValueError("a calendar address cannot contain line breaks")
    return address


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        # A naive time has no single meaning across clinics' zones; refuse rather than guess.
        raise ValueError("calendar times must be timezone-aware")
    return moment.astimezone(UTC)
