"""CSV appointment exports -> Appointments and row errors. Parsing only: no database, no clock.

Two stages, so the costly one can run in worker processes:
- `read_csv` (cheap, main process): decode, find the delimiter, check the headers -> raw rows.
- `RowConverter` (picklable plain data): raw rows -> `Appointment` or the row's `RowError`s.
`parse_csv` does both in-process.

Default layout headers (a mapping file, see csv_mapping, describes any other layout):
appointment_id, patient_id, first_name, last_name, mobile, email, language, timezone, procedure,
start, duration_minutes, location, sedation, anticoagulant, status; optionally clinic,
on_chemotherapy, diabetes_on_medication. Header names ignore case and outer spaces; other headers
are ignored.

Policy:
- A naive start is wall-clock time in the row's zone (its timezone cell, else the default). A time
  skipped by a spring-forward change is a row error; a time that occurs twice at fall-back takes
  its first occurrence (PEP 495 fold=0: the earlier instant, still on summer time). A start with an
  offset or Z is that instant. `Appointment.start` is aware UTC.
- `line` is the physical line where the row starts (1 = the first line), so a quoted value with a
  line break does not shift the rows after it. Blank lines (or only delimiters) are skipped.
- Missing trailing fields count as empty; extra empty trailing fields (Excel writes them) are
  ignored; extra fields with text are a row error, as the row's values can no longer be trusted.
- A mobile without a country code is read in the country of the row's time zone (tzdata's
  zone.tab: America/New_York -> US) and in the country of the row's clinic (its `clinic` cell,
  else the import's); never in another clinic's. Readings that differ are refused, not guessed.
  So a multi-country export needs no +1/+61 prefixes.
- A row error never quotes a name, phone number or email: error lists end up in logs. A booked row
  needs a mobile or an email. A cancelled row needs only its appointment id: when anything else
  in it is missing or unreadable (start, procedure, patient, contacts...), it becomes a
  `Cancellation` of that id, so no detail can keep a cancelled appointment's reminders going.
- A row with any error produces no Appointment; all of its errors are reported.
- Every stored value must fit its database column (store/field_limits.py); one that does not is
  a row error naming the column. A start outside the years 1900-2199 (domain/start_range.py) is
  a row error too.
- A file with no data row (empty, a byte-order mark alone, or only a header line) is refused
  whole, as is a header over 16,384 fields or with a cell over 32,767 characters. A data cell
  over 32,767 characters is a row error. These are Excel's own limits (columns in a sheet,
  characters in a cell): an export made by any spreadsheet or scheduler fits them, so a file
  past them is not an appointment list, or has an unclosed quote that ran into the lines after.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from ..domain.appointment import (
    CAREGIVER_UNSAID,
    DEFAULT_SMS_CONSENT,
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
from ..store.field_limits import unstorable
from .base import (
    TRISTATE_WORDS,
    Converted,
    ImportDefaults,
    RowError,
    Warned,
    defaults_problems,
    is_zone,
    normalise_language,
    resolve_local,
    split_warnings,
)
from .contacts import parse_email, parse_mobile, phone_regions
from .csv_mapping import (
    CAREGIVER_FIELDS,
    DURATION_UNITS,
    EXPECTED,
    HHMM_INTEGER,
    NO_CONSENT_WORDS,
    STATUS_WORDS,
    CsvMapping,
)

DEFAULT_LAYOUT = CsvMapping()
EMPTY = "is empty"
NO_CONTACT = "no mobile or email"
MAX_CELL_CHARS = 32_767  # Excel's limit for one cell (see the module docstring)
MAX_COLUMNS = 16_384  # Excel's limit for a sheet's columns
READ_BLOCK = 1 << 20  # bytes read at a time when a file is scanned whole
# The csv module refuses a field over 128 KiB with an error that names no column, and leaves the
# reader part-way through a record. Its cap is raised far above any cell (cells are measured
# against MAX_CELL_CHARS, with line and column), but kept: rows are read as a file streams by, and
# an unclosed quote must not gather the rest of a large file into memory.
csv.field_size_limit(max(csv.field_size_limit(), 1 << 24))
DELIMITERS = (",", ";", "\t", "|")  # in order of preference when they tie
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # stands in for a start that failed; the row is rejected
_ISO_START = re.compile(
    r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,6})?)?(?:Z|[+-]\d{2}:?\d{2})?"
)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ISO_TIME = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?")
_HHMM = re.compile(r"\d{1,4}")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")


class FileRejected(Exception):
    """The whole file cannot be read; the message names the file."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RawRow(NamedTuple):
    """A data row as read: a tuple, so it is made and sent to a worker process cheaply."""

    line: int
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CsvTable:
    filename: str
    headers: tuple[str, ...]
    rows: list[RawRow]


@dataclass(frozen=True, slots=True)
class CsvStream:
    """A file's checked headers, and its data rows: read once, as they are iterated."""

    filename: str
    headers: tuple[str, ...]
    rows: Iterator[RawRow]


@dataclass(frozen=True, slots=True)
class ParsedCsv:
    rows: list[tuple[int, Change]]  # (line, appointment or cancellation)
    errors: list[RowError]
    total: int  # data rows read, blank lines excluded
    # What was dropped from rows that still import (a caregiver's number that cannot be read).
    warnings: list[RowError] = field(default_factory=list)


# --- reading: bytes -> raw rows ---------------------------------------------------------------


def read_csv(
    data: bytes, *, filename: str, mapping: CsvMapping | None = None, encoding: str | None = None
) -> CsvTable:
    """Decode, find the delimiter and check the headers; raises FileRejected."""
    stream = stream_csv(io.BytesIO(data), filename=filename, mapping=mapping, encoding=encoding)
    return CsvTable(filename, stream.headers, list(stream.rows))


@contextmanager
def open_csv(
    path: Path, *, mapping: CsvMapping | None = None, encoding: str | None = None
) -> Iterator[CsvStream]:
    """`stream_csv` over a file, open while the block runs."""
    with path.open("rb") as file:
        yield stream_csv(file, filename=str(path), mapping=mapping, encoding=encoding)


def stream_csv(
    file: BinaryIO,
    *,
    filename: str,
    mapping: CsvMapping | None = None,
    encoding: str | None = None,
) -> CsvStream:
    """Read as far as the first data row: the encoding, the delimiter, the headers checked.
    Raises FileRejected for a file refused whole (see the module docstring). The rows are read
    from `file` as they are iterated, and may still raise FileRejected (text that is not in
    the file's encoding, a line that is not CSV), so whoever consumes them must be able to undo
    what it did with the rows before."""
    layout = mapping or DEFAULT_LAYOUT
    declared = encoding or layout.encoding
    lines = _decoded_lines(file, _codec(file, filename, declared), filename, declared)
    skipped = []  # the lines before the first with text: the csv reader still counts them
    for first in lines:
        skipped.append(first)
        if first.strip():
            break
    else:
        raise FileRejected(f"{filename}: the file is empty; there are no appointments to import")
    sep_line = re.fullmatch(r"sep=(.)", first.strip())  # Excel's hint line, e.g. "sep=;"
    delimiter = layout.delimiter or (sep_line[1] if sep_line else _sniff(first))
    reader = csv.reader(itertools.chain(skipped, lines), delimiter=delimiter)
    records = _records(reader, filename)
    if sep_line is not None:
        next(records, None)
    header_line, headers = next(records, (0, ()))
    headers = tuple(f.strip() for f in headers)
    _check_header(headers, header_line, filename)
    problems = _locate(headers, layout)[1]
    if problems:
        found = f"the header line has {len(headers)} field(s) when split on {delimiter!r}"
        fix = f"mapping: {layout.source}" if layout.source else "other headers need a CSV mapping"
        raise FileRejected(f"{filename}: {'; '.join(problems)}; {found} ({fix})")
    first_row = next(records, None)
    if first_row is None:
        raise FileRejected(f"{filename}: the file has a header line but no appointment rows")
    rows = itertools.starmap(RawRow, itertools.chain([first_row], records))
    return CsvStream(filename, headers, rows)


def data_lines(path: Path) -> int:
    """About how many data rows the file has (its lines but the header), for a progress bar:
    counted in blocks, without decoding. A value with a line break counts twice."""
    newlines = 0
    with path.open("rb") as file:
        while block := file.read(READ_BLOCK):
            newlines += block.count(b"\n")
    return max(newlines, 1)


def _codec(file: BinaryIO, filename: str, declared: str | None) -> str:
    start = file.read(2)
    file.seek(0)
    utf16 = start.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))  # Excel "Unicode text"
    codec = declared or ("utf-16" if utf16 else "utf-8")
    try:
        if codecs.lookup(codec).name == "utf-8":
            codec = "utf-8-sig"  # a BOM is fine whether or not UTF-8 was declared
    except LookupError:
        raise FileRejected(f"{filename}: unknown encoding {codec!r}") from None
    return codec


def _decoded_lines(
    file: BinaryIO, codec: str, filename: str, declared: str | None
) -> Iterator[str]:
    """The file's lines as text, each with its line break (csv reads the breaks itself)."""
    text = io.TextIOWrapper(file, encoding=codec, newline="")
    try:
        first = text.readline()
        yield first.removeprefix("\ufeff")
        yield from text
    except UnicodeDecodeError:
        line = _undecodable_line(file, codec)
        raise FileRejected(
            f"{filename}: line {line} is not valid {declared or 'UTF-8'} text; if the export uses "
            "another encoding (older Excel and Windows systems write windows-1252), declare it, "
            "e.g. `encoding: windows-1252` in the clinic's CSV mapping file"
        ) from None
    finally:
        if not file.closed:
            text.detach()  # the file stays its opener's to close


def _undecodable_line(file: BinaryIO, codec: str) -> int:
    """The line where the file stops being `codec` text: read again from the start, in blocks.
    Lines are counted in bytes, like a text editor would show them, on LF (on CR for a file
    with no LF at all)."""
    file.seek(0)
    decoder = codecs.getincrementaldecoder(codec)()
    lf = cr = 0
    while block := file.read(READ_BLOCK):
        pending = decoder.getstate()[0]
        try:
            decoder.decode(block)
        except UnicodeDecodeError as exc:
            seen = (pending + block)[: exc.start]
            lf, cr = lf + seen.count(b"\n"), cr + seen.count(b"\r")
            break
        lf, cr = lf + block.count(b"\n"), cr + block.count(b"\r")
    has_lf = lf > 0 or _has_lf(file)
    return (lf if has_lf else cr) + 1


def _has_lf(file: BinaryIO) -> bool:
    file.seek(0)
    while block := file.read(READ_BLOCK):
        if b"\n" in block:
            return True
    return False


def _sniff(header_line: str) -> str:
    """The delimiter that splits the header into the most fields (csv.Sniffer guesses badly)."""
    counts = {d: len(next(csv.reader([header_line], delimiter=d))) for d in DELIMITERS}
    return max(DELIMITERS, key=lambda d: counts[d])  # max keeps the first of equals


def _records(reader: Any, filename: str) -> Iterator[tuple[int, tuple[str, ...]]]:
    """(the line where it starts, its fields) of each record with text in it."""
    last = 0  # the reader's line count after the previous record
    try:
        for fields in reader:
            line, last = last + 1, reader.line_num
            if "".join(fields).strip():
                yield line, tuple(fields)
    except csv.Error as exc:
        raise FileRejected(f"{filename}: line {reader.line_num} is not valid CSV ({exc})") from None


def _check_header(headers: tuple[str, ...], line: int, filename: str) -> None:
    if not headers:
        raise FileRejected(f"{filename}: the file has no header line and no appointment rows")
    if len(headers) > MAX_COLUMNS:
        raise FileRejected(
            f"{filename}: line {line}, the header, has {len(headers):,} fields; at most "
            f"{MAX_COLUMNS:,} are read (is this an appointment export, with the right delimiter?)"
        )
    for number, header in enumerate(headers, start=1):
        if len(header) > MAX_CELL_CHARS:
            raise FileRejected(
                f"{filename}: line {line}, header field {number}, is {len(header):,} characters "
                f"long; a cell holds at most {MAX_CELL_CHARS:,} (an unclosed quote?)"
            )


def _locate(headers: Sequence[str], layout: CsvMapping) -> tuple[dict[str, int], list[str]]:
    """Each field's column index, and problems: missing required headers, ambiguous duplicates."""
    positions: dict[str, list[int]] = {}
    for i, header in enumerate(headers):
        positions.setdefault(header.strip().lower(), []).append(i)
    required = layout.required_fields()
    index: dict[str, int] = {}
    missing: list[str] = []
    problems: list[str] = []
    for name in required + layout.optional_fields():
        header = layout.header(name)
        found = positions.get(header.lower(), [])
        if len(found) > 1:
            problems.append(f"header {header!r} appears {len(found)} times")
        elif found:
            index[name] = found[0]
        elif name in required:
            missing.append(name if header == name else f"{name} (header {header!r})")
    if missing:
        problems.insert(0, f"missing required columns: {', '.join(missing)}")
    return index, problems


# --- converting: raw row -> Appointment | row errors ---------------------------------------------


@dataclass(frozen=True, slots=True)
class _Column:
    index: int  # -1 when the file has no such column
    header: str  # as written in the file, for RowError.column
    spellings: dict[str, str] = field(default_factory=dict)  # their spelling (lower) -> ours
    fallback: str = ""  # for an empty or absent cell
    also: str = ""  # the mapped spellings, for "expected ..." messages


class RowConverter:
    """Turns raw rows into Appointments. Plain data only, so it pickles to worker processes."""

    def __init__(
        self, headers: Sequence[str], mapping: CsvMapping | None, defaults: ImportDefaults
    ) -> None:
        layout = mapping or DEFAULT_LAYOUT
        index, header_problems = _locate(headers, layout)
        # No headers means an empty file: nothing to convert, so nothing to complain about.
        problems = (header_problems if headers else []) + defaults_problems(defaults)
        if problems:
            raise ValueError("; ".join(problems))
        self._width = len(headers)
        self._headers = tuple(header.strip() for header in headers)
        self._defaults = defaults
        self._default_language = normalise_language(defaults.language) or "en"
        self._split_start = layout.split_start
        self._duration_unit = (
            layout.duration_unit if layout.duration_field == "duration" else "minutes"
        )
        self._formats = {
            name: layout.formats.get(name, ()) for name in ("start", "start_date", "start_time")
        }
        minutes = layout.defaults.get("duration_minutes")
        self._default_minutes = int(minutes) if minutes else defaults.duration_minutes
        fallback = {
            "language": normalise_language(defaults.language) or "",
            "timezone": defaults.timezone,
            "clinic": defaults.clinic_id,
        } | layout.defaults
        self._position = {header.strip(): i for i, header in reversed(list(enumerate(headers)))}
        self._has_caregiver = any(name in index for name in CAREGIVER_FIELDS)
        self._columns: dict[str, _Column] = {}
        for name in layout.required_fields() + layout.optional_fields():
            at = index.get(name, -1)
            spellings = layout.values.get(name, {})
            self._columns[name] = _Column(
                index=at,
                header=headers[at].strip() if at >= 0 else layout.header(name),
                spellings={spelling.lower(): ours for spelling, ours in spellings.items()},
                fallback="" if name in ("duration", "duration_minutes") else fallback.get(name, ""),
                also=_also(spellings),
            )

    def convert_many(self, rows: Sequence[RawRow]) -> list[Converted]:
        return [self.convert(row) for row in rows]

    def convert(self, row: RawRow) -> Converted:
        values, line = row.values, row.line
        if len(values) > self._width and "".join(values[self._width :]).strip():
            reason = (
                f"has {len(values)} fields but the header has {self._width}"
                " (a value containing the delimiter needs quotes)"
            )
            return [RowError(line, "", reason)]
        oversized = self._oversized(values, line)
        if oversized:
            return oversized
        errors: list[RowError] = []
        status = self._status(values, line, errors)
        zone_name = self._zone(values, line, errors)
        language = self._language(values, line, errors)
        start = self._start(values, zone_name, line, errors)
        duration = self._duration(values, line, errors)
        flags = {name: self._flag(values, name, line, errors) for name in FLAG_NAMES}
        mobile, email = self._contacts(values, status, zone_name, line, errors)
        deceased, do_not_contact = (
            self._yes(values, name, line, errors) for name in ("deceased", "do_not_contact")
        )
        appointment_id = self._required(values, "appointment_id", line, errors)
        patient_id = self._required(values, "patient_id", line, errors)
        procedure = self._required(values, "procedure", line, errors).upper()
        consent = self._sms_consent(values)
        warnings: list[RowError] = []
        caregiver = self._caregiver(values, zone_name, line, errors, warnings)
        stored = {"appointment_id": appointment_id, "patient_id": patient_id,
                  "first_name": self._cell(values, "first_name"),
                  "last_name": self._cell(values, "last_name"), "mobile": mobile, "email": email,
                  "language": language, "timezone": zone_name, "procedure": procedure,
                  "location": self._cell(values, "location"),
                  "clinic": self._cell(values, "clinic"), "sms_consent": consent}  # fmt: skip
        if isinstance(caregiver, Caregiver):
            stored |= {"caregiver_name": caregiver.name,
                       "caregiver_relationship": caregiver.relationship}  # fmt: skip
        for name, reason in unstorable(stored):
            self._fail(errors, line, name, reason)
        if status is AppointmentStatus.CANCELLED and errors:
            return cancelled_by_id(appointment_id, errors, self._columns["appointment_id"].header)
        if errors:
            return sorted(errors, key=lambda e: self._position.get(e.column, self._width))
        patient = Patient(
            external_id=patient_id,
            first_name=self._cell(values, "first_name"),
            last_name=self._cell(values, "last_name"),
            mobile=mobile,
            email=email,
            language=language,
            timezone=zone_name,
            sms_consent=consent,
            deceased=deceased,
            do_not_contact=do_not_contact,
            caregiver=caregiver,
        )
        appointment = Appointment(
            external_id=appointment_id,
            clinic_id=self._cell(values, "clinic"),
            patient=patient,
            procedure=procedure,
            start=start,
            duration_minutes=duration,
            location=self._cell(values, "location"),
            status=status,
            **flags,
        )
        return Warned(appointment, warnings) if warnings else appointment

    def _caregiver(
        self,
        values: tuple[str, ...],
        zone_name: str,
        line: int,
        errors: list[RowError],
        warnings: list[RowError],
    ) -> CaregiverInfo:
        """The row's caregiver: unsaid when the file has no caregiver column; none when the row
        gives neither a name nor a mobile. What cannot be read of it (the number, a consent) is
        a warning and counts as no: the patient's own reminders never wait on the caregiver."""
        if not self._has_caregiver:
            return CAREGIVER_UNSAID
        name, text = self._cell(values, "caregiver_name"), self._cell(values, "caregiver_mobile")
        if not name and not text:
            return None
        mobile = None
        if text:
            clinic_region = self._defaults.region_of(self._cell(values, "clinic"))
            mobile, reason = parse_mobile(text, phone_regions(zone_name, clinic_region))
            if reason:
                self._fail(warnings, line, "caregiver_mobile", caregiver_mobile_dropped(reason))
        consent, copies = (
            self._caregiver_flag(values, flag, line, warnings)
            for flag in ("caregiver_consent", "caregiver_copies")
        )
        relationship = self._cell(values, "caregiver_relationship")
        return Caregiver(name, mobile, relationship, sms_consent=consent, copies=copies)

    def _caregiver_flag(
        self, values: tuple[str, ...], name: str, line: int, warnings: list[RowError]
    ) -> bool:
        """A consent: only a clear yes gives it; blank is no, and so is anything unreadable."""
        flag = TRISTATE_WORDS.get(self._cell(values, name).lower())
        if flag is None:
            reason = f"is not yes or no{self._also(name)}; taken as no"
            self._fail(warnings, line, name, reason)
        return flag is Tristate.YES

    def _oversized(self, values: tuple[str, ...], line: int) -> list[RowError]:
        """A cell too large for any export (see MAX_CELL_CHARS): the row cannot be trusted."""
        errors = []
        for i, value in enumerate(values):
            if len(value) > MAX_CELL_CHARS:
                column = self._headers[i] if i < self._width else f"field {i + 1}"
                reason = (
                    f"is {len(value):,} characters long; a cell holds at most "
                    f"{MAX_CELL_CHARS:,} (an unclosed quote?)"
                )
                errors.append(RowError(line, column, reason))
        return errors

    def _cell(self, values: tuple[str, ...], name: str) -> str:
        """The cell's text in our spelling: mapped spelling, else the text, else the fallback."""
        column = self._columns[name]
        text = values[column.index].strip() if 0 <= column.index < len(values) else ""
        if column.spellings:
            ours = column.spellings.get(text.lower())
            if ours is not None:
                return ours
        return text or column.fallback

    def _fail(self, errors: list[RowError], line: int, name: str, reason: str) -> None:
        errors.append(RowError(line, self._columns[name].header, reason))

    def _required(
        self, values: tuple[str, ...], name: str, line: int, errors: list[RowError]
    ) -> str:
        text = self._cell(values, name)
        if not text:
            self._fail(errors, line, name, EMPTY)
        return text

    def _status(
        self, values: tuple[str, ...], line: int, errors: list[RowError]
    ) -> AppointmentStatus:
        text = self._cell(values, "status")
        status = STATUS_WORDS.get(text.lower())
        if status is None:
            # Status codes are vendor vocabulary, not patient data: quoting one helps fix a mapping.
            said = f"{_clip(text)!r} is not a status" if text else "is empty"
            self._fail(
                errors,
                line,
                "status",
                f"{said}; expected {EXPECTED['status']}{self._also('status')}",
            )
            return AppointmentStatus.BOOKED
        return status

    def _flag(
        self, values: tuple[str, ...], name: str, line: int, errors: list[RowError]
    ) -> Tristate:
        flag = TRISTATE_WORDS.get(self._cell(values, name).lower())
        if flag is None:
            expected = "yes, no or unknown (or y/n, true/false, 1/0)"
            self._fail(
                errors, line, name, f"is not a yes/no value; expected {expected}{self._also(name)}"
            )
            return Tristate.UNKNOWN
        return flag

    def _yes(self, values: tuple[str, ...], name: str, line: int, errors: list[RowError]) -> bool:
        """A suppression flag: only a clear yes sets it; blank or unknown is no."""
        flag = TRISTATE_WORDS.get(self._cell(values, name).lower())
        if flag is None:
            self._fail(errors, line, name, f"is not a yes/no value{self._also(name)}")
            return False
        return flag is Tristate.YES

    def _sms_consent(self, values: tuple[str, ...]) -> str:
        return sms_consent_basis(self._cell(values, "sms_consent"))

    def _zone(self, values: tuple[str, ...], line: int, errors: list[RowError]) -> str:
        name, problem = read_zone(self._cell(values, "timezone"))
        if problem:
            self._fail(errors, line, "timezone", problem)
        return name

    def _language(self, values: tuple[str, ...], line: int, errors: list[RowError]) -> str:
        language, problem = read_language(self._cell(values, "language"))
        if problem:
            self._fail(errors, line, "language", problem)
        return language

    def _start(
        self, values: tuple[str, ...], zone_name: str, line: int, errors: list[RowError]
    ) -> datetime:
        if self._split_start:
            day = _date(self._cell(values, "start_date"), self._formats["start_date"])
            wall = _time(self._cell(values, "start_time"), self._formats["start_time"])
            if isinstance(day, str):
                self._fail(errors, line, "start_date", day)
            if isinstance(wall, str):
                self._fail(errors, line, "start_time", wall)
            if isinstance(day, str) or isinstance(wall, str):
                return _EPOCH
            result, name = resolve_local(datetime.combine(day, wall), zone_name), "start_time"
        else:
            result, name = (
                parse_start(self._cell(values, "start"), self._formats["start"], zone_name),
                "start",
            )
        if isinstance(result, str):
            self._fail(errors, line, name, result)
            return _EPOCH
        return result

    def _duration(self, values: tuple[str, ...], line: int, errors: list[RowError]) -> int:
        name = "duration" if "duration" in self._columns else "duration_minutes"
        text = self._cell(values, name)
        if not text:
            return self._default_minutes
        minutes = _minutes(text, self._duration_unit)
        if isinstance(minutes, str):
            self._fail(errors, line, name, minutes)
            return self._default_minutes
        return minutes

    def _contacts(
        self,
        values: tuple[str, ...],
        status: AppointmentStatus,
        zone_name: str,
        line: int,
        errors: list[RowError],
    ) -> tuple[str | None, str | None]:
        mobile_text, email_text = self._cell(values, "mobile"), self._cell(values, "email")
        mobile = email = None
        if mobile_text:
            clinic_region = self._defaults.region_of(self._cell(values, "clinic"))
            regions = phone_regions(zone_name, clinic_region)
            mobile, reason = parse_mobile(mobile_text, regions)
            if reason:
                self._fail(errors, line, "mobile", reason)
        if email_text:
            email, reason = parse_email(email_text)
            if reason:
                self._fail(errors, line, "email", reason)
        if not mobile_text and not email_text and status is AppointmentStatus.BOOKED:
            self._fail(errors, line, "mobile", NO_CONTACT)
        return mobile, email

    def _also(self, name: str) -> str:
        return self._columns[name].also


def gather(rows: Sequence[RawRow], results: Sequence[Converted]) -> ParsedCsv:
    """Pair converted results back with their rows (e.g. after converting chunks in workers)."""
    parsed = ParsedCsv(rows=[], errors=[], total=len(rows))
    for row, converted in zip(rows, results, strict=True):
        result, warnings = split_warnings(converted)
        parsed.warnings.extend(warnings)
        if isinstance(result, list):
            parsed.errors.extend(result)
        else:
            parsed.rows.append((row.line, result))
    return parsed


def parse_csv(
    data: bytes,
    *,
    filename: str,
    defaults: ImportDefaults,
    mapping: CsvMapping | None = None,
    encoding: str | None = None,
) -> ParsedCsv:
    """read_csv and RowConverter in one process; raises FileRejected."""
    table = read_csv(data, filename=filename, mapping=mapping, encoding=encoding)
    converter = RowConverter(table.headers, mapping, defaults)
    return gather(table.rows, converter.convert_many(table.rows))


# --- per-value work, cached because clinics repeat dates, times, zones and patients ---------------


def _also(spellings: dict[str, str]) -> str:
    if not spellings:
        return ""
    listed = ", ".join(repr(s) for s in list(spellings)[:12])
    return f", or a spelling from the mapping ({listed}{', ...' if len(spellings) > 12 else ''})"


def _clip(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _formats_text(formats: tuple[str, ...]) -> str:
    return " or ".join(repr(f) for f in formats)


def read_zone(name: str) -> tuple[str, str]:
    """(the zone, "") or ("UTC", why `name` is no zone): UTC lets the start still be checked;
    the row is rejected anyway."""
    if is_zone(name):
        return name, ""
    return "UTC", f"{_clip(name)!r} is not an IANA time zone such as Europe/London"


def read_language(text: str) -> tuple[str, str]:
    """(the BCP 47 tag, "") or ("", why `text` is none)."""
    language = normalise_language(text)
    if language is None:
        return "", f"{_clip(text)!r} is not {EXPECTED['language']}"
    return language, ""


def sms_consent_basis(text: str) -> str:
    """The basis on which the patient may be texted: the default when nothing is said, "" for
    a word that says there is none."""
    if not text:
        return DEFAULT_SMS_CONSENT
    if text.lower() in NO_CONSENT_WORDS:
        return ""
    return text


def caregiver_mobile_dropped(reason: str) -> str:
    """The warning for a caregiver's number that cannot be read (the row still imports)."""
    return f"{reason}; no copies are sent"


def cancelled_by_id(appointment_id: str, errors: list[RowError], id_column: str) -> Converted:
    """A cancelled row with errors. A cancellation must never be blocked by details it does not
    need: a bad phone number or a missing start on a cancelled row would otherwise leave the
    reminders going out. Its id is enough, unless the id itself is wrong."""
    id_errors = [e for e in errors if e.column == id_column]
    return id_errors or Cancellation(appointment_id)


@lru_cache(maxsize=16384)
def parse_start(text: str, formats: tuple[str, ...], zone_name: str) -> datetime | str:
    """A single start cell -> aware UTC, or the reason it is not one."""
    if not text:
        return "is empty"
    if formats:
        parsed = _strptime(text, formats)
        if parsed is None:
            return f"{_clip(text)!r} does not match the mapping's format {_formats_text(formats)}"
    else:
        parsed = _iso_start(text)
        if parsed is None:
            return f"{_clip(text)!r} is not an ISO 8601 date and time such as 2026-12-03T09:30"
    return resolve_local(parsed, zone_name)


def _iso_start(text: str) -> datetime | None:
    if not _ISO_START.fullmatch(text):
        return None  # fromisoformat alone would also take a bare date or a week date
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:  # e.g. month 13 or 24:00
        return None


@lru_cache(maxsize=4096)
def _date(text: str, formats: tuple[str, ...]) -> date | str:
    if not text:
        return "is empty"
    if formats:
        parsed = _strptime(text, formats)
        return (
            parsed.date() if parsed else f"{_clip(text)!r} does not match {_formats_text(formats)}"
        )
    if _ISO_DATE.fullmatch(text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    return f"{_clip(text)!r} is not a date in the form YYYY-MM-DD"


@lru_cache(maxsize=4096)
def _time(text: str, formats: tuple[str, ...]) -> time | str:
    if not text:
        return "is empty"
    if formats:
        parsed = _strptime(text, formats)
        return (
            parsed.time() if parsed else f"{_clip(text)!r} does not match {_formats_text(formats)}"
        )
    match = _ISO_TIME.fullmatch(text)
    if match and int(match[1]) < 24 and int(match[2]) < 60 and int(match[3] or 0) < 60:
        return time(int(match[1]), int(match[2]), int(match[3] or 0))
    return f"{_clip(text)!r} is not a time in the form HH:MM or HH:MM:SS"


def _strptime(text: str, formats: tuple[str, ...]) -> datetime | None:
    for fmt in formats:
        if fmt == HHMM_INTEGER:
            if _HHMM.fullmatch(text) and int(text) // 100 < 24 and int(text) % 100 < 60:
                return datetime(1900, 1, 1, int(text) // 100, int(text) % 100)  # noqa: DTZ001
            continue
        try:
            return datetime.strptime(text, fmt)  # noqa: DTZ007 (naive means local; resolved later)
        except ValueError:
            continue
    return None


@lru_cache(maxsize=1024)
def _minutes(text: str, unit: str) -> int | str:
    """A duration cell in `unit` -> whole minutes (rounded up), or the reason it is not one."""
    if unit == "minutes":
        if not text.isascii() or not text.isdigit():
            return f"{_clip(text)!r} is not a whole number of minutes"
        # Python reads no integer of over 4,300 digits; a day is 1,440 minutes anyway.
        minutes = int(text) if len(text.lstrip("0")) <= 5 else 10**6
    elif _NUMBER.fullmatch(text):
        minutes = math.ceil(Decimal(text) * DURATION_UNITS[unit] / 60)
    else:
        return f"{_clip(text)!r} is not a number of {unit}"
    if not 1 <= minutes <= 1440:
        return f"{_clip(text)!r} {unit} is not between 1 minute and 24 hours"
    return minutes
