"""What every importer shares: the defaults it assumes, the problems it reports, the changes it
hands on, and the readers of values every source spells alike (languages, zones, yes/no, a local
start time).

An importer (CSV rows, HL7 v2 SIU, FHIR R4, the JSON API) turns what a source sent into
`Change`s (domain.appointment) and `RowError`s; `services.importing` applies the changes. Contact
details are read in `importers.contacts`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import lru_cache
from typing import NamedTuple
from zoneinfo import ZoneInfoNotFoundError

import phonenumbers

from ..domain.appointment import Appointment, AppointmentStatus, Change, Tristate
from ..domain.start_range import EARLIEST_YEAR, LATEST_YEAR, OUT_OF_RANGE, start_problem
from ..domain.timing import zone


@dataclass(frozen=True, slots=True)
class RowError:
    line: int  # the file's line, the message's or the item's index
    column: str  # the header as written in the file (or the item's field); "" for the whole row
    reason: str

    def __str__(self) -> str:
        where = f"line {self.line}" + (f", column {self.column!r}" if self.column else "")
        return f"{where}: {self.reason}"


@dataclass(frozen=True, slots=True)
class ImportDefaults:
    """What an import assumes for what a row or message does not say: its clinic (the feed's)
    and that clinic's zone, phone region and language."""

    clinic_id: str
    timezone: str
    phone_region: str
    language: str
    duration_minutes: int = 60
    # (clinic id, phone region) of every configured clinic: a row naming another clinic has its
    # numbers read in that clinic's country, never in this one's.
    clinic_regions: tuple[tuple[str, str], ...] = ()
    # A FHIR RelatedPerson records no consent: True when the clinic collects both upstream.
    fhir_caregiver_copies: bool = False

    def region_of(self, clinic_id: str) -> str | None:
        if clinic_id == self.clinic_id:
            return self.phone_region.upper()
        return dict(self.clinic_regions).get(clinic_id)


def defaults_problems(defaults: ImportDefaults) -> list[str]:
    problems = []
    if not defaults.clinic_id.strip():
        problems.append("default clinic_id is empty")
    if not is_zone(defaults.timezone):
        problems.append(f"default timezone {defaults.timezone!r} is not an IANA time zone")
    if defaults.phone_region.upper() not in phonenumbers.SUPPORTED_REGIONS:
        problems.append(f"default phone_region {defaults.phone_region!r} is not a region like GB")
    if normalise_language(defaults.language) is None:
        problems.append(f"default language {defaults.language!r} is not a tag like en-GB")
    if not 1 <= defaults.duration_minutes <= 1440:
        problems.append("default duration_minutes must be 1 to 1440")
    return problems


class Warned(NamedTuple):
    """A row that imports, and what was dropped from it (a caregiver's number that cannot be
    read): its warnings."""

    change: Change
    warnings: list[RowError]


# What converting one row or item gives.
Converted = Change | Warned | list[RowError]


def split_warnings(result: Converted) -> tuple[Change | list[RowError], list[RowError]]:
    if isinstance(result, Warned):
        return result.change, result.warnings
    return result, []


def applied_as(change: Change, *, no_show: bool) -> Change:
    """The change as it is applied. A no-show (HL7 S26, FHIR `noshow`) stops the rest of the
    appointment's messages, after-care included: a described one is applied as a cancellation
    (a cancellation by id alone already is one)."""
    if no_show and isinstance(change, Appointment):
        return replace(change, status=AppointmentStatus.CANCELLED)
    return change


# --- values every source spells alike -----------------------------------------------------------

TRISTATE_WORDS: dict[str, Tristate] = {
    **dict.fromkeys(("yes", "y", "true", "1"), Tristate.YES),
    **dict.fromkeys(("no", "n", "false", "0"), Tristate.NO),
    **dict.fromkeys(("unknown", ""), Tristate.UNKNOWN),
}
_LANGUAGE = re.compile(
    r"([a-z]{2,3})(?:[-_]([a-z]{4}))?(?:[-_]([a-z]{2}|[0-9]{3}))?", re.IGNORECASE
)


@lru_cache(maxsize=256)
def normalise_language(text: str) -> str | None:
    """`EN-gb` -> `en-GB`; None if it does not look like a BCP 47 language tag."""
    match = _LANGUAGE.fullmatch(text.strip())
    if match is None:
        return None
    language, script, region = match.groups()
    parts = [language.lower(), script.title() if script else "", region.upper() if region else ""]
    return "-".join(p for p in parts if p)


@lru_cache(maxsize=256)
def is_zone(name: str) -> bool:
    try:
        zone(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a name too long for a path
        return False
    return True


@lru_cache(maxsize=16384)
def resolve_local(moment: datetime, zone_name: str) -> datetime | str:
    """Aware -> UTC; naive -> wall-clock in the zone; or why it is no appointment start (a local
    time skipped when clocks go forward, a year outside domain.start_range). A time that occurs
    twice when clocks go back takes its first occurrence (PEP 495 fold=0: the earlier instant,
    still on summer time)."""
    if not EARLIEST_YEAR <= moment.year <= LATEST_YEAR:
        return OUT_OF_RANGE  # checked first: near year 1 or 9999 the conversion overflows
    if moment.tzinfo is not None:
        utc = moment.astimezone(UTC)
        return start_problem(utc) or utc
    tz = zone(zone_name)
    utc = moment.replace(tzinfo=tz).astimezone(UTC)
    if utc.astimezone(tz).replace(tzinfo=None) != moment:
        return f"{moment:%Y-%m-%d %H:%M} does not exist in {zone_name} (clocks go forward)"
    return start_problem(utc) or utc
