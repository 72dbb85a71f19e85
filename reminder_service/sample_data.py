"""Synthetic sample appointments placed relative to now, for the quick start and demos.

Patients get a time zone where it is now daytime, so the first messages (booking confirmations
and a catch-up medicines reminder) are inside the send window and reach the outbox at once.
"""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from .domain.appointment import Appointment, AppointmentStatus, Patient, Tristate
from .domain.clinic import Clinic
from .domain.timing import local_to_utc, zone

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


def daytime_zone(clinic: Clinic, now: datetime) -> str:
    """The clinic's zone if it is daytime there, else the first candidate where it is."""
    window = clinic.send_window
    latest = (datetime.combine(now.date(), window.closes) - timedelta(hours=1)).time()
    for name in (clinic.timezone, *CANDIDATE_ZONES):
        wall = now.astimezone(zone(name)).time()
        if window.opens <= wall < latest:
            return name
    return clinic.timezone


def sample_appointments(clinic: Clinic, now: datetime) -> list[Appointment]:
    tz_name = daytime_zone(clinic, now)
    tz = zone(tz_name)
    today = now.astimezone(tz).date()
    stamp = now.astimezone(UTC).strftime("%Y%m%d%H%M")

    def at(days: int, hour: int, minute: int = 0) -> datetime:
        return local_to_utc(today + timedelta(days=days), time(hour, minute), tz)

    people = [
        # (first, last, days ahead, hour, sedation, anticoagulant, location)
        ("Alex", "Sample", 10, 9, Tristate.YES, Tristate.YES, "Day Unit, Level 2"),
        ("Sam", "Example", 3, 13, Tristate.UNKNOWN, Tristate.UNKNOWN, "Day Unit, Level 2"),
        ("Jo", "Testperson", 5, 11, Tristate.NO, Tristate.NO, "Treatment Room 4"),
    ]
    result = []
    for index, (first, last, days, hour, sedation, anticoagulant, location) in enumerate(people, 1):
        patient = Patient(
            external_id=f"SAMPLE-P{index}",
            first_name=first,
            last_name=last,
            mobile=f"+44770090012{index}",  # Ofcom drama range: never a real subscriber
            email=f"{first.lower()}.{last.lower()}@example.org",
            language=clinic.default_language,
            timezone=tz_name,
        )
        result.append(
            Appointment(
                external_id=f"SAMPLE-{stamp}-{index}",
                clinic_id=clinic.id,
                patient=patient,
                procedure="BMBX",
                start=at(days, hour, 30),
                duration_minutes=60,
                location=location,
                status=AppointmentStatus.BOOKED,
                sedation=sedation,
                anticoagulant=anticoagulant,
            )
        )
    return result
