"""Synthetic sample appointments for the quick start and demos.

The patients live in the clinic's own time zone, and each appointment is at a daytime slot on a
weekday, far enough ahead that most of its steps are still to come, and near enough that a
catch-up medicines reminder is due at once.

Running the quick start again must change nothing, so the dates are not simply "today plus n
days": a second run on a later day would move them, rescheduling every sample appointment and
cancelling and re-planning its reminders. Instead a sample appointment already stored is given
back as stored (the import finds it unchanged); only one that is missing, or whose start has
passed (a demo needs steps still to come), is placed from today.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, time, timedelta

from ..domain.appointment import Appointment, AppointmentStatus, Patient, Tristate
from ..domain.clinic import Clinic
from ..domain.timing import local_to_utc, zone

SATURDAY = 5

# For tests and benchmarks that need messages due at once whatever the hour: a zone where it is
# daytime now. The sample patients themselves always live in their clinic's zone.
CANDIDATE_ZONES = (
    "Europe/London",
    "America/New_York",
    "America/Los_Angeles",
    "Pacific/Auckland",
    "Australia/Sydney",
    "Asia/Tokyo",
    "Asia/Kolkata",
    "Asia/Dubai",
    "America/Sao_Paulo",
    "Pacific/Honolulu",
)

# (first, last, days ahead, local start, sedation, anticoagulant, location)
PEOPLE = (
    ("Alex", "Sample", 10, time(9, 30), Tristate.YES, Tristate.YES, "Day Unit, Level 2"),
    ("Sam", "Example", 3, time(13, 30), Tristate.UNKNOWN, Tristate.UNKNOWN, "Day Unit, Level 2"),
    ("Jo", "Testperson", 5, time(11, 30), Tristate.NO, Tristate.NO, "Treatment Room 4"),
)
SAMPLE_IDS = tuple(f"SAMPLE-{index}" for index in range(1, len(PEOPLE) + 1))


def daytime_zone(clinic: Clinic, now: datetime) -> str:
    """The clinic's zone if it is daytime there, else the first candidate where it is."""
    window = clinic.send_window
    latest = (datetime.combine(now.date(), window.closes) - timedelta(hours=1)).time()
    for name in (clinic.timezone, *CANDIDATE_ZONES):
        wall = now.astimezone(zone(name)).time()
        if window.opens <= wall < latest:
            return name
    return clinic.timezone


def weekday_from(day: date) -> date:
    """`day`, or the Monday after it if it falls on a weekend (clinics list no weekend slots)."""
    while day.weekday() >= SATURDAY:
        day += timedelta(days=1)
    return day


def sample_appointments(
    clinic: Clinic, now: datetime, stored: Mapping[str, Appointment]
) -> list[Appointment]:
    """The sample appointments: those in `stored` (by id) whose start is still to come as they
    are, the others placed from the clinic's today at `now`."""
    tz = zone(clinic.timezone)
    today = now.astimezone(tz).date()
    result = []
    for index, (external_id, person) in enumerate(zip(SAMPLE_IDS, PEOPLE, strict=True), 1):
        kept = stored.get(external_id)
        if kept is not None and kept.start > now:
            result.append(kept)
            continue
        first, last, days, at, sedation, anticoagulant, location = person
        patient = Patient(
            external_id=f"SAMPLE-P{index}",
            first_name=first,
            last_name=last,
            mobile=f"+44770090012{index}",  # Ofcom drama range: never a real subscriber
            email=f"{first.lower()}.{last.lower()}@example.org",
            language=clinic.default_language,
            timezone=clinic.timezone,
            caregiver=None,  # the samples have none: said, so a re-run compares equal to stored
        )
        result.append(
            Appointment(
                external_id=external_id,
                clinic_id=clinic.id,
                patient=patient,
                procedure="BMBX",
                start=local_to_utc(weekday_from(today + timedelta(days=days)), at, tz),
                duration_minutes=60,
                location=location,
                status=AppointmentStatus.BOOKED,
                sedation=sedation,
                anticoagulant=anticoagulant,
            )
        )
    return result
