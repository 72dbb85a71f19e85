"""Hostile input for every importer, and the property each must keep whatever it is given:
the result is a value or a clear error naming the place (a CSV line and column, an HL7
segment-field, a FHIR element, an API item's field); never an escaped exception; never patient
data in an error; and input refused whole writes nothing.

Shared by the property tests (tests/property/) and the long campaign (bench/fuzz_importers.py).
Inputs start from real samples (tests/conformance/) and a valid CSV row, then are mutated byte by
byte and field by field. All data is synthetic.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import re
import socket
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from sqlalchemy import Engine, func, select

from reminder_service.domain.appointment import Appointment, Cancellation
from reminder_service.domain.start_range import start_problem
from reminder_service.importers.csv_mapping import LAYOUT_FIELDS, OPTIONAL_FIELDS
from reminder_service.importers.csv_rows import (
    FileRejected,
    ImportDefaults,
    RawRow,
    RowConverter,
    RowError,
    parse_csv,
    split_warnings,
)
from reminder_service.importers.fhir_appointments import parse_fhir
from reminder_service.importers.hl7_ack import build_ack
from reminder_service.importers.hl7v2_siu import parse_siu, split_messages
from reminder_service.store.field_limits import change_fields, unstorable
from reminder_service.store.tables import appointments, imports, patients, reminders

ROOT = Path(__file__).parents[2]
DEFAULTS = ImportDefaults("riverside", "Europe/London", "GB", "en-GB")
FIELDS = (*LAYOUT_FIELDS, *OPTIONAL_FIELDS)
HL7_SAMPLES = [
    p.read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r").rstrip(b"\r")
    for p in sorted((ROOT / "tests" / "conformance" / "hl7").glob("*.hl7"))
]
FHIR_SAMPLES = [
    json.loads(p.read_text()) for p in sorted((ROOT / "tests" / "conformance" / "fhir").glob("*"))
]

# Personal values put into personal fields: an error or warning must never show them.
SENTINEL_FIRST, SENTINEL_LAST = "Zebedeeqx", "Quillfeatherqx"
SENTINEL_MOBILE = "07700 900461"
SENTINEL_EMAIL = "sentinel.personqx@example.org"
SENTINEL_CARER, SENTINEL_CARER_MOBILE = "Marigoldqx", "07700 900462"
SENTINEL_MARKS = (
    "Zebedeeqx", "Quillfeatherqx", "900461", "sentinel.personqx", "Marigoldqx", "900462",
)  # fmt: skip

# --- values ------------------------------------------------------------------------------------

EDGE_TEXT = (
    "",
    " ",
    '""',
    "\x00",
    "\ufeff",
    "\u202e",
    "\r\n",
    "'",
    '"',
    ",",
    ";",
    "|",
    "^~\\&",
    "0001-01-01",
    "0001-01-01T00:00",
    "0001-01-01T00:00+14:00",
    "0001-01-01 00:00Z",
    "9999-12-31T23:59",
    "9999-12-31T23:59:59.999999-12:00",
    "1899-12-31T23:59",
    "1900-01-01T00:00+05:00",
    "2199-12-31T23:59",
    "2200-01-01T00:00",
    "2026-03-29T01:30",
    "2026-12-03T09:30",
    "2026-02-30T09:00",
    "24:00",
    "00010101",
    "99991231235959",
    "00010101000000+1400",
    "99991231235959-1200",
    "202612030930",
    "20261203093000.1234+0000",
    "Europe/London",
    "America/New_York",
    "Pacific/Kiritimati",
    "Etc/GMT-14",
    "../etc/passwd",
    "x" * 300,
    "UTC",
    "07700 900123",
    "+447700900123",
    "+1 201-555-0123",
    "555",
    "+" + "9" * 30,
    "=1+1",
    "+cmd",
    "-2",
    "@SUM(A1)",
    "\t=1",
    "\r=1",
    "yes",
    "no",
    "unknown",
    "booked",
    "cancelled",
    "BMBX",
    "-1",
    "0",
    "1441",
    "1e309",
    "NaN",
    "9" * 30,
    "a@b",
    "@",
    "🙂" * 20,
)
LONG_SIZES = (31, 32, 33, 35, 36, 64, 65, 100, 101, 255, 256, 320, 321, 1000, 4301, 40_000)
_CHARS = st.characters(exclude_categories=("Cs",))  # lone surrogates cannot be file bytes


def hostile_text(max_size: int = 60) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(EDGE_TEXT),
        st.text(_CHARS, max_size=max_size),
        st.builds(lambda c, n: c * n, st.sampled_from('a9é🙂,"\n'), st.sampled_from(LONG_SIZES)),
    )


def json_values(text: st.SearchStrategy[str] | None = None) -> st.SearchStrategy[Any]:
    """Any JSON value; strings may hold lone surrogates (JSON's \\ud800 escapes)."""
    strings = text or st.one_of(hostile_text(), st.text(max_size=8))
    leaves = st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), strings,
        st.sampled_from(["\ud800", "a\udfffb"]),
    )  # fmt: skip
    return st.recursive(
        leaves,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(strings, inner, max_size=4),
        max_leaves=12,
    )


# --- bytes ---------------------------------------------------------------------------------------

_INSERTS = (b'"', b",", b";", b"\t", b"|", b"^", b"~", b"\\", b"&", b"\r", b"\n", b"\r\n",
            b"\x00", b"\x0b", b"\x1c", b"\xff", b"\xfe", b"\xef\xbb\xbf", b"\xc3", b"MSH|",
            b"PID|", b"SCH|", b"0", b"9", b"+", b"-", b" ", b"=")  # fmt: skip
_BLOW_UPS = (b"A" * 40_000, b"A" * 200_000, b"," * 20_000, b"|" * 5_000, b"^" * 5_000)


@st.composite
def mutated_bytes(draw: st.DrawFn, data: bytes, max_ops: int = 4) -> bytes:
    """`data` with a few deletions, insertions, replacements, duplications or a truncation."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(["delete", "insert", "replace", "duplicate", "truncate", "big"]))
        at = draw(st.integers(0, len(out)))
        if op == "delete":
            del out[at : at + draw(st.integers(1, 12))]
        elif op == "insert":
            out[at:at] = draw(st.sampled_from(_INSERTS) | st.binary(min_size=1, max_size=4))
        elif op == "replace" and out:
            out[min(at, len(out) - 1)] = draw(st.integers(0, 255))
        elif op == "duplicate":
            out[at:at] = out[at : at + draw(st.integers(1, 40))]
        elif op == "truncate":
            del out[at:]
        elif op == "big":
            out[at:at] = draw(st.sampled_from(_BLOW_UPS))
    return bytes(out)


# --- CSV -----------------------------------------------------------------------------------------

GOOD_ROW = {
    "appointment_id": "HX1", "patient_id": "HP1", "first_name": SENTINEL_FIRST,
    "last_name": SENTINEL_LAST, "mobile": SENTINEL_MOBILE, "email": SENTINEL_EMAIL,
    "language": "", "timezone": "", "procedure": "BMBX", "start": "2026-12-03T09:30",
    "duration_minutes": "45", "location": "Day Unit", "sedation": "yes", "anticoagulant": "no",
    "status": "booked", "clinic": "", "on_chemotherapy": "", "diabetes_on_medication": "",
    "sms_consent": "", "deceased": "", "do_not_contact": "",
    "caregiver_name": SENTINEL_CARER, "caregiver_mobile": SENTINEL_CARER_MOBILE,
    "caregiver_relationship": "mother", "caregiver_consent": "yes", "caregiver_copies": "yes",
}  # fmt: skip
PERSONAL = ("first_name", "last_name", "mobile", "email")


@st.composite
def csv_row(draw: st.DrawFn) -> dict[str, str]:
    """The good row with a few fields replaced by hostile text; names, mobile and email stay
    the sentinels unless replaced."""
    row = dict(GOOD_ROW)
    for name in draw(st.lists(st.sampled_from(FIELDS), max_size=6, unique=True)):
        row[name] = draw(hostile_text())
    return row


@st.composite
def csv_file(draw: st.DrawFn) -> bytes:
    """A CSV export built from hostile rows, with a mutated header, delimiter, line ends and
    encoding, then mutated byte by byte (sometimes not at all)."""
    headers = list(FIELDS)
    for _ in range(draw(st.integers(0, 2))):
        op = draw(st.sampled_from(["drop", "duplicate", "extra", "rename"]))
        at = draw(st.integers(0, len(headers) - 1))
        if op == "drop":
            del headers[at]
        elif op == "duplicate":
            headers.insert(at, headers[at])
        elif op == "extra":
            headers.insert(at, draw(hostile_text()))
        else:
            headers[at] = draw(hostile_text())
    rows = draw(st.lists(csv_row(), max_size=4))
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    out = io.StringIO()
    writer = csv.writer(
        out, delimiter=delimiter, lineterminator=draw(st.sampled_from(["\r\n", "\n"]))
    )
    writer.writerow(headers)
    writer.writerows([[row.get(h, "") for h in headers] for row in rows])
    codec = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "cp1252"]))
    data = out.getvalue().encode(codec, errors="replace")
    return draw(mutated_bytes(data)) if draw(st.booleans()) else data


_FIELD_N = re.compile(r"field \d+")


def check_row_errors(errors: list[RowError], columns: set[str] | None, lines: range) -> None:
    """Each error names its line and a column (one of `columns`, any when None: in a mutated
    file any text may be a header), or "field N" past the header, or "" for the whole row."""
    for error in errors:
        assert error.line in lines, error
        named = columns is None or error.column in columns or _FIELD_N.fullmatch(error.column)
        assert named, error
        assert error.reason.strip(), error
        assert "Traceback" not in error.reason, error


def check_change(change: Appointment | Cancellation) -> None:
    """What any importer hands on fits the database: lengths, a plausible start, a duration."""
    assert unstorable(change_fields(change)) == [], change_fields(change)
    if isinstance(change, Appointment):
        assert start_problem(change.start) == "", change.start
        assert change.start.tzinfo is not None
        assert 1 <= change.duration_minutes <= 1440


def no_patient_data(texts: list[str]) -> None:
    for text in texts:
        for mark in SENTINEL_MARKS:
            assert mark not in text, f"patient data in {text!r}"


def check_csv_row(row: dict[str, str], line: int = 2) -> None:
    converter = RowConverter(FIELDS, None, DEFAULTS)
    values = tuple(row[name] for name in FIELDS)
    result, warnings = split_warnings(converter.convert(RawRow(line, values)))
    check_row_errors(warnings, {*FIELDS}, range(line, line + 1))
    no_patient_data([w.reason for w in warnings])
    if isinstance(result, list):
        assert result, "an empty error list"
        check_row_errors(result, {*FIELDS, ""}, range(line, line + 1))
        no_patient_data([e.reason for e in result])
    else:
        check_change(result)


def check_csv_file(data: bytes) -> None:
    try:
        parsed = parse_csv(data, filename="hostile.csv", defaults=DEFAULTS)
    except FileRejected as exc:
        assert exc.message.startswith("hostile.csv: "), exc.message
        assert "Traceback" not in exc.message
        return
    physical = data.count(b"\n") + data.count(b"\r") + 2
    check_row_errors(parsed.errors, None, range(1, physical + 1))
    check_row_errors(parsed.warnings, None, range(1, physical + 1))
    for _line, change in parsed.rows:
        check_change(change)


# --- HL7 v2 --------------------------------------------------------------------------------------

_TIMESTAMP_FIELDS = (("MSH", 7), ("TQ1", 7), ("SCH", 11), ("AIS", 4), ("TQ1", 8))
_EVENTS = ("SIU^S12", "SIU^S13", "SIU^S14", "SIU^S15", "SIU^S17", "SIU^S26", "ADT^A01", "", "SIU")
_ID_FIELDS = (("SCH", 1), ("SCH", 2), ("PID", 3), ("AIS", 3), ("SCH", 7), ("AIL", 3), ("PID", 5))


def _segments(message: bytes) -> list[list[bytes]]:
    return [segment.split(b"|") for segment in message.split(b"\r")]


def _set(segments: list[list[bytes]], name: bytes, number: int, value: bytes) -> None:
    """SEG-number (MSH's numbering counts its own separator as MSH-1)."""
    for fields in segments:
        if fields and fields[0] == name:
            index = number - 1 if name == b"MSH" else number
            fields.extend([b""] * (index + 1 - len(fields)))
            fields[index] = value
            return


@st.composite
def hl7_message(draw: st.DrawFn, *, bytewise: bool = True) -> bytes:
    """A conformance sample mutated field by field (and, with `bytewise`, byte by byte)."""
    segments = _segments(draw(st.sampled_from(HL7_SAMPLES)))
    _set(segments, b"PID", 5, f"{SENTINEL_LAST}^{SENTINEL_FIRST}".encode())
    _set(segments, b"PID", 13, f"{SENTINEL_MOBILE}^PRN^CP~^NET^Internet^{SENTINEL_EMAIL}".encode())
    text = st.builds(lambda t: t.encode("utf-8"), hostile_text())
    for _ in range(draw(st.integers(0, 4))):
        op = draw(
            st.sampled_from(["field", "time", "event", "id", "encoding", "charset", "drop", "copy"])
        )
        if op == "field" and segments:
            fields = draw(st.sampled_from(segments))
            at = draw(st.integers(1, len(fields) + 3))
            fields.extend([b""] * (at + 1 - len(fields)))
            fields[at] = draw(text | st.builds(b"^".join, st.lists(text, max_size=4)))
        elif op == "time":
            name, number = draw(st.sampled_from(_TIMESTAMP_FIELDS))
            _set(segments, name.encode(), number, draw(text))
        elif op == "event":
            _set(segments, b"MSH", 9, draw(st.sampled_from(_EVENTS)).encode())
        elif op == "id":
            name, number = draw(st.sampled_from(_ID_FIELDS))
            size = draw(st.sampled_from((64, 65, 500)))
            _set(segments, name.encode(), number, b"I" * size)
        elif op == "encoding" and segments and segments[0][0] == b"MSH":
            segments[0][1] = draw(
                st.binary(max_size=6) | st.sampled_from([b"", b"^~\\&#", b"^^^^"])
            )
        elif op == "charset":  # MSH-18 names the codec the message is read with
            charsets = st.sampled_from(
                [b"UNICODE UTF-8", b"8859/1", b"8859/99", b"\x00", b"UTF-16"]
            )
            _set(segments, b"MSH", 18, draw(charsets | text))
        elif op == "drop" and len(segments) > 1:
            del segments[draw(st.integers(0, len(segments) - 1))]
        elif op == "copy" and segments:
            segments.insert(
                draw(st.integers(0, len(segments))), list(draw(st.sampled_from(segments)))
            )
    message = b"\r".join(b"|".join(fields) for fields in segments)
    if bytewise and draw(st.booleans()):
        message = draw(mutated_bytes(message))
    return message


_WHERE = re.compile(r"(?:[A-Z][A-Z0-9]{2}(?:-\d+(?:\.\d+)*)?(?:/[A-Z][A-Z0-9]{2}-[\d.]+)*)?")


def check_siu(data: bytes, *, personal_data_checked: bool) -> None:
    changes = parse_siu(data, defaults=DEFAULTS, filename="hostile.hl7")
    for change in changes:
        assert change.ack_code in ("AA", "AE", "AR")
        assert (change.appointment is None) == bool(change.errors), change
        for problem in change.errors + change.warnings:
            assert _WHERE.fullmatch(problem.where), problem
            assert problem.reason.strip(), problem
        if personal_data_checked:
            no_patient_data([str(p) for p in change.errors + change.warnings])
        if change.appointment is not None:
            check_change(change.appointment)
    for message in split_messages(data):
        for code in ("AA", "AE", "AR"):
            check_ack(build_ack(message, code, "a reason | with ^ separators\r"), code)


def check_ack(ack: bytes, code: str) -> str:
    """A well-formed ACK: MSH, MSA with the code, maybe ERR; nothing that breaks MLLP framing.
    Returns its MSA-2 (the control id)."""
    assert b"\x0b" not in ack and b"\x1c" not in ack and b"\n" not in ack, ack
    text = ack.decode("utf-8")
    assert text.startswith("MSH") and text.endswith("\r"), ack
    sep = text[3]
    assert sep.isascii() and text[4:8].isascii(), ack  # separators any sender can read
    segments = text[:-1].split("\r")
    assert [s[:3] for s in segments] in (["MSH", "MSA"], ["MSH", "MSA", "ERR"]), ack
    assert all(s[3] == sep for s in segments), ack
    msa = segments[1].split(sep)
    assert msa[1] == code, ack
    return msa[2]


def mllp_round_trip(sock: socket.socket, content: bytes) -> str:
    """Send one framed message on an open connection; its one ACK's code (the listener must
    answer every frame and keep the connection)."""
    content = content.replace(b"\x0b", b"").replace(b"\x1c", b"")  # framing bytes end a frame
    sock.sendall(b"\x0b" + content + b"\x1c\r")
    data = b""
    while not data.endswith(b"\x1c\r"):
        chunk = sock.recv(65536)
        assert chunk, "the listener closed the connection without an ACK"
        data += chunk
    assert data.startswith(b"\x0b") and data.count(b"\x1c") == 1, data
    ack = data[1:-2]
    text = ack.decode("utf-8")
    code = text.split("\r")[1].split(text[3])[1]
    assert code in ("AA", "AE", "AR"), code
    check_ack(ack, code)
    return code


# --- FHIR ----------------------------------------------------------------------------------------

_STATUSES = st.sampled_from(
    ["booked", "cancelled", "noshow", "entered-in-error", "proposed", "arrived", "", 5, None]
)
_FHIR_TIMES = ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "0001-01-01T00:00:00Z",
               "9999-12-31T23:59:59Z", "1899-12-31T23:59:59Z", "2200-01-01T00:00:00Z",
               "2026-12-03T09:30:00Z", "2026-12-03", "2026-12-03T09:30:00")  # fmt: skip


def _paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [path]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _paths(child, (*path, key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            found += _paths(child, (*path, i))
    return found


def _put(document: Any, path: tuple[Any, ...], value: Any, *, delete: bool = False) -> Any:
    if not path:
        return value
    parent = document
    for step in path[:-1]:
        parent = parent[step]
    if delete:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    return document


def _with_sentinels(document: Any) -> Any:
    """Every Patient named and reachable with the sentinels."""
    nodes = []
    for path in _paths(document):
        node = document
        for step in path:
            node = node[step]
        nodes.append(node)
    for node in nodes:
        if isinstance(node, dict) and node.get("resourceType") == "Patient":
            node["name"] = [{"use": "official", "family": SENTINEL_LAST, "given": [SENTINEL_FIRST]}]
            node["telecom"] = [{"system": "phone", "use": "mobile", "value": SENTINEL_MOBILE},
                               {"system": "email", "value": SENTINEL_EMAIL}]  # fmt: skip
    return document


@st.composite
def fhir_document(draw: st.DrawFn) -> Any:
    """A conformance sample with a few elements replaced, removed or set to edge values."""
    document = _with_sentinels(copy.deepcopy(draw(st.sampled_from(FHIR_SAMPLES))))
    for _ in range(draw(st.integers(1, 4))):
        paths = _paths(document)
        path = draw(st.sampled_from(paths))
        op = draw(st.sampled_from(["value", "delete", "time", "long", "wrap", "status"]))
        if op == "delete" and path:
            document = _put(document, path, None, delete=True)
        elif op == "time":
            times = [p for p in paths if p and p[-1] in ("start", "end", "lastUpdated")]
            if times:
                document = _put(
                    document, draw(st.sampled_from(times)), draw(st.sampled_from(_FHIR_TIMES))
                )
        elif op == "long":
            targets = [
                p for p in paths if p and p[-1] in ("value", "id", "code", "family", "display")
            ]
            if targets:
                size = draw(st.sampled_from((64, 65, 101, 500)))
                value = draw(st.sampled_from(["L" * size, "C\ud800", "\udfff" * size]))
                document = _put(document, draw(st.sampled_from(targets)), value)
        elif op == "status":  # cancellations and no-shows take a path of their own
            statuses = [p for p in paths if p and p[-1] == "status"]
            if statuses:
                document = _put(document, draw(st.sampled_from(statuses)), draw(_STATUSES))
        elif op == "wrap":
            node = document
            for step in path:
                node = node[step]
            document = _put(document, path, draw(st.sampled_from([[node], {"value": node}])))
        else:
            document = _put(document, path, draw(json_values()))
    return document


_EXPRESSION = re.compile(r"(?:Appointment|Patient|Bundle|resourceType)\b.*", re.DOTALL)


def check_fhir(document: Any) -> None:
    if not isinstance(document, dict):
        return  # the API answers 400 before parsing (check_fhir_api covers it)
    for change in parse_fhir(document, defaults=DEFAULTS):
        for issue in change.issues:
            assert issue.severity in ("error", "warning", "information"), issue
            assert issue.expression == "" or _EXPRESSION.fullmatch(issue.expression), issue
            assert issue.diagnostics.strip(), issue
        no_patient_data([i.diagnostics for i in change.issues])
        if change.appointment is not None:
            check_change(change.appointment)


# --- the JSON API --------------------------------------------------------------------------------


@st.composite
def api_item(draw: st.DrawFn) -> Any:
    """One appointment object with some values hostile (text, other JSON types, or missing)."""
    item: dict[str, Any] = {
        k: v for k, v in GOOD_ROW.items() if v and not k.startswith("caregiver_")
    }
    item["duration_minutes"] = 45
    item["caregiver"] = {"name": SENTINEL_CARER, "mobile": SENTINEL_CARER_MOBILE,
                         "relationship": "mother", "sms_consent": True, "copies": True}  # fmt: skip
    if draw(st.booleans()):
        item["caregiver"][draw(st.sampled_from(sorted(item["caregiver"])))] = draw(
            st.one_of(hostile_text(), json_values())
        )
    for name in draw(st.lists(st.sampled_from((*FIELDS, "caregiver")), max_size=5, unique=True)):
        if draw(st.integers(0, 4)) == 0:
            item.pop(name, None)
        else:
            item[name] = draw(st.one_of(hostile_text(), json_values()))
    return item


def deep(levels: int, opener: bytes = b"[") -> bytes:
    closer = b"]" if opener == b"[" else b"}"
    if opener == b"{":
        return b'{"a":' * levels + b"1" + closer * levels
    return opener * levels + closer * levels


def api_body() -> st.SearchStrategy[bytes]:
    encode = st.builds(lambda v: json.dumps(v).encode(), st.one_of(
        api_item(), st.lists(api_item(), max_size=4), json_values(),
    ))  # fmt: skip
    nesting = st.builds(deep, st.sampled_from((1, 2, 63, 64, 65, 100, 999, 1000, 5000, 100_000)),
                        st.sampled_from((b"[", b"{")))  # fmt: skip
    return st.one_of(encode, nesting, st.binary(max_size=40))


def counts(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in (imports, appointments, patients, reminders)
        }


def check_api_answer(status: int, body: Any, before: dict[str, int], after: dict[str, int]) -> None:
    assert status in (200, 400, 413, 422), (status, body)
    if status != 200:
        assert after == before, "a request refused whole wrote to the database"
    text = json.dumps(body)
    assert "Traceback" not in text
    no_patient_data([text])
