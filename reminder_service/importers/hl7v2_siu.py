"""HL7 v2 SIU messages -> appointment changes. Parsing only: no database, no clock, no ACKs.

`parse_siu(data, defaults=..., mapping=...)` returns one `SiuChange` per message, in order. The
caller decides what to store and how to acknowledge (`SiuChange.ack_code`: AA, AE or AR).

Input: one message or a batch. Segments may end in CR, LF or CRLF; MLLP framing bytes (0x0B,
0x1C) and blank lines are ignored; FHS/BHS/BTS/FTS batch segments are skipped; each MSH starts a
message. Each message is decoded on its own: the charset in MSH-18 when Python knows it (`8859/1`,
`UNICODE UTF-8`...), else UTF-8, else Windows-1252, else Latin-1.

python-hl7 parses each message: it splits segments, fields, repetitions, components and
subcomponents with the separators MSH-1/2 declare and accepts any segment, in any order, in any
version. It is chosen over hl7apy because hl7apy's tolerant mode (hl7apy 1.3.5) either drops a
segment its version does not define (TQ1 in a v2.4 message, any Z segment) without a word, when it
finds groups, or refuses the message, when it does not, and it loses the names of fields withdrawn
in later versions (SCH-9, SCH-11 in v2.8); real senders use all of these. The fields named in the
mapping below are read from python-hl7's tree by position, so a site can point at any of them.

Events (MSH-9.2): S12 new booking, S13 reschedule, S14 modification -> booked; S15 cancellation,
S16 discontinuation, S17 deletion -> cancelled; S26 no-show -> kind `no_show`, appointment kept
booked (the caller stops after-care steps). For S12-S14 a filler status (SCH-25) listed in
`cancelled_statuses` (cancelled, canceled, deleted, discontinued) makes the change a cancellation.
The S26 keeps its kind whatever SCH-25 says (Barts sends the S15 body with MSH-9 changed).

Default field mapping (`SiuMapping`; a YAML file can override any of it, see `load_siu_mapping`):
- appointment id: SCH-2.1 (filler), else SCH-1.1 (placer).
- patient id: PID-3.1 of the first repetition, or of the first whose PID-3.5 (identifier type)
  is `patient_id_type` when that is set (e.g. MR); none matching is an error.
- name: PID-5.1.1 family, PID-5.2 given (first repetition).
- mobile: PID-13 then PID-14 repetitions; those marked mobile (XTN-3 `CP`, or XTN-2 in
  `mobile_use_codes`: MOBILE, CELL) first, then the other PID-13 phone repetitions. PID-14 is the
  business phone (`business_phones`): used only when marked mobile. The number is XTN-1, else
  XTN-5/6/7 (country, area, local), else XTN-12. The first usable mobile wins.
- email: XTN-4 whenever it holds an address, whatever XTN-2 and XTN-3 say (real v2.5 senders send
  `^^^name@host`, and some put a phone and an email in one repetition); also XTN-1 when it holds
  an address and XTN-2 is `EMAIL` or `NET` (Barts style).
- language: PID-15.1 as a BCP 47 tag, an ISO 639-2 code (ENG, SPA) or an English name
  (English); unknown -> the default language with a warning. A tag with the default's primary
  language takes the default (en + en-GB default -> en-GB).
- time zone: the clinic's (`ImportDefaults.timezone`); HL7 has no patient zone field.
- start: the first of TQ1-7.1, SCH-11.4, AIS-4.1, AIG-8.1, AIL-6.1, AIP-6.1 that is present.
- duration: the first of TQ1-6, TQ1-8, SCH-9, AIS-7, AIG-11, AIL-9, AIP-9, SCH-11.5 (the end of
  SCH-11's timing) that is usable. A
  quantity takes its unit from its second component (TQ1-6 `15^min`) or the next field (SCH-10,
  AIS-8); no unit means minutes; seconds round up. A field holding a timestamp (TQ1-8 end) gives
  end - start. None usable -> `ImportDefaults.duration_minutes`. TQ1 comes first because the
  Microsoft samples carry `60|s` in SCH-9/10 while TQ1 and AIS agree on 50 minutes.
- procedure: AIS-3.1, else SCH-7.1 (reason), else SCH-8.1 (type); upper-cased like the CSV importer.
- location: AIL-3 components 1, 2, 4, 7, 9 (point of care, room, facility, building,
  description) joined by ", ", else PV1-3 the same way; empty when neither is present.
- flags: `flags` maps a flag to a field (e.g. sedation: ZAP-2); NTE-3 lines such as
  `sedation: yes` also set a flag when `nte_flags` is on. Anything else is Tristate.UNKNOWN (the
  protocol decides what unknown means). An unreadable value is a warning and stays unknown.
- caregiver: the NK1 segments (none: the caregiver stored stays as it is). The first person with
  a usable mobile, a care giver (NK1-3.1 `CGV`) first, never an employer, insurer or agency
  (NK1-7.1 E, I, F, S). The mobile comes from NK1-5 and NK1-40 (v2.7+) as the patient's does
  from PID-13 (marked ones first, then any that reads as a mobile), or NK1-6 when marked mobile;
  it is read in the patient's countries. Name NK1-2 (given family), relationship NK1-3.2 else
  NK1-3.1. NK1s with no mobile: no caregiver. HL7 says nothing of consent: the caregiver gets no
  copies unless the mapping says `caregiver_copies: true` (the clinic collects both consents
  upstream); consents recorded another way for the same number stay. `caregivers: false`
  ignores NK1. A marked mobile that cannot be read is a warning, never a refusal.
- clinic: the sending facility (MSH-4.1, MSH-4.2, then MSH-3.1) looked up in the mapping's
  `facilities`, else the feed's clinic (`defaults`: `--clinic`, the mapping's `clinic`, or the
  configured default). With `facilities` and no clinic for the feed, a message from a facility
  not listed is an error naming MSH-4.

Timestamps: YYYY[MM[DD[HH[MM[SS[.S{1,4}]]]]]][+/-HHMM]. With an offset it is that instant; without
one it is wall-clock time in the patient's zone (a time skipped by a clock change is an error).

Phone numbers: read in the country of the message's clinic and, when the patient's address
(PID-11.6, ISO 3166) or the sender (MSH-17) names another, in that country too; two readings that
differ are refused
(importers.contacts). A number is kept only when `phonenumbers` calls it valid and not a
landline, exactly as the CSV importer does (plus Ofcom's drama range). A number that fails is
dropped with a warning naming the field: the message still imports when another contact remains.
A booked change with no contact left is an error. Test numbers such as 78788788 or UK numbers one
digit short are therefore dropped.

A cancellation (S15, S16, S17, or a cancelled SCH-25) or no-show (S26) needs only its
appointment id (SCH-2, else SCH-1): when the rest of the message does not describe the
appointment (no AIS, no start, no PID), the change is a `Cancellation` of that id and what was
missing is a warning, never a refusal.

Limits: a value longer than the database column that stores it (store/field_limits.py) is an
error naming the segment-field it came from (SCH-2.1, PID-3...), and a start outside the years
1900-2199 (domain/start_range.py) is an error on its field.

Errors and warnings name the segment-field and never quote names, numbers or addresses.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta, timezone
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeAlias

import hl7  # type: ignore[import-untyped]

from ..configuration.problems import ConfigError, ConfigProblem, check_keys, read_yaml
from ..domain.appointment import (
    CAREGIVER_UNSAID,
    FLAG_NAMES,
    Appointment,
    AppointmentStatus,
    Cancellation,
    Caregiver,
    CaregiverInfo,
    Change,
    Patient,
    Tristate,
)
from ..domain.start_range import OUT_OF_RANGE
from ..store.field_limits import field_problem
from .base import (
    TRISTATE_WORDS,
    ImportDefaults,
    defaults_problems,
    normalise_language,
    resolve_local,
)
from .contacts import country_region, parse_email, parse_mobile, phone_regions

# --- public types ---------------------------------------------------------------------------------


class ChangeKind(StrEnum):
    BOOKED = "booked"
    CANCELLED = "cancelled"
    NO_SHOW = "no_show"


EVENT_KINDS: dict[str, ChangeKind] = {
    "S12": ChangeKind.BOOKED,
    "S13": ChangeKind.BOOKED,
    "S14": ChangeKind.BOOKED,
    "S15": ChangeKind.CANCELLED,
    "S16": ChangeKind.CANCELLED,
    "S17": ChangeKind.CANCELLED,
    "S26": ChangeKind.NO_SHOW,
}


@dataclass(frozen=True, slots=True)
class SiuProblem:
    where: str  # "SCH-11.4", "PID-13", "MSH" or "" for the message as a whole
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}" if self.where else self.reason


@dataclass(frozen=True, slots=True)
class SiuChange:
    """One message's outcome. `appointment` is None exactly when `errors` is not empty; for a
    cancellation or no-show that does not describe its appointment it is a `Cancellation`."""

    index: int  # 1 = the first message in the input
    event: str  # MSH-9.2, e.g. "S12"; "" when unreadable
    kind: ChangeKind | None
    control_id: str  # MSH-10, for the ACK; "" when not found
    message_time: datetime | None  # MSH-7, aware UTC
    appointment: Change | None
    errors: list[SiuProblem] = field(default_factory=list)
    warnings: list[SiuProblem] = field(default_factory=list)
    parsed: bool = True  # False: not readable as HL7 at all

    @property
    def ack_code(self) -> str:
        """AA accepted; AE understood but not usable; AR not readable as an HL7 message."""
        if not self.parsed:
            return "AR"
        return "AE" if self.errors else "AA"


_FIELD_REF = re.compile(r"([A-Z][A-Z0-9]{2})-(\d{1,3})(?:\.(\d{1,3}))?(?:\.(\d{1,3}))?")


@dataclass(frozen=True, slots=True)
class FieldRef:
    """SEG-F[.C[.S]]: the first segment of that name, its first repetition."""

    segment: str
    field: int
    component: int = 0  # 0 = the whole field as text (components joined by the separator)
    subcomponent: int = 0

    @classmethod
    def parse(cls, text: str) -> FieldRef:
        match = _FIELD_REF.fullmatch(text.strip())
        if match is None:
            raise ValueError(f"{text!r} is not a field such as SCH-11.4 or PID-3")
        seg, fld, comp, sub = match.groups()
        return cls(seg, int(fld), int(comp or 0), int(sub or 0))

    def __str__(self) -> str:
        parts = [f"{self.segment}-{self.field}"]
        parts += [str(n) for n in (self.component, self.subcomponent) if n]
        return ".".join(parts)


def _refs(*texts: str) -> tuple[FieldRef, ...]:
    return tuple(FieldRef.parse(t) for t in texts)


@dataclass(frozen=True, slots=True)
class SiuMapping:
    """Where a sender puts things. Defaults fit HL7 v2.4-2.8 (see the module docstring)."""

    appointment_id: tuple[FieldRef, ...] = _refs("SCH-2.1", "SCH-1.1")
    patient_id_type: str = ""  # PID-3.5 to pick, e.g. "MR"; "" = the first repetition
    start: tuple[FieldRef, ...] = _refs(
        "TQ1-7.1", "SCH-11.4", "AIS-4.1", "AIG-8.1", "AIL-6.1", "AIP-6.1"
    )
    duration: tuple[FieldRef, ...] = _refs(
        "TQ1-6", "TQ1-8", "SCH-9", "AIS-7", "AIG-11", "AIL-9", "AIP-9", "SCH-11.5"
    )
    procedure: tuple[FieldRef, ...] = _refs("AIS-3.1", "SCH-7.1", "SCH-8.1")
    location: tuple[FieldRef, ...] = _refs("AIL-3", "PV1-3")
    location_components: tuple[int, ...] = (1, 2, 4, 7, 9)
    phones: tuple[FieldRef, ...] = _refs("PID-13", "PID-14")
    mobile_use_codes: tuple[str, ...] = ("MOBILE", "CELL")
    cancelled_statuses: tuple[str, ...] = ("cancelled", "canceled", "deleted", "discontinued")
    # Numbers here (PID-14: business phone) are a mobile only when XTN-3 or XTN-2 says so: a
    # work number is someone else's phone as often as the patient's.
    business_phones: tuple[FieldRef, ...] = _refs("PID-14")
    # The patient's country (XAD-6 of each address): its numbers may be written as at home.
    # The sender's country (MSH-17) is one too: a number may be written as the sender writes them.
    patient_country: tuple[FieldRef, ...] = _refs("PID-11.6", "MSH-17")
    flags: Mapping[str, FieldRef] = field(default_factory=dict)
    nte_flags: bool = True
    # Which clinic the feed's messages are for: its sending facility (MSH-4, else MSH-3) looked
    # up in `facilities`, else `clinic`, else the importer's default. Phone numbers are read in
    # that clinic's country.
    clinic: str = ""
    facilities: Mapping[str, str] = field(default_factory=dict)
    # NK1 segments give the patient's caregiver (see the module docstring). HL7 carries no
    # consent for texts, so a caregiver from NK1 gets none unless this feed's clinic collects
    # both upstream (the patient's choice of copies, the caregiver's own consent) and says so
    # here; without it, consents recorded through CSV or the API for the same number stay.
    caregivers: bool = True
    caregiver_copies: bool = False
    source: str = ""  # the YAML file it came from, for messages


_DEFAULT_MAPPING = SiuMapping()
_LIST_KEYS = (
    "appointment_id",
    "start",
    "duration",
    "procedure",
    "location",
    "phones",
    "business_phones",
    "patient_country",
)


def load_siu_mapping(path: Path) -> SiuMapping:
    """Read a mapping YAML file; raises ConfigError listing every problem by field."""
    problems: list[ConfigProblem] = []
    data = read_yaml(path, problems)
    file = str(path)
    if problems:
        raise ConfigError(problems)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([ConfigProblem(file, "", "", "must be a mapping of field: value")])
    known = {f.name for f in fields(SiuMapping)} - {"source"}
    check_keys(data, set(), known, file, "", problems)
    values: dict[str, Any] = {"source": file}
    for key in _LIST_KEYS:
        if key in ("business_phones", "patient_country") and data.get(key) == []:
            values[key] = ()  # turned off
        elif key in data:
            values[key] = _ref_list(data[key], file, key, problems)
    for key in ("mobile_use_codes", "cancelled_statuses"):
        if key in data:
            values[key] = _text_list(data[key], file, key, problems)
    if "location_components" in data:
        values["location_components"] = _components(data["location_components"], file, problems)
    for key in ("patient_id_type", "clinic"):
        if key in data:
            values[key] = _text(data[key], file, key, problems)
    if "facilities" in data:
        values["facilities"] = _facilities(data["facilities"], file, problems)
    for key in ("nte_flags", "caregivers", "caregiver_copies"):
        if key in data:
            if isinstance(data[key], bool):
                values[key] = data[key]
            else:
                problems.append(ConfigProblem(file, "", key, "must be true or false"))
    if "flags" in data:
        values["flags"] = _flag_refs(data["flags"], file, problems)
    if problems:
        raise ConfigError(problems)
    return SiuMapping(**values)


def _ref_list(
    value: object, file: str, key: str, problems: list[ConfigProblem]
) -> tuple[FieldRef, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        problems.append(ConfigProblem(file, "", key, "must be a field or a list of fields"))
        return ()
    refs = []
    for item in items:
        try:
            refs.append(FieldRef.parse(str(item)))
        except ValueError as exc:
            problems.append(ConfigProblem(file, "", key, str(exc)))
    return tuple(refs)


def _facilities(value: object, file: str, problems: list[ConfigProblem]) -> dict[str, str]:
    ok = isinstance(value, dict) and all(
        isinstance(k, str | int) and isinstance(v, str) and v.strip() for k, v in value.items()
    )
    if not ok:
        message = "must map a sending facility (MSH-4 or MSH-3) to a clinic id"
        problems.append(ConfigProblem(file, "", "facilities", message))
        return {}
    assert isinstance(value, dict)
    return {str(k).strip().upper(): v.strip() for k, v in value.items()}


def _text_list(
    value: object, file: str, key: str, problems: list[ConfigProblem]
) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append(ConfigProblem(file, "", key, "must be a list of texts"))
        return ()
    return tuple(value)


def _text(value: object, file: str, key: str, problems: list[ConfigProblem]) -> str:
    if not isinstance(value, str):
        problems.append(ConfigProblem(file, "", key, "must be a text"))
        return ""
    return value.strip()


def _components(value: object, file: str, problems: list[ConfigProblem]) -> tuple[int, ...]:
    ok = isinstance(value, list) and value and all(isinstance(v, int) and v >= 1 for v in value)
    if not ok:
        message = "must be a list of component numbers (1 = the first)"
        problems.append(ConfigProblem(file, "", "location_components", message))
        return ()
    assert isinstance(value, list)
    return tuple(value)


def _flag_refs(value: object, file: str, problems: list[ConfigProblem]) -> dict[str, FieldRef]:
    if not isinstance(value, dict):
        problems.append(ConfigProblem(file, "", "flags", "must map a flag name to a field"))
        return {}
    refs = {}
    for name, text in value.items():
        if name not in FLAG_NAMES:
            message = f"unknown flag (known: {', '.join(FLAG_NAMES)})"
            problems.append(ConfigProblem(file, "flags", str(name), message))
            continue
        try:
            refs[name] = FieldRef.parse(str(text))
        except ValueError as exc:
            problems.append(ConfigProblem(file, "flags", name, str(exc)))
    return refs


# --- splitting: bytes -> message byte strings -----------------------------------------------------

_BATCH_SEGMENTS = (b"FHS", b"BHS", b"BTS", b"FTS")
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


def split_messages(data: bytes) -> list[bytes]:
    """Each message's segments joined by CR. Text before the first MSH becomes its own entry."""
    messages: list[list[bytes]] = []
    for raw in _LINE_BREAK.split(data.replace(b"\x0b", b"").replace(b"\x1c", b"")):
        line = raw.strip(b" \t\x00")
        if not line or line[:3] in _BATCH_SEGMENTS:
            continue
        if line.startswith(b"MSH") or not messages:
            messages.append([])
        messages[-1].append(line)
    return [b"\r".join(segments) for segments in messages]


_CHARSETS = {  # HL7 table 0211 -> Python codec
    "ASCII": "ascii",
    "UNICODE": "utf-8",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
}


def _decode(message: bytes) -> str:
    declared = _declared_charset(message)
    for codec in (declared, "utf-8", "cp1252"):
        if codec:
            try:
                return message.decode(codec)
            except UnicodeDecodeError:
                continue
    return message.decode("latin-1")  # never fails: every byte is a character


def _declared_charset(message: bytes) -> str | None:
    msh = message.split(b"\r", 1)[0].decode("ascii", errors="replace")
    parts = msh.split(msh[3]) if len(msh) > 3 else []
    name = parts[17].split(parts[1][:1] or "^")[0].strip().upper() if len(parts) > 17 else ""
    if not name:
        return None
    codec = _CHARSETS.get(name) or re.sub(r"^8859/(\d+)$", r"iso8859-\1", name)
    try:
        return codecs.lookup(codec).name
    except (LookupError, ValueError):  # ValueError: a NUL in the name
        return None


# --- reading fields: python-hl7's tree ------------------------------------------------------------

# python-hl7 (`hl7.parse`) splits a message into segments, fields, repetitions, components and
# subcomponents with the separators MSH-1/MSH-2 declare, and accepts any segment in any order: no
# version tables, so TQ1 in a v2.4 message, Z segments and repeated optional segments all read.
# A level with no separator in it stays a plain string, so `_child` treats a string as its own
# first child. Values are unescaped here rather than with `hl7.unescape`, which logs the whole
# field (patient data) when it meets an escape sequence it does not know.
Node: TypeAlias = str | hl7.Container


def _child(node: Node, n: int) -> Node:
    """The n-th (1-based) part one level down; "" when absent."""
    if isinstance(node, str):
        return node if n == 1 else ""
    return node[n - 1] if 1 <= n <= len(node) else ""


class _Message:
    """One parsed message; values are unescaped and trimmed when read."""

    def __init__(self, parsed: hl7.Message) -> None:
        self.parsed = parsed
        self.escape: str = parsed.esc
        # python-hl7 keeps "<segment><field><repetition><component><subcomponent>" separators.
        _seg, self.field_sep, self.repetition_sep, self.component_sep, self.subcomponent_sep = (
            parsed.separators
        )

    def segments(self, name: str) -> Iterator[hl7.Segment]:
        return (seg for seg in self.parsed if str(seg[0]).strip() == name)

    def repetitions_of(self, segment: hl7.Segment, number: int) -> list[Node]:
        """Field `number` of a segment (MSH-1 is the field separator, as in the standard)."""
        if number >= len(segment):
            return []
        found = segment[number]
        return [] if str(found) == "" else list(found)

    def repetitions(self, ref: FieldRef) -> list[Node]:
        """The field's repetitions in the first segment of that name."""
        for segment in self.segments(ref.segment):
            return self.repetitions_of(segment, ref.field)
        return []

    def first(self, ref: FieldRef) -> Node:
        """The first repetition of the field, or "" when the field is absent or empty."""
        reps = self.repetitions(ref)
        return reps[0] if reps else ""

    def get(self, ref: FieldRef) -> str:
        return self.pick(self.first(ref), ref.component, ref.subcomponent)

    def pick(self, value: Node, component: int = 0, subcomponent: int = 0) -> str:
        """A component (1-based; 0 = all) of one repetition, unescaped; `""` (HL7 null) -> ""."""
        if component:
            value = _child(value, component)
            value = _child(value, subcomponent or 1)
        text = self.unescape(str(value)).strip()
        return "" if text == '""' else text

    def unescape(self, text: str) -> str:
        esc = self.escape
        if not esc or esc not in text:
            return text
        pattern = re.escape(esc) + r"([^" + re.escape(esc) + r"]*)" + re.escape(esc)
        return re.sub(pattern, self._escape_sequence, text)

    def _escape_sequence(self, match: re.Match[str]) -> str:
        code = match[1]
        simple: dict[str, str] = {
            "F": self.field_sep,
            "S": self.component_sep,
            "T": self.subcomponent_sep,
            "R": self.repetition_sep,
            "E": self.escape,
        }
        if code in simple:
            return simple[code]
        if code == ".br":
            return "\n"
        if code[:1] == "X" and re.fullmatch(r"(?:[0-9A-Fa-f]{2})+", code[1:]):
            return bytes.fromhex(code[1:]).decode("latin-1")
        return ""  # highlighting (\H\ \N\) and formatting codes carry no text


def _read(text: str) -> _Message:
    """Raises ValueError when the text has no readable MSH."""
    if not text.startswith("MSH") or len(text) < 8:
        raise ValueError("does not start with an MSH segment")
    field_sep = text[3]
    encoding = text[4 : text.find(field_sep, 4)] if text.find(field_sep, 4) > 0 else ""
    if len(encoding) < 4 or len({field_sep, *encoding[:4]}) < 5 or field_sep.isalnum():
        raise ValueError("MSH-2 does not hold four distinct encoding characters")
    return _Message(hl7.parse(text))


# --- timestamps -----------------------------------------------------------------------------------

_TIMESTAMP = re.compile(
    r"(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(?:\.(\d{1,4}))?(?:([+-])(\d{2})(\d{2}))?"
)


def parse_timestamp(text: str, zone_name: str) -> datetime | str:
    """An HL7 DTM of any precision -> aware UTC, or the reason it is not one (no value quoted)."""
    match = _TIMESTAMP.fullmatch(text.strip())
    if match is None:
        return "not a timestamp (YYYYMMDDHHMM[SS][+HHMM])"
    year, month, day, hour, minute, second, fraction, sign, off_h, off_m = match.groups()
    try:
        moment = datetime(  # noqa: DTZ001 (naive means the patient's wall clock; resolved below)
            int(year),
            int(month or 1),
            int(day or 1),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            int((fraction or "0").ljust(6, "0")),
        )
    except ValueError:
        return "not a valid date and time"
    if sign:
        offset = timedelta(hours=int(off_h), minutes=int(off_m))
        if offset >= timedelta(hours=24):
            return "has an offset of 24 hours or more"
        moment = moment.replace(tzinfo=timezone(-offset if sign == "-" else offset))
    resolved = resolve_local(moment, zone_name)  # also refuses years outside domain.start_range
    if resolved == OUT_OF_RANGE:
        return OUT_OF_RANGE
    return (
        "does not exist in the local time zone (clocks go forward)"
        if isinstance(resolved, str)
        else resolved
    )


# --- mapping one message --------------------------------------------------------------------------

# Where a field's value comes from when no mapping list chose it.
_PLACES = {"patient_id": "PID-3", "first_name": "PID-5.2", "last_name": "PID-5.1"}
_MSH_TYPE = FieldRef("MSH", 9)
_MSH_TIME = FieldRef("MSH", 7, 1)
_MSH_CONTROL = FieldRef("MSH", 10, 1)
# Where a sender names itself, in the order a facility map is consulted.
_SENDERS = (FieldRef("MSH", 4, 1), FieldRef("MSH", 4, 2), FieldRef("MSH", 3, 1))
_SCH_STATUS = FieldRef("SCH", 25, 1)
_PID_3 = FieldRef("PID", 3)
_PID_5 = FieldRef("PID", 5)
_PID_15 = FieldRef("PID", 15, 1)
# NK1: name (XPN), relationship (CWE), home phone and business phone (XTN, withdrawn in v2.7),
# contact role (CWE), and the telecommunication information that replaced the phones in v2.7.
NK1_NAME, NK1_RELATIONSHIP, NK1_PHONE, NK1_BUSINESS, NK1_ROLE, NK1_TELECOM = 2, 3, 5, 6, 7, 40
# Contact roles (HL7 table 0131) that are organisations, never a person to text: employer,
# federal agency, insurance company, state agency.
ORGANISATION_ROLES = frozenset({"E", "F", "I", "S"})
CAREGIVER_RELATIONSHIP = "CGV"  # HL7 table 0063: care giver; preferred over other kin

_UNITS_SECONDS = {
    **dict.fromkeys(("", "m", "min", "mins", "minute", "minutes"), 60),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), 1),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3600),
}
_QUANTITY = re.compile(r"\d{1,5}(?:\.\d+)?")

# ISO 639-2 (B and T forms) and English names of languages clinics commonly see -> ISO 639-1.
_LANGUAGES = {
    **dict.fromkeys(("eng", "english"), "en"),
    **dict.fromkeys(("spa", "spanish"), "es"),
    **dict.fromkeys(("fra", "fre", "french"), "fr"),
    **dict.fromkeys(("deu", "ger", "german"), "de"),
    **dict.fromkeys(("ita", "italian"), "it"),
    **dict.fromkeys(("por", "portuguese"), "pt"),
    **dict.fromkeys(("nld", "dut", "dutch"), "nl"),
    **dict.fromkeys(("pol", "polish"), "pl"),
    **dict.fromkeys(("ron", "rum", "romanian"), "ro"),
    **dict.fromkeys(("rus", "russian"), "ru"),
    **dict.fromkeys(("ukr", "ukrainian"), "uk"),
    **dict.fromkeys(("ara", "arabic"), "ar"),
    **dict.fromkeys(("zho", "chi", "chinese"), "zh"),
    **dict.fromkeys(("vie", "vietnamese"), "vi"),
    **dict.fromkeys(("kor", "korean"), "ko"),
    **dict.fromkeys(("jpn", "japanese"), "ja"),
    **dict.fromkeys(("tur", "turkish"), "tr"),
    **dict.fromkeys(("urd", "urdu"), "ur"),
    **dict.fromkeys(("ben", "bengali"), "bn"),
    **dict.fromkeys(("pan", "punjabi"), "pa"),
    **dict.fromkeys(("guj", "gujarati"), "gu"),
    **dict.fromkeys(("hin", "hindi"), "hi"),
    **dict.fromkeys(("tam", "tamil"), "ta"),
    **dict.fromkeys(("som", "somali"), "so"),
    **dict.fromkeys(("fas", "per", "persian", "farsi"), "fa"),
    **dict.fromkeys(("ell", "gre", "greek"), "el"),
    **dict.fromkeys(("heb", "hebrew"), "he"),
    **dict.fromkeys(("tgl", "fil", "tagalog", "filipino"), "tl"),
    **dict.fromkeys(("hat", "haitian creole"), "ht"),
    **dict.fromkeys(("cym", "wel", "welsh"), "cy"),
}


class _Mapper:
    """Maps one read message; collects errors and warnings as it goes."""

    def __init__(self, msg: _Message, mapping: SiuMapping, defaults: ImportDefaults) -> None:
        self.msg, self.mapping, self.defaults = msg, mapping, defaults
        self.errors: list[SiuProblem] = []
        self.warnings: list[SiuProblem] = []
        self.places: dict[str, str] = {}  # field -> the segment-field its value came from

    def fail(self, where: str, reason: str) -> None:
        self.errors.append(SiuProblem(where, reason))

    def warn(self, where: str, reason: str) -> None:
        self.warnings.append(SiuProblem(where, reason))

    def kind(self, event: str) -> ChangeKind | None:
        kind = EVENT_KINDS.get(event)
        if kind is None:
            self.fail("MSH-9", f"event {event or '(empty)'!r} is not an SIU event this handles")
            return None
        status = self.msg.get(_SCH_STATUS).lower()
        cancelled = {s.lower() for s in self.mapping.cancelled_statuses}
        if kind is ChangeKind.BOOKED and status in cancelled:
            return ChangeKind.CANCELLED
        return kind

    def first(self, refs: tuple[FieldRef, ...]) -> tuple[str, str]:
        """(value, field) of the first non-empty field, or ("", fields tried)."""
        for ref in refs:
            value = self.msg.get(ref)
            if value:
                return value, str(ref)
        return "", "/".join(str(r) for r in refs)

    def required(self, refs: tuple[FieldRef, ...], name: str) -> str:
        value, where = self.first(refs)
        if not value:
            self.fail(where, "is empty")
        self.places[name] = where
        return value

    def fits(self, name: str, value: str) -> bool:
        """Whether `value` fits the column that stores field `name`; an error naming the
        segment-field it came from when it does not."""
        reason = field_problem(name, value)
        if reason:
            self.fail(self.places.get(name, _PLACES.get(name, "")), reason)
        return not reason

    def patient_id(self) -> str:
        wanted = self.mapping.patient_id_type.upper()
        for rep in self.msg.repetitions(_PID_3):
            if not wanted or self.msg.pick(rep, 5).upper() == wanted:
                value = self.msg.pick(rep, 1)
                if value:
                    return value
        self.fail("PID-3", f"no identifier of type {wanted}" if wanted else "is empty")
        return ""

    def name(self) -> tuple[str, str]:
        reps = self.msg.repetitions(_PID_5)
        if not reps:
            return "", ""
        return self.msg.pick(reps[0], 2), self.msg.pick(reps[0], 1, 1)

    def start(self) -> datetime | None:
        text, where = self.first(self.mapping.start)
        if not text:
            self.fail(where, "no start date and time")
            return None
        moment = parse_timestamp(text, self.defaults.timezone)
        if isinstance(moment, str):
            self.fail(where, moment)
            return None
        if len(text.split("+")[0].split("-")[0]) < 10:
            self.warn(where, "has no time of day; midnight was used")
        return moment

    def duration(self, start: datetime | None) -> int:
        for ref in self.mapping.duration:
            minutes = self._minutes(ref, start)
            if minutes is not None:
                return minutes
        return self.defaults.duration_minutes

    def _minutes(self, ref: FieldRef, start: datetime | None) -> int | None:
        raw = self.msg.first(ref)
        # A whole field is a quantity and its unit (or a timestamp); a component (SCH-11.5, the
        # end of SCH-11's timing) holds a timestamp.
        quantity = self.msg.pick(raw, ref.component or 1)
        if not quantity:
            return None
        if len(quantity) >= 8 and _TIMESTAMP.fullmatch(quantity):  # an end time, not a quantity
            end = parse_timestamp(quantity, self.defaults.timezone)
            if isinstance(end, str) or start is None:
                self.warn(str(ref), "end time is not usable")
                return None
            return self._in_range(ref, (end - start).total_seconds())
        unit = self.msg.pick(raw, 2) or self.msg.get(FieldRef(ref.segment, ref.field + 1, 1))
        seconds = _UNITS_SECONDS.get(unit.lower())
        if seconds is None or not _QUANTITY.fullmatch(quantity):
            self.warn(str(ref), "is not a duration in minutes, seconds or hours")
            return None
        return self._in_range(ref, float(quantity) * seconds)

    def _in_range(self, ref: FieldRef, seconds: float) -> int | None:
        minutes = -int(-seconds // 60)  # round up: a 90-second slot still needs 2 minutes
        if not 1 <= minutes <= 1440:
            self.warn(str(ref), "duration is not between 1 minute and 24 hours")
            return None
        return minutes

    def location(self) -> str:
        for ref in self.mapping.location:
            raw = self.msg.first(ref)
            parts: list[str] = []
            for n in self.mapping.location_components:
                part = self.msg.pick(raw, n)
                if part and part not in parts:
                    parts.append(part)
            if parts:
                self.places["location"] = str(ref)
                return ", ".join(parts)
        return ""

    def language(self) -> str:
        text = self.msg.get(_PID_15)
        if not text:
            return self.defaults.language
        tag = _LANGUAGES.get(text.lower()) or normalise_language(text)
        if tag is None or len(tag.split("-")[0]) > 3:
            self.warn("PID-15", "is not a known language; the default was used")
            return self.defaults.language
        default = self.defaults.language
        return default if tag.split("-")[0] == default.split("-")[0].lower() else tag

    def contacts(self) -> tuple[str | None, str | None]:
        marked: list[tuple[str, str]] = []  # (field, number text)
        other: list[tuple[str, str]] = []
        email: str | None = None
        for ref in self.mapping.phones:
            business = ref in self.mapping.business_phones
            for rep in self.msg.repetitions(ref):
                address = self._email_text(rep)
                if address:
                    email = email or self._email(str(ref), address)
                number = self._number_text(rep)
                if not number or not self._is_phone(rep):
                    continue
                if self._is_mobile(rep):
                    marked.append((str(ref), number))
                elif not business:  # a work number is a mobile only when marked so
                    other.append((str(ref), number))
        return self._mobile(marked, other), email

    def _mobile(self, marked: list[tuple[str, str]], other: list[tuple[str, str]]) -> str | None:
        region = self._phone_regions()
        for where, number in marked:
            mobile, reason = parse_mobile(number, region)
            if mobile:
                return mobile
            self.warn(where, f"mobile number dropped: {reason}")
        for _where, number in other:  # unmarked: a landline here is expected, not a problem
            mobile, _reason = parse_mobile(number, region)
            if mobile:
                return mobile
        return None

    def _phone_regions(self) -> tuple[str, ...]:
        """The clinic's country, and the countries of the patient's address (PID-11.6) and of the
        sender (MSH-17) when they are others: a number that reads differently in two of them is
        refused, never guessed."""
        regions = phone_regions(self.defaults.timezone, self.defaults.phone_region)
        for ref in self.mapping.patient_country:
            for rep in self.msg.repetitions(ref):
                country = country_region(self.msg.pick(rep, ref.component or 0))
                if country and country not in regions:
                    regions += (country,)
        return regions

    def _email(self, where: str, address: str) -> str | None:
        email, reason = parse_email(address)
        if reason:
            self.warn(where, f"email dropped: {reason}")
        return email

    def _email_text(self, rep: Node) -> str:
        """XTN-4 whenever it holds an address, whatever XTN-2 and XTN-3 say (real v2.5 senders
        send `^^^name@host`); else XTN-1 when the repetition says it is email (Barts style)."""
        address = self.msg.pick(rep, 4)
        if "@" in address:
            return address
        if self._says_email(rep):
            text = self.msg.pick(rep, 1)
            return text if "@" in text else ""
        return ""

    def _says_email(self, rep: Node) -> bool:
        use, kind = self.msg.pick(rep, 2).upper(), self.msg.pick(rep, 3).upper()
        return kind in {"INTERNET", "X.400"} or use in {"NET", "EMAIL"}

    def _number_text(self, rep: Node) -> str:
        text = self.msg.pick(rep, 1)
        if text:
            return "" if "@" in text else text
        country, area, local = (self.msg.pick(rep, n) for n in (5, 6, 7))
        if local:
            return f"+{country.lstrip('+')} {area} {local}" if country else f"{area} {local}"
        return self.msg.pick(rep, 12)

    def _is_phone(self, rep: Node) -> bool:
        kind = self.msg.pick(rep, 3).upper()
        return not self._says_email(rep) and kind not in {"FX", "BP", "TDD", "TTY", "MD"}

    def _is_mobile(self, rep: Node) -> bool:
        use_codes = {c.upper() for c in self.mapping.mobile_use_codes}
        return self.msg.pick(rep, 3).upper() == "CP" or self.msg.pick(rep, 2).upper() in use_codes

    def caregiver(self) -> CaregiverInfo:
        """The patient's caregiver from the NK1 segments: the first person (not an employer,
        insurer or agency) with a usable mobile, one whose relationship is care giver (CGV)
        first. No NK1: unsaid (the stored caregiver stays). NK1s with no mobile: none. A marked
        mobile that cannot be read is a warning, and that person is kept without a number."""
        segments = list(self.msg.segments("NK1")) if self.mapping.caregivers else []
        if not segments:
            return CAREGIVER_UNSAID
        people = [
            (n, seg)
            for n, seg in enumerate(segments, 1)
            if self._nk1(seg, NK1_ROLE, 1).upper() not in ORGANISATION_ROLES
        ]
        people.sort(
            key=lambda p: self._nk1(p[1], NK1_RELATIONSHIP, 1).upper() != CAREGIVER_RELATIONSHIP
        )
        refused: Caregiver | None = None
        for n, segment in people:
            mobile, marked = self._nk1_mobile(segment, n)
            if mobile or (marked and refused is None):
                found = self._nk1_caregiver(segment, n, mobile)
                if mobile:
                    return found
                refused = found
        return refused

    def _nk1(self, segment: hl7.Segment, number: int, component: int = 0) -> str:
        reps = self.msg.repetitions_of(segment, number)
        return self.msg.pick(reps[0], component) if reps else ""

    def _nk1_mobile(self, segment: hl7.Segment, n: int) -> tuple[str | None, bool]:
        """(the mobile, whether a number marked mobile was there), read as the patient's are."""
        marked: list[tuple[str, str]] = []
        other: list[tuple[str, str]] = []
        for number in (NK1_PHONE, NK1_TELECOM, NK1_BUSINESS):
            where = f"NK1-{number}" if n == 1 else f"NK1-{number} (NK1 #{n})"
            for rep in self.msg.repetitions_of(segment, number):
                text = self._number_text(rep)
                if not text or not self._is_phone(rep):
                    continue
                if self._is_mobile(rep):
                    marked.append((where, text))
                elif number != NK1_BUSINESS:  # a work number is a mobile only when marked so
                    other.append((where, text))
        region = self._phone_regions()
        for where, text in marked:
            mobile, reason = parse_mobile(text, region)
            if mobile:
                return mobile, True
            self.warn(where, f"caregiver's mobile dropped: {reason}; no copies are sent")
        for _where, text in other:
            mobile, _reason = parse_mobile(text, region)
            if mobile:
                return mobile, bool(marked)
        return None, bool(marked)

    def _nk1_caregiver(self, segment: hl7.Segment, n: int, mobile: str | None) -> Caregiver:
        reps = self.msg.repetitions_of(segment, NK1_NAME)
        name = ""
        if reps:
            given, family = self.msg.pick(reps[0], 2), self.msg.pick(reps[0], 1, 1)
            name = " ".join(part for part in (given, family) if part)
        relationship = self._nk1(segment, NK1_RELATIONSHIP, 2) or self._nk1(
            segment, NK1_RELATIONSHIP, 1
        )
        suffix = "" if n == 1 else f" (NK1 #{n})"
        if field_problem("caregiver_name", name):
            self.warn(f"NK1-2{suffix}", f"caregiver's name {field_problem('caregiver_name', name)}")
            name = ""
        reason = field_problem("caregiver_relationship", relationship)
        if reason:
            self.warn(f"NK1-3{suffix}", f"caregiver's relationship {reason}")
            relationship = ""
        consent = True if self.mapping.caregiver_copies else None  # see SiuMapping
        return Caregiver(name, mobile, relationship, sms_consent=consent, copies=consent)

    def flags(self) -> dict[str, Tristate]:
        found = dict.fromkeys(FLAG_NAMES, Tristate.UNKNOWN)
        if self.mapping.nte_flags:
            for segment in self.msg.segments("NTE"):
                for comment in self.msg.repetitions_of(segment, 3):
                    for line in self.msg.pick(comment).splitlines():
                        self._nte_flag(line, found)
        for name, ref in self.mapping.flags.items():
            value = self.msg.get(ref)
            if value:
                self._set_flag(found, name, value, str(ref))
        return found

    def _nte_flag(self, line: str, found: dict[str, Tristate]) -> None:
        key, sep, value = line.partition(":")
        name = key.strip().lower().replace(" ", "_")
        if sep and name in FLAG_NAMES:
            self._set_flag(found, name, value.strip(), "NTE-3")

    def _set_flag(self, found: dict[str, Tristate], name: str, value: str, where: str) -> None:
        flag = TRISTATE_WORDS.get(value.lower())
        if flag is None:
            self.warn(where, f"{name} is not a yes/no value; left unknown")
        else:
            found[name] = flag


def _map(msg: _Message, event: str, mapping: SiuMapping, defaults: ImportDefaults) -> SiuChange:
    m = _Mapper(msg, mapping, defaults)
    kind = m.kind(event)
    appointment_id = m.required(mapping.appointment_id, "appointment_id")
    id_fits = m.fits("appointment_id", appointment_id)
    described = _described(m, kind, appointment_id)
    if kind in (ChangeKind.CANCELLED, ChangeKind.NO_SHOW) and appointment_id and id_fits:
        # Its id is all a cancellation or no-show needs. When the rest of the message does not
        # describe the appointment (no AIS, no start, an unreadable patient...), the problems
        # are only warnings: a refused S15 would leave the cancelled biopsy's reminders going.
        change: Change | None = described
        if described is None:
            change = Cancellation(appointment_id, no_show=kind is ChangeKind.NO_SHOW)
            m.warnings.extend(m.errors)
        return _change(msg, event, kind, change, [], m.warnings, defaults.timezone)
    return _change(msg, event, kind, described, m.errors, m.warnings, defaults.timezone)


def _described(m: _Mapper, kind: ChangeKind | None, appointment_id: str) -> Appointment | None:
    """The appointment as the message describes it, or None (with errors noted on `m`)."""
    patient_id = m.patient_id()
    start = m.start()
    duration = m.duration(start)
    procedure = m.required(m.mapping.procedure, "procedure").upper()
    mobile, email = m.contacts()
    if kind is ChangeKind.BOOKED and not mobile and not email:
        m.fail("PID-13/PID-14", "no usable mobile number or email")
    first, last = m.name()
    location = m.location()
    stored = {"patient_id": patient_id, "first_name": first, "last_name": last,
              "procedure": procedure, "location": location}  # fmt: skip
    for name, value in stored.items():
        m.fits(name, value)
    if m.errors or start is None or kind is None:
        return None
    return Appointment(
        external_id=appointment_id,
        clinic_id=m.defaults.clinic_id,
        patient=Patient(
            external_id=patient_id,
            first_name=first,
            last_name=last,
            mobile=mobile,
            email=email,
            language=m.language(),
            timezone=m.defaults.timezone,
            caregiver=m.caregiver(),
        ),
        procedure=procedure,
        start=start,
        duration_minutes=duration,
        location=location,
        status=(
            AppointmentStatus.CANCELLED
            if kind is ChangeKind.CANCELLED
            else AppointmentStatus.BOOKED
        ),
        **m.flags(),
    )


def _change(
    msg: _Message,
    event: str,
    kind: ChangeKind | None,
    appointment: Change | None,
    errors: list[SiuProblem],
    warns: list[SiuProblem],
    zone_name: str,
) -> SiuChange:
    sent = parse_timestamp(msg.get(_MSH_TIME), zone_name) if msg.get(_MSH_TIME) else None
    return SiuChange(
        index=0,
        event=event,
        kind=kind,
        control_id=msg.get(_MSH_CONTROL),
        message_time=sent if isinstance(sent, datetime) else None,
        appointment=appointment,
        errors=errors,
        warnings=warns,
    )


def _one(
    raw: bytes,
    index: int,
    mapping: SiuMapping,
    defaults: ImportDefaults | None,
    clinics: Mapping[str, ImportDefaults],
) -> SiuChange:
    text = _decode(raw)
    try:
        msg = _read(text)
    except Exception as exc:  # python-hl7 raises several types; any of them means unreadable
        control = _control_id_guess(text)
        problem = SiuProblem("MSH", f"not a readable HL7 message ({_reason(exc)})")
        return SiuChange(index, "", None, control, None, None, [problem], parsed=False)
    message_type = msg.first(_MSH_TYPE)
    chosen = _clinic_for(msg, mapping, defaults, clinics)
    if msg.pick(message_type, 1) != "SIU" or isinstance(chosen, SiuProblem):
        zone_name = chosen.timezone if isinstance(chosen, ImportDefaults) else "UTC"
        change = _change(msg, msg.pick(message_type, 2), None, None, [], [], zone_name)
        shown = msg.pick(message_type) or "(empty)"
        problem = (
            chosen
            if isinstance(chosen, SiuProblem)
            else SiuProblem("MSH-9", f"{shown!r} is not an SIU message")
        )
        return _with(change, index, errors=[problem])
    change = _map(msg, msg.pick(message_type, 2).upper(), mapping, chosen)
    return _with(change, index)


def _clinic_for(
    msg: _Message,
    mapping: SiuMapping,
    defaults: ImportDefaults | None,
    clinics: Mapping[str, ImportDefaults],
) -> ImportDefaults | SiuProblem:
    """The clinic a message is for: its sending facility in the mapping's `facilities`, else
    the feed's clinic. Its numbers are read in that clinic's country, never in another's."""
    facilities = {name.strip().upper(): clinic for name, clinic in mapping.facilities.items()}
    for ref in _SENDERS:
        sender = msg.get(ref).strip().upper()
        clinic_id = facilities.get(sender) if sender else None
        if clinic_id is None:
            continue
        chosen = clinics.get(clinic_id)
        if chosen is None:
            # Facility and clinic codes are configuration, not patient data: safe to name.
            return SiuProblem(str(ref), f"facility {sender!r} maps to clinic {clinic_id!r}, "
                              "which is not configured")  # fmt: skip
        return chosen
    if defaults is None:
        named = next((msg.get(ref) for ref in _SENDERS if msg.get(ref)), "")
        return SiuProblem(
            "MSH-4",
            f"sending facility {named[:40]!r} is not in the mapping's facilities and the feed "
            "has no clinic of its own (--clinic or the mapping's clinic)",
        )
    return defaults


def _with(change: SiuChange, index: int, errors: list[SiuProblem] | None = None) -> SiuChange:
    return SiuChange(
        index,
        change.event,
        change.kind,
        change.control_id,
        change.message_time,
        change.appointment,
        errors if errors is not None else change.errors,
        change.warnings,
        change.parsed,
    )


def _reason(exc: Exception) -> str:
    # Our own ValueErrors say what is wrong without quoting data; python-hl7's quote the segment.
    return str(exc) if type(exc) is ValueError else type(exc).__name__


def _control_id_guess(text: str) -> str:
    """MSH-10 from a message that failed to parse, so the caller can still send an AR."""
    line = text.split("\r", 1)[0]
    if not line.startswith("MSH") or len(line) < 4:
        return ""
    parts = line.split(line[3])
    component = parts[1][:1] if len(parts) > 1 and parts[1][:1].strip() else "^"
    return parts[9].split(component)[0].strip() if len(parts) > 9 else ""


def parse_siu(
    data: bytes,
    *,
    defaults: ImportDefaults | None,
    mapping: SiuMapping | None = None,
    filename: str = "",
    clinics: Mapping[str, ImportDefaults] | None = None,
) -> list[SiuChange]:
    """One SiuChange per message in `data`, in order. `defaults` are the feed's clinic's; with
    the mapping's `facilities`, `clinics` (by id) are what a message's sending facility picks.
    `defaults=None`: a message from a facility the mapping does not list is refused (AE).
    Raises ValueError for bad defaults."""
    known = dict(clinics or {})
    problems = defaults_problems(defaults) if defaults is not None else []
    for clinic_defaults in known.values():
        problems += defaults_problems(clinic_defaults)
    if problems:
        where = f"{filename}: " if filename else ""
        raise ValueError(where + "; ".join(problems))
    layout = mapping or _DEFAULT_MAPPING
    return [
        _one(raw, i, layout, defaults, known) for i, raw in enumerate(split_messages(data), start=1)
    ]
