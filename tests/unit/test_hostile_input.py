"""Hostile input found by the client and by the property tests (tests/property/): each crash,
now a clear error naming the place. All data is synthetic."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from reminder_service.domain.appointment import Appointment
from reminder_service.domain.start_range import OUT_OF_RANGE
from reminder_service.entrypoints.api.json_body import MAX_DEPTH, BadJson, parse_json
from reminder_service.entrypoints.spreadsheet_safety import neutralise
from reminder_service.importers.csv_mapping import LAYOUT_FIELDS, is_zone
from reminder_service.importers.csv_rows import (
    MAX_CELL_CHARS,
    FileRejected,
    ImportDefaults,
    RowError,
    parse_csv,
)
from reminder_service.importers.fhir_appointments import parse_fhir
from reminder_service.importers.hl7_ack import build_ack
from reminder_service.importers.hl7v2_siu import parse_siu
from reminder_service.store.field_limits import (
    MAX_LENGTH,
    NUL_REASON,
    change_fields,
    field_problem,
    unstorable,
)
from reminder_service.store.tables import appointments, patients
from tests.property.hostile import HL7_SAMPLES, check_ack

DEFAULTS = ImportDefaults("riverside", "Europe/London", "GB", "en-GB")
HEADER = ",".join(LAYOUT_FIELDS)
GOOD = {
    "appointment_id": "H1", "patient_id": "HP1", "first_name": "Test", "last_name": "Patient",
    "mobile": "07700 900123", "email": "", "language": "", "timezone": "", "procedure": "BMBX",
    "start": "2026-12-03T09:30", "duration_minutes": "45", "location": "Day Unit",
    "sedation": "yes", "anticoagulant": "no", "status": "booked",
}  # fmt: skip


def row(**changes: str) -> str:
    values = {**GOOD, **changes}
    return ",".join(values[name] for name in LAYOUT_FIELDS)


def parse(text: str) -> tuple[list[Appointment], list[RowError]]:
    parsed = parse_csv(text.encode(), filename="export.csv", defaults=DEFAULTS)
    return [a for _, a in parsed.rows if isinstance(a, Appointment)], parsed.errors


# --- CSV: dates at the ends of the calendar -------------------------------------------------


@pytest.mark.parametrize(
    ("start", "zone"),
    [
        ("0001-01-01T00:00", "Pacific/Kiritimati"),  # UTC+14: the conversion went below year 1
        ("0001-01-01T00:00", "Europe/London"),  # planning days before it went below year 1
        ("0001-01-01T00:00+05:00", ""),
        ("9999-12-31T23:59", "America/New_York"),  # UTC-5: the conversion went past 9999
        ("9999-12-31T23:59-05:00", ""),
        ("9999-12-31T23:59+05:00", ""),
        ("1899-12-31T23:59", ""),
        ("2200-01-01T00:00", ""),
    ],
)
def test_a_start_at_the_ends_of_the_calendar_is_a_start_error(start: str, zone: str) -> None:
    found, errors = parse(f"{HEADER}\n{row(start=start, timezone=zone)}\n")
    assert found == []
    assert errors == [RowError(2, "start", OUT_OF_RANGE)]


def test_the_first_and_last_plausible_years_are_accepted() -> None:
    found, errors = parse(
        f"{HEADER}\n{row(start='1900-01-01T12:00')}\n"
        f"{row(appointment_id='H2', start='2199-12-31T12:00')}\n"
    )
    assert errors == []
    assert [a.start.year for a in found] == [1900, 2199]


# --- CSV: sizes -----------------------------------------------------------------------------


def test_a_5_mb_data_line_is_a_row_error_naming_line_and_column() -> None:
    huge = "A" * 5_000_000
    found, errors = parse(f"{HEADER}\n{huge}\n{row()}\n")
    assert [a.external_id for a in found] == ["H1"]  # the rows after it still import
    assert errors == [
        RowError(2, "appointment_id", "is 5,000,000 characters long; a cell holds at most "
                 f"{MAX_CELL_CHARS:,} (an unclosed quote?)")
    ]  # fmt: skip


def test_an_unclosed_quote_that_swallows_the_file_is_a_row_error() -> None:
    rest = "\n".join(row(appointment_id=f"H{i}") for i in range(2, 700))  # > 32,767 characters
    unclosed = row(location='"Day Unit')
    found, errors = parse(f"{HEADER}\n{unclosed}\n{rest}\n")
    assert found == []
    assert [(e.line, e.column) for e in errors] == [(2, "location")]
    assert "an unclosed quote" in errors[0].reason


def test_a_5_mb_header_line_refuses_the_file_naming_the_line() -> None:
    with pytest.raises(FileRejected) as caught:
        parse(f"{'A' * 5_000_000}\n{row()}\n")
    assert caught.value.message == (
        "export.csv: line 1, header field 1, is 5,000,000 characters long; a cell holds at "
        "most 32,767 (an unclosed quote?)"
    )


def test_a_header_of_100k_columns_refuses_the_file() -> None:
    header = ",".join(f"c{i}" for i in range(100_000))
    with pytest.raises(FileRejected) as caught:
        parse(f"\n{header}\n{row()}\n")
    assert caught.value.message.startswith(
        "export.csv: line 2, the header, has 100,000 fields; at most 16,384 are read"
    )


def test_a_header_at_excels_limit_is_read() -> None:
    header = HEADER + "," + ",".join(f"c{i}" for i in range(16_384 - len(LAYOUT_FIELDS)))
    found, errors = parse(f"{header}\n{row()}\n")
    assert errors == [] and len(found) == 1


# --- CSV: lengths ---------------------------------------------------------------------------


def test_field_limits_are_the_columns_lengths() -> None:
    assert MAX_LENGTH["appointment_id"] == appointments.c.external_id.type.length == 64  # type: ignore[attr-defined]
    assert MAX_LENGTH["first_name"] == patients.c.first_name.type.length  # type: ignore[attr-defined]
    assert field_problem("procedure", "B" * 32) == ""
    assert field_problem("procedure", "B" * 33) == "is 33 characters long; at most 32 are stored"
    assert field_problem("location", "Day\x00Unit") == NUL_REASON


@pytest.mark.parametrize(
    ("column", "size"),
    [
        ("appointment_id", 65), ("patient_id", 500), ("first_name", 101), ("last_name", 101),
        ("procedure", 33), ("location", 256),
    ],
)  # fmt: skip
def test_a_value_longer_than_its_column_is_a_row_error_naming_it(column: str, size: int) -> None:
    found, errors = parse(f"{HEADER}\n{row(**{column: 'x' * size})}\n")
    assert found == []
    limit = MAX_LENGTH[column]
    assert errors == [RowError(2, column, f"is {size} characters long; at most {limit} are stored")]


def test_a_500_character_appointment_id_is_refused_even_on_a_cancelled_row() -> None:
    parsed = parse_csv(
        f"{HEADER}\n{row(appointment_id='A' * 500, status='cancelled')}\n".encode(),
        filename="export.csv",
        defaults=DEFAULTS,
    )
    assert parsed.rows == []
    assert [(e.column, e.reason) for e in parsed.errors] == [
        ("appointment_id", "is 500 characters long; at most 64 are stored")
    ]


def test_sms_consent_longer_than_its_column_is_an_error_not_cut_short() -> None:
    header = HEADER + ",sms_consent"
    _, errors = parse(f"{header}\n{row()},{'c' * 65}\n")
    assert [(e.column, e.reason) for e in errors] == [
        ("sms_consent", "is 65 characters long; at most 64 are stored")
    ]


@pytest.mark.parametrize("digits", [4_301, 30_000])
def test_a_duration_of_thousands_of_digits_is_a_duration_error(digits: int) -> None:
    """Was ValueError: Python refuses to read an integer of over 4,300 digits."""
    _, errors = parse(f"{HEADER}\n{row(duration_minutes='9' * digits)}\n")
    assert [(e.column, e.reason) for e in errors] == [
        ("duration_minutes", f"'{'9' * 37}...' minutes is not between 1 minute and 24 hours"),
    ]  # fmt: skip


@pytest.mark.parametrize("charset", [b"UNI\x00CODE", b"\x00", b"8859/\x001"])
def test_an_hl7_charset_holding_a_nul_is_not_a_charset(charset: bytes) -> None:
    """Was ValueError (embedded null character) from the codec lookup of MSH-18."""
    sample = next(s for s in HL7_SAMPLES if b"SIU^S12" in s)
    msh, rest = sample.split(b"\r", 1)
    fields = msh.split(b"|")
    fields.extend([b""] * (19 - len(fields)))
    fields[17] = charset
    [change] = parse_siu(b"|".join(fields) + b"\r" + rest, defaults=DEFAULTS)
    assert change.parsed


def test_a_zone_name_too_long_for_a_file_name_is_no_zone() -> None:
    assert is_zone("x" * 300) is False  # was OSError: File name too long
    _, errors = parse(f"{HEADER}\n{row(timezone='x' * 300)}\n")
    assert [e.column for e in errors] == ["timezone"]


# --- HL7: the ACK for any bytes --------------------------------------------------------------


BROKEN_MSH = [
    b"MSH|\r~\\&|SENDER|FAC|RECV|FAC|20241107153747||SIU^S26|CTRL1|P|2.5",  # MSH-2 empty
    b"MSH\n^~\\&|SCHApp|GHHSFacility",  # the line ends before MSH-1
    b"MSH",
    b"xxMSH",
    b"MSH|^|A|B",  # too few encoding characters
    b"MSH|^^^^|A|B|C|D|E||SIU^S12|CTRL2",  # repeated encoding characters
    b"MSHa^~\\&aAaBaCaDaEaaSIU^S12aCTRL3",  # a letter as the field separator
    b"MSH|^~\\&|A\x0bB|\x1cC|D|E|F||SIU^S12|CT\x00RL",  # MLLP framing bytes inside fields
    b"MSH\xff\xfe\xfd\xfc\xfb",
    b"MSH\xa7^~\\&\xa7A\xa7B\xa7C\xa7D\xa7E\xa7\xa7SIU^S12\xa7CTRL4",  # Latin-1: not UTF-8
    "MSH€^~\\&€A€B€C€D€E€€SIU^S12€CTRL5".encode(),  # a separator outside ASCII
    b"",
]


@pytest.mark.parametrize("message", BROKEN_MSH)
@pytest.mark.parametrize("code", ["AA", "AE", "AR"])
def test_an_ack_is_built_for_any_bytes_and_is_well_formed(message: bytes, code: str) -> None:
    ack = build_ack(message, code, "the reason | with ^ separators\rand a line break")
    check_ack(ack, code)
    assert b"\r\n" not in ack


def test_an_ack_without_usable_separators_uses_the_standard_ones() -> None:
    ack = build_ack(BROKEN_MSH[0], "AR", "unreadable").decode()
    assert ack.startswith("MSH|^~\\&|")
    assert ack.split("\r")[1:] == ["MSA|AR||unreadable", "ERR||||E||||unreadable", ""]


def test_an_ack_echoes_the_senders_separators_and_components_unchanged() -> None:
    message = HL7_SAMPLES[0]
    ack = build_ack(message, "AA").decode()
    received = message.split(b"\r")[0].decode().split("|")
    header = ack.split("\r")[0].split("|")
    assert header[2:4] == received[4:6] and header[4:6] == received[2:4]  # sender <-> receiver


def test_the_control_id_of_an_unreadable_message_uses_its_component_separator() -> None:
    unreadable = b"MSH|#~#&|A|B|C|D|20260101||SIU#S12|CTRL9#X|P|2.5"  # MSH-2 repeats '#'
    [change] = parse_siu(unreadable, defaults=DEFAULTS)
    assert change.ack_code == "AR"
    assert change.control_id == "CTRL9"


@pytest.mark.parametrize(
    ("stamp", "field"),
    [
        ("00010101000000+1400", "TQ1-7.1"),
        ("99991231235959-1200", "TQ1-7.1"),
        ("00010101", "TQ1-7.1"),
    ],
)
def test_an_hl7_start_at_the_ends_of_the_calendar_names_its_field(stamp: str, field: str) -> None:
    sample = next(s for s in HL7_SAMPLES if b"\rTQ1|" in s and b"SIU^S12" in s)
    segments = sample.split(b"\r")
    for i, segment in enumerate(segments):
        if segment.startswith(b"TQ1|"):
            fields = segment.split(b"|")
            fields[7] = stamp.encode()
            segments[i] = b"|".join(fields)
    [change] = parse_siu(b"\r".join(segments), defaults=DEFAULTS)
    assert change.appointment is None
    assert (field, OUT_OF_RANGE) in [(p.where, p.reason) for p in change.errors]


def test_an_hl7_id_longer_than_its_column_names_the_segment_field() -> None:
    sample = next(s for s in HL7_SAMPLES if b"SIU^S12" in s)
    segments = sample.split(b"\r")
    for i, segment in enumerate(segments):
        if segment.startswith(b"SCH|"):
            fields = segment.split(b"|")
            fields[2] = b"F" * 65
            segments[i] = b"|".join(fields)
    [change] = parse_siu(b"\r".join(segments), defaults=DEFAULTS)
    assert change.appointment is None
    assert ("SCH-2.1", "is 65 characters long; at most 64 are stored") in [
        (p.where, p.reason) for p in change.errors
    ]


# --- FHIR -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "document",
    [
        {"resourceType": "Bundle", "type": ["batch"]},  # was TypeError: unhashable type: 'list'
        {"resourceType": "Bundle", "type": {"a": 1}},
        {"resourceType": "Bundle", "type": "batch", "entry": 5},
    ],
)
def test_a_bundle_with_values_of_the_wrong_json_type_is_refused_naming_the_element(
    document: dict[str, object],
) -> None:
    [change] = parse_fhir(document, defaults=DEFAULTS)
    assert change.appointment is None
    assert change.issues[0].expression.startswith("Bundle.")


def fhir_appointment(**changes: object) -> dict[str, object]:
    base: dict[str, object] = {
        "resourceType": "Bundle", "type": "batch", "entry": [
            {"resource": {"resourceType": "Patient", "id": "p1", "identifier": [{"value": "HP1"}],
                          "telecom": [{"system": "email", "value": "hp1@example.org"}]}},
            {"resource": {"resourceType": "Appointment", "id": "a1", "status": "booked",
                          "identifier": [{"value": "FA1"}], "start": "2026-12-03T09:30:00Z",
                          "serviceType": [{"coding": [{"code": "BMBX"}]}],
                          "participant": [{"actor": {"reference": "Patient/p1"},
                                           "status": "accepted"}]}},
        ],
    }  # fmt: skip
    appointment = base["entry"][1]["resource"]  # type: ignore[index]
    appointment.update(changes)
    return base


@pytest.mark.parametrize(
    "start", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-12:00", "1899-12-31T23:59:59Z"]
)
def test_a_fhir_start_at_the_ends_of_the_calendar_is_an_error_on_start(start: str) -> None:
    [change] = parse_fhir(fhir_appointment(start=start), defaults=DEFAULTS)
    assert change.appointment is None
    assert [(i.expression, i.diagnostics) for i in change.issues] == [
        ("Bundle.entry[1].resource.start", OUT_OF_RANGE)
    ]


def test_a_fhir_end_at_the_end_of_the_calendar_is_an_error_on_end() -> None:
    document = fhir_appointment(end="9999-12-31T23:59:59-12:00")
    [change] = parse_fhir(document, defaults=DEFAULTS)
    assert change.appointment is None
    assert [i.expression for i in change.issues] == ["Bundle.entry[1].resource.end"]


def test_fhir_values_longer_than_their_columns_name_the_element() -> None:
    document = fhir_appointment(identifier=[{"value": "I" * 65}])
    patient = document["entry"][0]["resource"]  # type: ignore[index]
    patient["id"] = "p" * 65
    patient["identifier"] = [{"value": "P" * 500}]
    appointment = document["entry"][1]["resource"]  # type: ignore[index]
    appointment["participant"][0]["actor"]["reference"] = "Patient/" + "p" * 65
    [change] = parse_fhir(document, defaults=DEFAULTS)
    assert change.appointment is None
    found = {(i.expression, i.code) for i in change.issues}
    assert ("Bundle.entry[1].resource.identifier", "too-long") in found
    assert ("Bundle.entry[0].resource.identifier", "too-long") in found
    assert ("Bundle.entry[0].resource.id", "too-long") in found


# --- the guard every importer shares ---------------------------------------------------------


def test_overlong_lists_every_field_its_column_cannot_hold() -> None:
    from tests.factories import appointment, patient  # noqa: PLC0415

    long_one = appointment(
        external_id="A" * 65, location="L" * 256, patient=patient(first_name="N" * 101)
    )
    assert [name for name, _ in unstorable(change_fields(long_one))] == [
        "appointment_id", "location", "first_name",
    ]  # fmt: skip
    assert unstorable(change_fields(appointment())) == []


# --- the JSON API's bodies --------------------------------------------------------------------


@pytest.mark.parametrize("levels", [MAX_DEPTH + 1, 1_000, 100_000])
def test_json_nested_too_deeply_is_refused_with_the_limit(levels: int) -> None:
    with pytest.raises(BadJson) as caught:
        parse_json(b"[" * levels + b"]" * levels)
    assert str(caught.value) == f"the body nests more than {MAX_DEPTH} levels deep"


@pytest.mark.parametrize(
    "body", [b'{"first_name": "A\\ud800"}', b'[{"\\udfff": 1}]', b'"\\ud800\\ud800"']
)
def test_json_with_a_lone_surrogate_is_refused(body: bytes) -> None:
    with pytest.raises(BadJson) as caught:
        parse_json(body)
    assert "lone surrogate" in str(caught.value)


def test_json_with_a_surrogate_pair_is_read() -> None:
    assert parse_json(b'{"name": "\\ud83d\\ude42"}') == {"name": "\U0001f642"}


def test_json_at_the_depth_limit_is_read() -> None:
    document = parse_json(b'{"a":' * (MAX_DEPTH - 1) + b"[]" + b"}" * (MAX_DEPTH - 1))
    assert isinstance(document, dict)


def test_a_fhir_bundle_is_far_within_the_depth_limit() -> None:
    from tests.property.hostile import FHIR_SAMPLES  # noqa: PLC0415

    for sample in FHIR_SAMPLES:
        assert parse_json(json.dumps(sample).encode()) == sample


# --- CSV written by the service ---------------------------------------------------------------


@pytest.mark.parametrize("value", ["=1+1", "+cmd", "-2", "@SUM(A1)", "\t=1", "\r=1"])
def test_a_formula_start_is_neutralised(value: str) -> None:
    assert neutralise(value) == "'" + value


@pytest.mark.parametrize("value", ["plain", "", "a=b", "1-2", 7, "'quoted"])
def test_other_values_are_written_as_they_are(value: object) -> None:
    assert neutralise(value) == value


def test_the_empty_csv_message_names_the_file() -> None:
    with pytest.raises(FileRejected) as caught:
        parse_csv(b"\xef\xbb\xbf", filename="export.csv", defaults=DEFAULTS)
    assert caught.value.message.startswith("export.csv: the file is empty")


def test_aware_starts_keep_their_instant() -> None:
    found, _ = parse(f"{HEADER}\n{row(start='2026-12-03T09:30+05:00')}\n")
    assert found[0].start == datetime(2026, 12, 3, 4, 30, tzinfo=UTC)
