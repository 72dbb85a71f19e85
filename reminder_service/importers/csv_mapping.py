"""A clinic's own CSV export described once in YAML, so it imports without editing the file.

Every key is optional; list only what differs from the default layout (see csv_rows)::

    encoding: windows-1252        # any Python codec name; default UTF-8 (a BOM is fine)
    delimiter: ";"                # one character; otherwise sniffed from the header line
    columns:                      # our field: their header (case and outer spaces are ignored)
      appointment_id: "Appt ID"
      patient_id: "MRN"
      mobile: "Cell Phone"
      procedure: "Apt Type"
      start_date: "Date"          # either `start`, or `start_date` + `start_time`
      start_time: "Time"
      duration: "Length"          # a length in `duration_unit` (`duration_minutes` is in minutes)
    formats:                      # strptime formats; a list is tried in order
      start_date: "%m/%d/%Y"
      start_time: ["%H:%M", "%H:%M:%S", "%I:%M %p", "HHMM-integer"]
    duration_unit: seconds        # minutes (default) | seconds | hours; rounded up to a minute
    values:                       # our value: [their spellings], matched ignoring case
      status:
        booked: ["f", "2", "Confirmed"]
        cancelled: ["x", "x Canceled", "% Canceled < 24h"]
      sedation: {yes: ["Y", "Sedation"], no: ["N", "LA"]}
      procedure: {BMBX: ["Bone Marrow Biopsy"]}
    defaults:                     # constants for fields the export lacks or leaves empty
      timezone: America/New_York
      language: en-US
      location: ""
      anticoagulant: unknown

Rules:
- Fields: appointment_id, patient_id, first_name, last_name, mobile, email, language, timezone,
  procedure, start (or start_date + start_time), duration_minutes (or duration), location,
  sedation, anticoagulant, status; optional: clinic, on_chemotherapy, diabetes_on_medication,
  sms_consent, deceased, do_not_contact, and the caregiver's: caregiver_name, caregiver_mobile,
  caregiver_relationship, caregiver_consent, caregiver_copies.
  Each non-optional field must be a header in the file or have a constant under `defaults`, so a
  misspelt header is a rejected file rather than a silently empty column. Names, mobile and email
  may only default to "" (one phone number for every patient would be a disaster); so may the
  caregiver's name and mobile.
- Dates are never guessed. Without `formats`, `start` is ISO 8601, `start_date` is YYYY-MM-DD and
  `start_time` is HH:MM or HH:MM:SS. `HHMM-integer` (start_time only) reads 930 or 0930 as 09:30
  (Greenway's integer ApptTime; confirm with the site that it is not minutes since midnight).
- `values` maps status, the four flags, procedure, clinic, language and timezone. A cell spelt in a
  way the mapping does not list still gets the default spellings (yes/no/y/n/true/false/1/0/
  unknown, booked/cancelled/canceled).
- YAML 1.1 reads bare yes/no/on/off/true/false as booleans: as a flag's key they mean yes/no, but
  as a spelling they must be quoted ("yes"). Quote numbers with leading zeros ("0930").
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..configuration.problems import (
    ConfigError,
    ConfigProblem,
    check_keys,
    parse_yaml,
    read_yaml,
)
from ..domain.appointment import FLAG_NAMES, AppointmentStatus
from .base import TRISTATE_WORDS, is_zone, normalise_language

# The default layout's headers, in order; every one must be present (or defaulted by a mapping).
LAYOUT_FIELDS: tuple[str, ...] = (
    "appointment_id",
    "patient_id",
    "first_name",
    "last_name",
    "mobile",
    "email",
    "language",
    "timezone",
    "procedure",
    "start",
    "duration_minutes",
    "location",
    "sedation",
    "anticoagulant",
    "status",
)
# A file with none of these columns says nothing about caregivers: the stored one stays. With
# any of them, a row whose name and mobile are empty says the patient has none.
CAREGIVER_FIELDS: tuple[str, ...] = (
    "caregiver_name",
    "caregiver_mobile",  # read in the same countries as the patient's mobile
    "caregiver_relationship",
    "caregiver_consent",  # the caregiver's own consent to texts: yes/no; blank is no
    "caregiver_copies",  # the patient's choice that the caregiver gets copies; blank is no
)
CAREGIVER_FLAGS = ("caregiver_consent", "caregiver_copies")
OPTIONAL_FIELDS: tuple[str, ...] = (
    "clinic",
    "on_chemotherapy",
    "diabetes_on_medication",
    "sms_consent",  # the basis for texting the patient; no/none/declined: email only
    "deceased",  # yes: no message of any kind
    "do_not_contact",  # yes: no message of any kind
    *CAREGIVER_FIELDS,
)
# sms_consent values that mean there is none.
NO_CONSENT_WORDS = frozenset({"no", "n", "none", "false", "0", "declined", "withdrawn", "refused"})
ALTERNATIVE_FIELDS: tuple[str, ...] = ("start_date", "start_time", "duration")
FIELDS: tuple[str, ...] = LAYOUT_FIELDS + OPTIONAL_FIELDS + ALTERNATIVE_FIELDS

PERSONAL_FIELDS = frozenset(
    {"first_name", "last_name", "mobile", "email", "caregiver_name", "caregiver_mobile"}
)
START_FIELDS = frozenset({"start", "start_date", "start_time"})
VALUE_FIELDS: tuple[str, ...] = (
    "status",
    *FLAG_NAMES,
    "procedure",
    "clinic",
    "language",
    "timezone",
    *CAREGIVER_FLAGS,
)
DEFAULT_FIELDS = frozenset(FIELDS) - {"appointment_id", "patient_id", "duration"} - START_FIELDS
DURATION_UNITS: dict[str, int] = {"minutes": 60, "seconds": 1, "hours": 3600}  # seconds per unit
HHMM_INTEGER = "HHMM-integer"
TOP_KEYS = {"encoding", "delimiter", "columns", "formats", "duration_unit", "values", "defaults"}

STATUS_WORDS: dict[str, AppointmentStatus] = {
    "booked": AppointmentStatus.BOOKED,
    "cancelled": AppointmentStatus.CANCELLED,
    "canceled": AppointmentStatus.CANCELLED,  # US spelling
}
EXPECTED: dict[str, str] = {
    "status": "booked or cancelled",
    **dict.fromkeys(FLAG_NAMES, "yes, no or unknown"),
    **dict.fromkeys(CAREGIVER_FLAGS, "yes or no"),
    "language": "a language tag such as en, en-GB or es-US",
    "timezone": "an IANA time zone such as Europe/London",
    "procedure": "a procedure code",
    "clinic": "a clinic id",
    "location": "text",
    "duration_minutes": "a whole number of minutes from 1 to 1440",
    **dict.fromkeys(PERSONAL_FIELDS, '"" (the export has no such column)'),
}

_BARE_BOOLEAN = 'YAML reads bare yes/no/on/off/true/false as booleans; quote it, e.g. "yes"'
# A datetime whose every part differs, so a format that drops or misreads one part is caught.
_SAMPLE = datetime(2026, 12, 3, 21, 45, 30, tzinfo=UTC)


def canonical(name: str, text: str) -> str | None:
    """Our spelling of a value for field `name`, or None if the value is not one (EXPECTED says)."""
    text = text.strip()
    if name == "status":
        status = STATUS_WORDS.get(text.lower())
        return status.value if status else None
    if name in FLAG_NAMES or name in CAREGIVER_FLAGS:
        flag = TRISTATE_WORDS.get(text.lower())
        return flag.value if flag else None
    if name == "language":
        return normalise_language(text)
    if name == "timezone":
        return text if is_zone(text) else None
    if name in ("procedure", "clinic"):
        return (text.upper() if name == "procedure" else text) or None
    if name == "duration_minutes":
        return text if text.isascii() and text.isdigit() and 1 <= int(text) <= 1440 else None
    if name in PERSONAL_FIELDS:
        return "" if not text else None
    return text  # location


@dataclass(frozen=True, slots=True)
class CsvMapping:
    """How one export differs from the default layout. `CsvMapping()` is the default layout."""

    encoding: str | None = None
    delimiter: str | None = None
    columns: dict[str, str] = field(default_factory=dict)  # our field -> their header
    formats: dict[str, tuple[str, ...]] = field(default_factory=dict)
    duration_unit: str = "minutes"
    values: dict[str, dict[str, str]] = field(default_factory=dict)  # field -> {spelling: ours}
    defaults: dict[str, str] = field(default_factory=dict)  # field -> our spelling
    source: str = ""  # the mapping file, for messages

    def header(self, name: str) -> str:
        return self.columns.get(name, name)

    @property
    def split_start(self) -> bool:
        """True when the start comes from a date column and a time column."""
        split = {"start_date", "start_time"}
        return bool(split & (self.columns.keys() | self.formats.keys()))

    @property
    def duration_field(self) -> str:
        uses_unit = "duration" in self.columns or self.duration_unit != "minutes"
        return "duration" if uses_unit else "duration_minutes"

    def required_fields(self) -> tuple[str, ...]:
        """Fields that must be a header in the file: the layout, minus what `defaults` supplies."""
        start = ("start_date", "start_time") if self.split_start else ("start",)
        out: list[str] = []
        for name in LAYOUT_FIELDS:
            if name == "start":
                out.extend(start)
            elif name == "duration_minutes":
                if name not in self.defaults:
                    out.append(self.duration_field)
            elif name not in self.defaults:
                out.append(name)
        return tuple(out)

    def optional_fields(self) -> tuple[str, ...]:
        """Fields read when the file has them; a constant in `defaults` fills their empty cells."""
        defaulted = [f for f in LAYOUT_FIELDS if f in self.defaults]
        if "duration_minutes" in self.defaults:
            defaulted.remove("duration_minutes")
            defaulted.append(self.duration_field)
        return (*defaulted, *OPTIONAL_FIELDS)


@dataclass(frozen=True, slots=True)
class _Report:
    file: str
    problems: list[ConfigProblem]

    def __call__(self, where: str, name: str, message: str) -> None:
        self.problems.append(ConfigProblem(self.file, where, name, message))


def load_mapping(path: Path) -> CsvMapping:
    problems: list[ConfigProblem] = []
    return _mapping(read_yaml(path, problems), str(path), problems)


def parse_mapping(data: bytes, source: str) -> CsvMapping:
    """A mapping sent rather than stored (an upload beside its CSV); problems name `source`."""
    problems: list[ConfigProblem] = []
    return _mapping(parse_yaml(data, source, problems), source, problems)


def _mapping(data: Any, source: str, problems: list[ConfigProblem]) -> CsvMapping:
    report = _Report(source, problems)
    if problems:
        raise ConfigError(problems)
    if not isinstance(data, dict):
        report("", "", "must be a mapping with keys such as columns, formats, values, defaults")
        raise ConfigError(problems)
    check_keys(data, set(), TOP_KEYS, report.file, "", problems)
    columns = _columns(data.get("columns"), report)
    formats = _formats(data.get("formats"), report)
    mapping = CsvMapping(
        encoding=_encoding(data.get("encoding"), report),
        delimiter=_delimiter(data.get("delimiter"), report),
        columns=columns,
        formats=formats,
        duration_unit=_duration_unit(data.get("duration_unit", "minutes"), columns, report),
        values=_values(data.get("values"), report),
        defaults=_defaults(data.get("defaults"), report),
        source=report.file,
    )
    _check_start(mapping, report)
    if problems:
        raise ConfigError(problems)
    return mapping


def _encoding(value: Any, report: _Report) -> str | None:
    if value is None:
        return None
    try:
        info = codecs.lookup(str(value))
    except LookupError:
        report("", "encoding", f"{value!r} is not a known encoding (e.g. utf-8, windows-1252)")
        return None
    if not getattr(info, "_is_text_encoding", True):
        report("", "encoding", f"{value!r} is not a text encoding")
        return None
    return str(value)


def _delimiter(value: Any, report: _Report) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) != 1 or value in '"\r\n':
        report("", "delimiter", 'must be one character such as ",", ";", "|" or "\\t"')
        return None
    return value


def _columns(value: Any, report: _Report) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        report("", "columns", "must map our field names to your headers, e.g. {patient_id: MRN}")
        return {}
    columns: dict[str, str] = {}
    seen: dict[str, str] = {}
    for key, header in value.items():
        name = str(key)
        if name not in FIELDS:
            report("columns", name, f"unknown field (known: {', '.join(FIELDS)})")
        elif (
            not isinstance(header, str | int) or isinstance(header, bool) or not str(header).strip()
        ):
            report("columns", name, "must be the header text in your file")
        elif (other := seen.get(str(header).strip().lower())) is not None:
            report("columns", name, f"header {header!r} is already used for {other}")
        else:
            columns[name] = str(header).strip()
            seen[columns[name].lower()] = name
    for one, other in (
        ("start", "start_date"),
        ("start", "start_time"),
        ("duration_minutes", "duration"),
    ):
        if one in columns and other in columns:
            report("columns", other, f"give either {one} or {other}, not both")
    return columns


def _formats(value: Any, report: _Report) -> dict[str, tuple[str, ...]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        report("", "formats", "must map start, start_date or start_time to strptime formats")
        return {}
    formats: dict[str, tuple[str, ...]] = {}
    for key, raw in value.items():
        name = str(key)
        items = raw if isinstance(raw, list) else [raw]
        if name not in START_FIELDS:
            report(
                "formats", name, "unknown field (formats apply to start, start_date, start_time)"
            )
        elif not items or not all(isinstance(f, str) and f.strip() for f in items):
            report("formats", name, 'must be a strptime format or a list of them, e.g. "%m/%d/%Y"')
        else:
            found = [(f, _format_problem(name, f)) for f in items]
            for fmt, problem in found:
                if problem:
                    report("formats", name, f"{fmt!r} {problem}")
            formats[name] = tuple(items)
    return formats


def _format_problem(name: str, fmt: str) -> str | None:
    """Why `fmt` cannot read `name` (formatting a sample and parsing it back), or None."""
    if fmt == HHMM_INTEGER:
        return None if name == "start_time" else f"is only for start_time, not {name}"
    if "%Z" in fmt:
        return "uses %Z, which only reads this machine's zone names; use %z (+01:00)"
    try:
        parsed = datetime.strptime(_SAMPLE.strftime(fmt), fmt)  # noqa: DTZ007 (naive is intended)
    except ValueError as exc:
        return f"is not a strptime format that reads back what it writes ({exc})"
    if name != "start_time" and parsed.date() != _SAMPLE.date():
        return "must contain the day, month and year (e.g. %d, %m and %Y)"
    if name != "start_date" and (parsed.hour, parsed.minute) != (_SAMPLE.hour, _SAMPLE.minute):
        return "must contain the hour and minutes (%H:%M, or %I:%M with %p)"
    return None


def _duration_unit(value: Any, columns: dict[str, str], report: _Report) -> str:
    unit = str(value)
    if unit not in DURATION_UNITS:
        report("", "duration_unit", f"{value!r} is not one of {', '.join(DURATION_UNITS)}")
        return "minutes"
    if unit != "minutes" and "duration_minutes" in columns:
        report("columns", "duration_minutes", "is in minutes; map the column as duration instead")
    return unit


def _check_start(mapping: CsvMapping, report: _Report) -> None:
    if mapping.split_start and ("start" in mapping.columns or "start" in mapping.formats):
        report("", "start", "give either start, or start_date with start_time, not both")


def _yaml_word(name: str, value: Any) -> str | None:
    """YAML 1.1 turns bare yes/no into booleans: fine as a flag's value, ambiguous elsewhere."""
    if isinstance(value, bool):
        return ("yes" if value else "no") if name in FLAG_NAMES else None
    if isinstance(value, str | int):
        return str(value)
    return None


def _values(value: Any, report: _Report) -> dict[str, dict[str, str]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        report("", "values", "must map fields to {our value: [your spellings]}")
        return {}
    values: dict[str, dict[str, str]] = {}
    for key, table in value.items():
        name = str(key)
        if name not in VALUE_FIELDS:
            report("values", name, f"has no value spellings (fields: {', '.join(VALUE_FIELDS)})")
        elif not isinstance(table, dict):
            report("values", name, "must map our values to lists of your spellings")
        else:
            values[name] = _spellings(name, table, report)
    return values


def _spellings(name: str, table: dict[Any, Any], report: _Report) -> dict[str, str]:
    """{their spelling as written: ours}; spellings that differ only in case count as one."""
    spelled: dict[str, str] = {}
    lowered: dict[str, str] = {}
    for target, raw in table.items():
        word = _yaml_word(name, target)
        ours = canonical(name, word) if word is not None else None
        if ours is None:
            hint = f" ({_BARE_BOOLEAN})" if isinstance(target, bool) else ""
            report("values", name, f"{target!r} is not a value (expected {EXPECTED[name]}){hint}")
            continue
        for spelling in raw if isinstance(raw, list) else [raw]:
            text = None if isinstance(spelling, bool) else _yaml_word(name, spelling)
            if text is None:
                why = _BARE_BOOLEAN if isinstance(spelling, bool) else "must be text"
                report("values", name, f"spelling {spelling!r} under {ours}: {why}")
                continue
            key = text.strip().lower()
            if lowered.get(key, ours) != ours:
                report("values", name, f"{text!r} is listed under both {lowered[key]} and {ours}")
            elif key not in lowered:
                spelled[text.strip()] = lowered[key] = ours
    return spelled


def _defaults(value: Any, report: _Report) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        report("", "defaults", "must map fields to constant values, e.g. {timezone: Europe/London}")
        return {}
    defaults: dict[str, str] = {}
    for key, raw in value.items():
        name = str(key)
        if name not in DEFAULT_FIELDS:
            known = ", ".join(f for f in FIELDS if f in DEFAULT_FIELDS)
            report("defaults", name, f"cannot have a constant value (fields: {known})")
            continue
        word = "" if raw is None else _yaml_word(name, raw)
        ours = canonical(name, word) if word is not None else None
        if ours is None:
            report("defaults", name, f"{raw!r} is not a value (expected {EXPECTED[name]})")
        else:
            defaults[name] = ours
    return defaults
