"""CSV import, default layout. All data is synthetic: US 555-01xx numbers (reserved for fiction),
Ofcom drama-range UK numbers, example.org addresses."""

from __future__ import annotations

import io
import pickle
import random
from datetime import UTC, datetime

import pytest
from email_validator import EmailNotValidError, validate_email

from reminder_service.domain.appointment import (
    Appointment,
    AppointmentStatus,
    Cancellation,
    Patient,
    Tristate,
)
from reminder_service.importers import contacts, csv_rows
from reminder_service.importers.csv_mapping import LAYOUT_FIELDS
from reminder_service.importers.csv_rows import (
    FileRejected,
    ImportDefaults,
    ParsedCsv,
    RawRow,
    RowConverter,
    RowError,
    parse_csv,
    read_csv,
    stream_csv,
)

DEFAULTS = ImportDefaults(
    clinic_id="riverside", timezone="Europe/London", phone_region="GB", language="en-GB"
)
FIELDS = LAYOUT_FIELDS
GOOD = {
    "appointment_id": "A1",
    "patient_id": "P1",
    "first_name": "Test",
    "last_name": "Patient",
    "mobile": "+1 201-555-0123",
    "email": "test.patient@Example.ORG",
    "language": "",
    "timezone": "",
    "procedure": "bmbx",
    "start": "2026-12-03T09:30",
    "duration_minutes": "45",
    "location": "Day Unit",
    "sedation": "yes",
    "anticoagulant": "no",
    "status": "booked",
}
PATIENT_DATA = ("201", "555", "0123", "7700", "900", "7946", "test.patient", "example")


def line(**overrides: str) -> str:
    return ",".join({**GOOD, **overrides}[name] for name in FIELDS)


def csv_bytes(*rows: str, header: str = ",".join(FIELDS), newline: str = "\n") -> bytes:
    return newline.join([header, *rows]).encode() + newline.encode()


def parse(data: bytes, defaults: ImportDefaults = DEFAULTS) -> ParsedCsv:
    return parse_csv(data, filename="clinic-export.csv", defaults=defaults)


def starts(parsed: ParsedCsv) -> dict[str, datetime]:
    return {a.external_id: a.start for _, a in parsed.rows}


def test_a_clean_row_becomes_an_appointment() -> None:
    parsed = parse(csv_bytes(line()))

    assert parsed.errors == []
    assert parsed.total == 1
    assert parsed.rows == [
        (
            2,
            Appointment(
                external_id="A1",
                clinic_id="riverside",
                patient=Patient(
                    external_id="P1",
                    first_name="Test",
                    last_name="Patient",
                    mobile="+12015550123",
                    email="test.patient@example.org",
                    language="en-GB",
                    timezone="Europe/London",
                ),
                procedure="BMBX",
                start=datetime(2026, 12, 3, 9, 30, tzinfo=UTC),
                duration_minutes=45,
                location="Day Unit",
                status=AppointmentStatus.BOOKED,
                sedation=Tristate.YES,
                anticoagulant=Tristate.NO,
            ),
        )
    ]


def test_naive_starts_are_wall_clock_in_the_rows_zone_and_offsets_are_instants() -> None:
    parsed = parse(
        csv_bytes(
            line(appointment_id="winter", start="2026-12-03T09:30"),
            line(appointment_id="summer", start="2026-07-03 09:30:00"),
            line(appointment_id="ny", start="2026-12-03T09:30", timezone="America/New_York"),
            line(appointment_id="ny-summer", start="2026-07-03T09:30", timezone="America/New_York"),
            line(appointment_id="offset", start="2026-07-03T09:30:00+02:00"),
            line(appointment_id="zulu", start="2026-07-03T09:30:00Z", timezone="America/New_York"),
        )
    )

    assert parsed.errors == []
    assert starts(parsed) == {
        "winter": datetime(2026, 12, 3, 9, 30, tzinfo=UTC),  # GMT
        "summer": datetime(2026, 7, 3, 8, 30, tzinfo=UTC),  # BST
        "ny": datetime(2026, 12, 3, 14, 30, tzinfo=UTC),  # EST
        "ny-summer": datetime(2026, 7, 3, 13, 30, tzinfo=UTC),  # EDT
        "offset": datetime(2026, 7, 3, 7, 30, tzinfo=UTC),
        "zulu": datetime(2026, 7, 3, 9, 30, tzinfo=UTC),
    }
    assert parsed.rows[2][1].patient.timezone == "America/New_York"


def test_repeated_local_time_takes_the_first_occurrence() -> None:
    # 01:30 happens twice in London on 2026-10-25: first in BST (00:30 UTC), then in GMT.
    parsed = parse(csv_bytes(line(start="2026-10-25T01:30")))

    assert starts(parsed) == {"A1": datetime(2026, 10, 25, 0, 30, tzinfo=UTC)}


def test_values_are_normalised_and_empty_cells_take_the_defaults() -> None:
    parsed = parse(
        csv_bytes(
            line(language="EN-us", sedation="Y", anticoagulant="", duration_minutes=""),
            line(appointment_id="A2", language="es_us", sedation="FALSE", anticoagulant="1"),
        )
    )

    first, second = (a for _, a in parsed.rows)
    assert (first.patient.language, first.sedation, first.anticoagulant) == (
        "en-US",
        Tristate.YES,
        Tristate.UNKNOWN,
    )
    assert first.duration_minutes == 60
    assert (second.patient.language, second.sedation, second.anticoagulant) == (
        "es-US",
        Tristate.NO,
        Tristate.YES,
    )


def test_us_default_region_reads_local_numbers() -> None:
    defaults = ImportDefaults("main", "America/New_York", "US", "en-US", duration_minutes=30)
    parsed = parse(csv_bytes(line(mobile="(201) 555-0199", duration_minutes="")), defaults)

    (_, appointment) = parsed.rows[0]
    assert appointment.patient.mobile == "+12015550199"
    assert appointment.duration_minutes == 30
    assert appointment.start == datetime(2026, 12, 3, 14, 30, tzinfo=UTC)


def test_excel_file_with_bom_crlf_and_semicolons() -> None:
    rows = [line(first_name="Zoë").replace(",", ";"), line(appointment_id="A2").replace(",", ";")]
    data = b"\xef\xbb\xbf" + csv_bytes(*rows, header=";".join(FIELDS), newline="\r\n")

    parsed = parse(data)

    assert parsed.errors == []
    assert [(n, a.external_id, a.patient.first_name) for n, a in parsed.rows] == [
        (2, "A1", "Zoë"),
        (3, "A2", "Test"),
    ]


@pytest.mark.parametrize("delimiter", ["\t", "|"])
def test_tab_and_pipe_delimiters_are_sniffed(delimiter: str) -> None:
    data = csv_bytes(line().replace(",", delimiter), header=delimiter.join(FIELDS))

    assert len(parse(data).rows) == 1


def test_old_mac_line_endings_blank_lines_and_short_rows() -> None:
    short = ",".join(GOOD[name] for name in FIELDS[:-2])  # no anticoagulant or status cell
    data = csv_bytes("", line(), ",,,", short, newline="\r")

    parsed = parse(data)

    assert parsed.total == 2
    assert [n for n, _ in parsed.rows] == [3]
    assert parsed.errors == [RowError(5, "status", "is empty; expected booked or cancelled")]


def test_headers_ignore_case_and_spaces_and_extra_columns() -> None:
    header = " Appointment_ID ," + ",".join(FIELDS[1:]) + ",Notes, clinic ,On_Chemotherapy"
    data = csv_bytes(line() + ",free text,north,yes", header=header)

    parsed = parse(data)

    (_, appointment) = parsed.rows[0]
    assert appointment.clinic_id == "north"
    assert appointment.on_chemotherapy is Tristate.YES
    assert appointment.diabetes_on_medication is Tristate.UNKNOWN


def test_each_bad_row_is_reported_and_good_rows_still_parse() -> None:
    data = csv_bytes(
        line(appointment_id="ok1"),
        line(mobile="07700 9001"),  # too short to be a number
        line(mobile="020 7946 0123"),  # a London landline
        line(email="test.patient@@example.org"),
        line(timezone="Europe/Londn"),
        line(start="2026-03-29T01:30"),  # London clocks go forward at 01:00
        line(status="pending"),
        line(sedation="maybe"),
        line(duration_minutes="0"),
        line(duration_minutes="1h"),
        line() + ",surplus",
        line(appointment_id="ok2"),
    )

    parsed = parse(data)

    assert [a.external_id for _, a in parsed.rows] == ["ok1", "ok2"]
    assert [n for n, _ in parsed.rows] == [2, 13]
    assert parsed.total == 12
    assert parsed.errors == [
        RowError(3, "mobile", "not a valid phone number for region GB"),
        RowError(4, "mobile", "not a mobile number (a landline)"),
        RowError(5, "email", "not a valid email address"),
        RowError(6, "timezone", "'Europe/Londn' is not an IANA time zone such as Europe/London"),
        RowError(
            7, "start", "2026-03-29 01:30 does not exist in Europe/London (clocks go forward)"
        ),
        RowError(8, "status", "'pending' is not a status; expected booked or cancelled"),
        RowError(
            9,
            "sedation",
            "is not a yes/no value; expected yes, no or unknown (or y/n, true/false, 1/0)",
        ),
        RowError(10, "duration_minutes", "'0' minutes is not between 1 minute and 24 hours"),
        RowError(11, "duration_minutes", "'1h' is not a whole number of minutes"),
        RowError(
            12,
            "",
            "has 16 fields but the header has 15 (a value containing the delimiter needs quotes)",
        ),
    ]
    for error in parsed.errors:
        assert not any(part in error.reason for part in PATIENT_DATA), error


def test_a_row_reports_all_its_problems() -> None:
    data = csv_bytes(
        line(appointment_id="", procedure=" ", mobile="", email="", start="03/12/2026 09:30")
    )

    assert parse(data).errors == [  # in the file's column order
        RowError(2, "appointment_id", "is empty"),
        RowError(2, "mobile", "no mobile or email"),
        RowError(2, "procedure", "is empty"),
        RowError(
            2,
            "start",
            "'03/12/2026 09:30' is not an ISO 8601 date and time such as 2026-12-03T09:30",
        ),
    ]


def test_a_cancelled_row_needs_no_contact_details() -> None:
    parsed = parse(csv_bytes(line(mobile="", email="", status="Cancelled")))

    (_, appointment) = parsed.rows[0]
    assert appointment.status is AppointmentStatus.CANCELLED
    assert (appointment.patient.mobile, appointment.patient.email) == (None, None)


def test_a_quoted_value_with_line_breaks_keeps_later_line_numbers_right() -> None:
    data = csv_bytes(
        line(location='"Day Unit\nLevel 2\r\nEast wing"'),
        line(appointment_id="A2", status="maybe"),
    )

    parsed = parse(data)

    assert parsed.rows[0][0] == 2
    assert parsed.rows[0][1].location == "Day Unit\nLevel 2\r\nEast wing"
    assert [e.line for e in parsed.errors] == [5]


def test_extra_empty_trailing_fields_are_ignored() -> None:
    assert len(parse(csv_bytes(line() + ",,")).rows) == 1


def test_empty_bom_only_and_header_only_files_are_refused_whole() -> None:
    for data, said in (
        (b"", "the file is empty"),
        (b"\xef\xbb\xbf", "the file is empty"),
        (b"\xef\xbb\xbf\r\n\r\n", "the file is empty"),
        (b"sep=,\r\n", "no header line"),
        (csv_bytes(), "a header line but no appointment rows"),
    ):
        with pytest.raises(FileRejected) as caught:
            parse(data)
        assert caught.value.message.startswith("clinic-export.csv: "), data
        assert said in caught.value.message, data


def test_missing_required_headers_reject_the_file() -> None:
    header = ",".join(f for f in FIELDS if f not in ("status", "timezone"))

    with pytest.raises(FileRejected) as caught:
        read_csv(csv_bytes(header=header), filename="clinic-export.csv")

    assert caught.value.message.startswith("clinic-export.csv: missing required columns: ")
    assert "timezone, status" in caught.value.message


def test_a_first_line_of_data_is_not_echoed_when_rejected() -> None:
    with pytest.raises(FileRejected) as caught:
        read_csv(csv_bytes(line(), header=line(appointment_id="A0")), filename="no-header.csv")

    assert not any(part in caught.value.message for part in PATIENT_DATA)


def test_a_duplicated_header_rejects_the_file() -> None:
    with pytest.raises(FileRejected, match="header 'status' appears 2 times"):
        read_csv(csv_bytes(header=",".join(FIELDS) + ",Status"), filename="x.csv")


def test_undecodable_bytes_name_the_file_and_line_and_suggest_an_encoding() -> None:
    data = csv_bytes(line(), line(first_name="José"), newline="\r\n")
    data = data.replace("José".encode(), "José".encode("windows-1252"))

    with pytest.raises(FileRejected) as caught:
        read_csv(data, filename="export.csv")

    assert caught.value.message.startswith("export.csv: line 3 is not valid UTF-8 text")
    assert "encoding: windows-1252" in caught.value.message


def test_an_encoding_can_be_declared_by_the_caller() -> None:
    data = csv_bytes(line(first_name="José")).decode().encode("windows-1252")

    parsed = parse_csv(data, filename="x.csv", defaults=DEFAULTS, encoding="windows-1252")

    assert parsed.rows[0][1].patient.first_name == "José"


def test_utf16_from_excel_unicode_text_is_read() -> None:
    data = csv_bytes(line().replace(",", "\t"), header="\t".join(FIELDS)).decode().encode("utf-16")

    assert len(parse(data).rows) == 1


def test_row_converter_pickles_and_converts_identically() -> None:
    table = read_csv(csv_bytes(line(), line(appointment_id="A2", mobile="x")), filename="x.csv")
    converter = RowConverter(table.headers, None, DEFAULTS)

    copy = pickle.loads(pickle.dumps(converter))

    assert copy.convert_many(table.rows) == converter.convert_many(table.rows)
    assert isinstance(copy.convert(table.rows[0]), Appointment)


def test_row_converter_rejects_bad_defaults() -> None:
    bad = ImportDefaults("", "Mars/Olympus", "XX", "english", duration_minutes=0)

    with pytest.raises(ValueError, match="default timezone 'Mars/Olympus'"):
        RowConverter(FIELDS, None, bad)


def test_row_converter_converts_a_raw_row() -> None:
    converter = RowConverter(FIELDS, None, DEFAULTS)

    result = converter.convert(RawRow(7, tuple(line(status="gone").split(","))))

    assert result == [RowError(7, "status", "'gone' is not a status; expected booked or cancelled")]


def test_email_fast_path_agrees_with_email_validator() -> None:
    rng = random.Random(20261203)
    alphabet = "aZ09._+-'!#@@..\"é<> "
    domains = ["example.org", "Example.ORG", "exámple.org", "xn--exmple-cua.org", "x", "a..org", ""]
    cases = ["postmaster@example.org", "Info@Example.org", "a" * 64 + "@example.org"]
    cases.append("a" * 250 + "@example.org")
    for _ in range(3000):
        local = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 12)))
        cases.append(f"{local}@{rng.choice(domains)}")
    for text in cases:
        try:
            expected: str | None = validate_email(text, check_deliverability=False).normalized
        except EmailNotValidError:
            expected = None
        assert csv_rows.parse_email(text)[0] == expected, text


@pytest.mark.parametrize(
    "start", ["2026-13-03T09:30", "2026-12-03T24:00", "2026-12-03", "2026-W49-4"]
)
def test_impossible_or_partial_starts_are_row_errors(start: str) -> None:
    (error,) = parse(csv_bytes(line(start=start))).errors

    assert (error.column, error.reason) == (
        "start",
        f"{start!r} is not an ISO 8601 date and time such as 2026-12-03T09:30",
    )


def test_garbage_in_any_cell_gives_row_errors_not_exceptions() -> None:
    rng = random.Random(7)
    alphabet = "09:-+TZ/.@ aé\u202f%x"
    converter = RowConverter(FIELDS, None, DEFAULTS)
    for n in range(2000):
        values = dict(GOOD)
        for name in rng.sample(FIELDS, 3):
            values[name] = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 25)))
        result = converter.convert(RawRow(n, tuple(values[name] for name in FIELDS)))
        assert isinstance(result, Appointment | list)


def test_local_numbers_are_read_in_the_country_of_the_rows_zone() -> None:
    parsed = parse(
        csv_bytes(
            line(appointment_id="ny", mobile="(212) 555-0123", timezone="America/New_York"),
            line(appointment_id="syd", mobile="0491 570 006", timezone="Australia/Sydney"),
            line(appointment_id="ldn", mobile="(212) 555-0123"),
            line(appointment_id="uk-no", mobile="020 7946 0123", timezone="America/New_York"),
        )
    )

    assert {a.external_id: a.patient.mobile for _, a in parsed.rows} == {
        "ny": "+12125550123",
        "syd": "+61491570006",  # ACMA's drama range
    }
    assert parsed.errors == [
        RowError(4, "mobile", "not a valid phone number for region GB"),
        RowError(5, "mobile", "not a mobile number (a landline)"),  # not US, so read as GB
    ]


def test_a_cancellation_is_not_blocked_by_details_it_does_not_need() -> None:
    # Patient safety: if a bad phone number rejected this row, the reminders would keep going out.
    data = csv_bytes(
        line(
            appointment_id="A9",
            mobile="12345",
            email="not-an-email",
            language="xx-bad-tag",
            duration_minutes="-5",
            sedation="maybe",
            status="cancelled",
        ),
        line(appointment_id="A10", patient_id="P10", mobile="12345", email="", status="booked"),
    )
    parsed = parse_csv(data, filename="c.csv", defaults=DEFAULTS)
    # Its id is enough: the rest is dropped, never stored over what the clinic already has.
    assert parsed.rows == [(2, Cancellation("A9"))]
    # The same bad phone on a booked row is still an error.
    assert [(e.line, e.column) for e in parsed.errors] == [(3, "mobile")]


def test_a_cancelled_row_needs_only_its_appointment_id() -> None:
    data = csv_bytes(
        line(appointment_id="A1", patient_id="", procedure="", start="", mobile="", email="",
             timezone="", status="cancelled"),
        line(appointment_id="", status="cancelled"),
    )  # fmt: skip
    parsed = parse_csv(data, filename="c.csv", defaults=DEFAULTS)
    assert parsed.rows == [(2, Cancellation("A1"))]
    assert [(e.line, e.column, e.reason) for e in parsed.errors] == [
        (3, "appointment_id", "is empty")
    ]


def test_a_complete_cancelled_row_keeps_its_description() -> None:
    parsed = parse(csv_bytes(line(status="cancelled")))
    [(_, cancelled)] = parsed.rows
    assert isinstance(cancelled, Appointment) and cancelled.status.value == "cancelled"


def test_ofcom_drama_mobiles_are_accepted_but_nothing_near_them() -> None:
    # Reserved for fiction (no real person can be reached), used by synthetic test data.
    parsed = parse(
        csv_bytes(line(mobile="07700 900123"), line(appointment_id="A2", mobile="07700 901123"))
    )
    assert [(n, a.patient.mobile) for n, a in parsed.rows] == [(2, "+447700900123")]
    assert [(e.line, e.column) for e in parsed.errors] == [(3, "mobile")]


@pytest.mark.parametrize("local", ["a" * 64, "a" * 65, "a" * 70])
def test_email_fast_path_agrees_with_email_validator_at_the_local_part_limit(local: str) -> None:
    address = f"{local}@example.org"
    assert csv_rows.parse_email(address) == contacts.validated_email(address)


def test_consent_and_suppression_columns() -> None:
    header = ",".join([*FIELDS, "sms_consent", "deceased", "do_not_contact"])
    rows = [
        line(appointment_id="C1", patient_id="Q1") + ",,,",
        line(appointment_id="C2", patient_id="Q2") + ",Declined,no,",
        line(appointment_id="C3", patient_id="Q3") + ",written 2026-11-02,YES,",
        line(appointment_id="C4", patient_id="Q4") + ",verbal,,y",
        line(appointment_id="C5", patient_id="Q5") + ",verbal,maybe,",
    ]
    parsed = parse(csv_bytes(*rows, header=header))
    patients = {a.external_id: a.patient for _, a in parsed.rows}
    assert patients["C1"].sms_consent == "number given for care"  # nothing said: the default
    assert patients["C2"].sms_consent == ""  # no consent: email only
    assert (patients["C3"].sms_consent, patients["C3"].deceased) == ("written 2026-11-02", True)
    assert patients["C4"].do_not_contact and not patients["C4"].deceased
    assert [(e.line, e.column) for e in parsed.errors] == [(6, "deceased")]
    assert all(not p.deceased and not p.do_not_contact for p in (patients["C1"], patients["C2"]))


def test_rows_are_read_as_they_are_asked_for_not_the_whole_file_first() -> None:
    data = csv_bytes(*(line(appointment_id=f"A{n}") for n in range(20_000)))
    file = io.BytesIO(data)

    stream = stream_csv(file, filename="big.csv")
    first = next(stream.rows)

    assert first == RawRow(2, tuple(line(appointment_id="A0").split(",")))
    assert file.tell() < len(data) // 10  # how far the file has been read
    assert len(list(stream.rows)) == 19_999
    assert file.tell() == len(data)


def test_streamed_rows_are_those_read_whole() -> None:
    data = b"\xef\xbb\xbfsep=;\r\n\r\n" + csv_bytes(
        line(), '"A2";"P2";"Two\r\nlines"', "", line(appointment_id="A3"), newline="\r\n"
    ).replace(b",", b";")

    streamed = stream_csv(io.BytesIO(data), filename="x.csv")

    whole = read_csv(data, filename="x.csv")
    assert (streamed.headers, list(streamed.rows)) == (whole.headers, whole.rows)
    assert [row.line for row in whole.rows] == [4, 5, 8]


def test_text_that_is_not_utf8_near_the_end_is_found_while_streaming_with_its_line() -> None:
    rows = [line(appointment_id=f"A{n}") for n in range(5_000)]
    data = csv_bytes(*rows, line(first_name="José"), line(appointment_id="last"))
    data = data.replace("José".encode(), "José".encode("windows-1252"))

    stream = stream_csv(io.BytesIO(data), filename="export.csv")
    with pytest.raises(FileRejected) as caught:
        list(stream.rows)  # the header and the first rows were fine: refused on the way

    assert caught.value.message.startswith("export.csv: line 5002 is not valid UTF-8 text")
