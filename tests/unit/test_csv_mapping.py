"""CSV mapping files: a clinic's own headers, formats and spellings. All data is synthetic."""

from __future__ import annotations

import csv
import pickle
import random
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reminder_service.configuration.problems import ConfigError
from reminder_service.domain.appointment import (
    Appointment,
    AppointmentStatus,
    Cancellation,
    Tristate,
)
from reminder_service.importers import csv_mapping
from reminder_service.importers.csv_mapping import CsvMapping, load_mapping
from reminder_service.importers.csv_rows import (
    FileRejected,
    ImportDefaults,
    ParsedCsv,
    RawRow,
    RowConverter,
    RowError,
    parse_csv,
    read_csv,
)

DEFAULTS = ImportDefaults(
    clinic_id="riverside", timezone="Europe/London", phone_region="US", language="en-GB"
)

# An athenahealth / OpenEMR-flavoured export: US dates, separate time, seconds, vendor codes.
US_MAPPING = """\
delimiter: ","
columns:
  appointment_id: "Appt ID"
  patient_id: "MRN"
  first_name: "First"
  last_name: "Last"
  mobile: "Cell Phone"
  email: "E-mail"
  procedure: "Apt Type"
  start_date: "Date"
  start_time: "Time"
  duration: "sched.Duration"
  location: "Dept"
  sedation: "Sedation?"
  anticoagulant: "Blood thinner"
  status: "Status"
formats:
  start_date: "%m/%d/%Y"
  start_time: ["%H:%M", "%I:%M %p"]
duration_unit: seconds
values:
  status:
    booked: ["f", "2", "- None"]
    cancelled: ["x", "x Canceled", "% Canceled < 24h"]
  sedation: {yes: ["Y", "Sedation"], no: ["N", "LA"]}
  procedure: {BMBX: ["Bone Marrow Biopsy"]}
defaults:
  timezone: America/New_York
  language: en-US
"""
US_HEADER = (
    "Appt ID,MRN,First,Last,Cell Phone,E-mail,Apt Type,Date,Time,sched.Duration,Dept,"
    "Sedation?,Blood thinner,Status"
)


def write(tmp_path: Path, text: str, name: str = "athena.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def parse(data: bytes, mapping: CsvMapping) -> ParsedCsv:
    return parse_csv(data, filename="athena.csv", defaults=DEFAULTS, mapping=mapping)


def test_a_us_export_with_split_date_time_seconds_and_vendor_codes(tmp_path: Path) -> None:
    mapping = load_mapping(write(tmp_path, US_MAPPING))
    data = "\n".join(
        [
            US_HEADER,
            "1001,M1,Test,Patient,(201) 555-0123,,Bone Marrow Biopsy,"
            "12/03/2026,09:30,2700,Heme,Y,n,f",
            "1002,M2,Test,Patient,,test@example.org,bmbx,"
            "07/03/2026,2:15 PM,3600,Heme,LA,,x Canceled",
            "1003,M3,Test,Patient,,test@example.org,bmbx,"
            "7/3/2026,14:15,90,Heme,Sedation,,% CANCELED < 24H",
        ]
    ).encode()

    parsed = parse(data, mapping)

    assert parsed.errors == []
    first, second, third = (a for _, a in parsed.rows)
    assert first.start == datetime(2026, 12, 3, 14, 30, tzinfo=UTC)
    assert (first.procedure, first.duration_minutes, first.status) == (
        "BMBX",
        45,
        AppointmentStatus.BOOKED,
    )
    assert (first.sedation, first.anticoagulant) == (Tristate.YES, Tristate.NO)
    assert (first.patient.mobile, first.patient.language, first.patient.timezone) == (
        "+12015550123",
        "en-US",
        "America/New_York",
    )
    assert second.start == datetime(2026, 7, 3, 18, 15, tzinfo=UTC)
    assert (second.status, second.sedation, second.duration_minutes) == (
        AppointmentStatus.CANCELLED,
        Tristate.NO,
        60,
    )
    assert (third.start, third.duration_minutes, third.status) == (
        datetime(2026, 7, 3, 18, 15, tzinfo=UTC),
        2,  # 90 s rounds up to 2 minutes
        AppointmentStatus.CANCELLED,
    )


def test_unlisted_spellings_fall_back_to_the_default_rules(tmp_path: Path) -> None:
    mapping = load_mapping(write(tmp_path, US_MAPPING))
    data = "\n".join(
        [
            US_HEADER,
            "1,M1,Test,Patient,(201) 555-0123,,bmbx,12/03/2026,09:30,3600,Heme,yes,unknown,Booked",
            "2,M2,Test,Patient,(201) 555-0123,,bmbx,2026-12-03,9.30,3600,Heme,maybe,,o",
        ]
    ).encode()

    parsed = parse(data, mapping)

    (_, appointment) = parsed.rows[0]
    assert (appointment.sedation, appointment.status) == (Tristate.YES, AppointmentStatus.BOOKED)
    assert parsed.errors == [
        RowError(3, "Date", "'2026-12-03' does not match '%m/%d/%Y'"),
        RowError(3, "Time", "'9.30' does not match '%H:%M' or '%I:%M %p'"),
        RowError(
            3,
            "Sedation?",
            "is not a yes/no value; expected yes, no or unknown (or y/n, true/false, 1/0), "
            "or a spelling from the mapping ('Y', 'Sedation', 'N', 'LA')",
        ),
        RowError(
            3,
            "Status",
            "'o' is not a status; expected booked or cancelled, or a spelling from the mapping "
            "('f', '2', '- None', 'x', 'x Canceled', '% Canceled < 24h')",
        ),
    ]


def test_greenway_integer_times_and_a_windows_1252_export(tmp_path: Path) -> None:
    mapping = load_mapping(
        write(
            tmp_path,
            """\
encoding: windows-1252
columns: {appointment_id: ApptSID, patient_id: PatientID, start_date: ApptDate,
          start_time: ApptTime, status: ApptStatus}
formats: {start_time: [HHMM-integer]}
values: {status: {booked: [S], cancelled: [C]}}
defaults: {location: "", sedation: unknown, anticoagulant: unknown, duration_minutes: 30,
           timezone: America/Chicago, language: es-US}
""",
        )
    )
    header = (
        "ApptSID;PatientID;first_name;last_name;mobile;email;procedure;ApptDate;ApptTime;ApptStatus"
    )
    rows = [
        "7;P7;José;Peña;;test@example.org;BMBX;2026-12-03;930;S",
        "8;P8;;;;;BMBX;2026-12-03;0;C",
    ]
    data = "\r\n".join([header, *rows]).encode("windows-1252")

    parsed = parse(data, mapping)

    assert parsed.errors == []
    (_, first), (_, second) = parsed.rows
    assert (first.patient.first_name, first.patient.last_name) == ("José", "Peña")
    assert first.start == datetime(2026, 12, 3, 15, 30, tzinfo=UTC)
    assert (first.duration_minutes, first.location, first.patient.language) == (30, "", "es-US")
    assert second.start == datetime(2026, 12, 3, 6, 0, tzinfo=UTC)

    with pytest.raises(FileRejected, match=r"^athena\.csv: line 2 is not valid UTF-8 text"):
        parse_csv(data, filename="athena.csv", defaults=DEFAULTS)


def test_a_single_start_column_with_a_format(tmp_path: Path) -> None:
    mapping = load_mapping(
        write(
            tmp_path,
            'columns: {start: "sched.Start Date"}\nformats: {start: "%Y%m%d %H%M%S"}\n',
        )
    )
    header = (
        "appointment_id,patient_id,first_name,last_name,mobile,email,language,timezone,"
        "procedure,sched.Start Date,duration_minutes,location,sedation,anticoagulant,status"
    )
    row = "A1,P1,Test,Patient,,test@example.org,en-GB,,BMBX,20260703 093000,45,Unit,no,no,booked"

    parsed = parse(f"{header}\n{row}\n".encode(), mapping)

    assert parsed.rows[0][1].start == datetime(2026, 7, 3, 8, 30, tzinfo=UTC)


def test_missing_mapped_headers_name_our_field_and_their_header(tmp_path: Path) -> None:
    path = write(tmp_path, US_MAPPING)
    header = US_HEADER.replace("MRN,", "").replace(",Status", "")

    with pytest.raises(FileRejected) as caught:
        read_csv(header.encode(), filename="athena.csv", mapping=load_mapping(path))

    message = caught.value.message
    assert message.startswith("athena.csv: missing required columns: ")
    assert "patient_id (header 'MRN'), status (header 'Status')" in message
    assert str(path) in message


def test_the_mapping_travels_with_a_pickled_converter(tmp_path: Path) -> None:
    mapping = load_mapping(write(tmp_path, US_MAPPING))
    data = f"{US_HEADER}\n1,M1,T,P,(201) 555-0123,,bmbx,12/03/2026,09:30,60,Heme,Y,N,f\n".encode()
    table = read_csv(data, filename="athena.csv", mapping=mapping)
    converter = RowConverter(table.headers, mapping, DEFAULTS)

    copy = pickle.loads(pickle.dumps(converter))

    assert copy.convert_many(table.rows) == converter.convert_many(table.rows)


@pytest.mark.parametrize(
    ("yaml_text", "field", "message"),
    [
        ("colour: blue\n", "colour", "unknown field"),
        ("columns: {patient_number: MRN}\n", "patient_number", "unknown field"),
        ("columns: {patient_id: MRN, appointment_id: mrn}\n", "appointment_id", "already used"),
        ("formats: {start_date: '%H:%M'}\n", "start_date", "must contain the day, month and year"),
        ("formats: {start_time: ['%H:%M', '%Q']}\n", "start_time", "'%Q' is not a strptime format"),
        ("formats: {start_time: '%I:%M'}\n", "start_time", "must contain the hour and minutes"),
        ("formats: {start: HHMM-integer}\n", "start", "is only for start_time"),
        ("values: {status: {booked_: [f]}}\n", "status", "'booked_' is not a value"),
        ("values: {status: {yes: [f]}}\n", "status", "YAML reads bare yes/no"),
        ("values: {sedation: {yes: [yes]}}\n", "sedation", "quote it"),
        ("values: {sedation: {yes: [Y], no: [y]}}\n", "sedation", "listed under both yes and no"),
        ("values: {mobile: {x: [y]}}\n", "mobile", "has no value spellings"),
        ("encoding: klingon-8\n", "encoding", "not a known encoding"),
        ("delimiter: ';;'\n", "delimiter", "must be one character"),
        ("duration_unit: fortnights\n", "duration_unit", "is not one of minutes, seconds, hours"),
        ("defaults: {mobile: '+12015550123'}\n", "mobile", 'expected ""'),
        ("defaults: {timezone: Mars/Base}\n", "timezone", "expected an IANA time zone"),
        ("defaults: {patient_id: P1}\n", "patient_id", "cannot have a constant value"),
        ("columns: {start: When, start_date: Date}\n", "start_date", "not both"),
        ("columns: {start: When}\nformats: {start_time: '%H:%M'}\n", "start", "not both"),
    ],
)
def test_mapping_problems_name_the_file_and_field(
    tmp_path: Path, yaml_text: str, field: str, message: str
) -> None:
    path = write(tmp_path, yaml_text)

    with pytest.raises(ConfigError) as caught:
        load_mapping(path)

    text = str(caught.value)
    assert text.startswith(str(path))
    assert f"field '{field}'" in text
    assert message in text


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, "colour: blue\ndelimiter: ';;'\ncolumns: {mrn: MRN}\n")

    with pytest.raises(ConfigError) as caught:
        load_mapping(path)

    assert sorted(p.field for p in caught.value.problems) == ["colour", "delimiter", "mrn"]


def test_unreadable_mapping_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="file not found"):
        load_mapping(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_mapping(write(tmp_path, "- a list\n"))


def test_yaml_booleans_under_flags_mean_yes_and_no(tmp_path: Path) -> None:
    mapping = load_mapping(
        write(
            tmp_path,
            "values: {sedation: {yes: ['Y', 'yes'], off: ['N']}}\ndefaults: {sedation: no}\n",
        )
    )

    assert mapping.values == {"sedation": {"Y": "yes", "yes": "yes", "N": "no"}}
    assert mapping.defaults == {"sedation": "no"}
    assert "sedation" not in mapping.required_fields()


def test_garbage_in_mapped_cells_gives_row_errors_not_exceptions(tmp_path: Path) -> None:
    text = US_MAPPING.replace('["%H:%M", "%I:%M %p"]', '["%H:%M", HHMM-integer]')
    mapping = load_mapping(write(tmp_path, text.replace("seconds", "hours")))
    headers = US_HEADER.split(",")
    good = next(csv.reader(["1,M1,T,P,(201) 555-0123,,bmbx,12/03/2026,0930,1.5,Heme,Y,N,f"]))
    converter = RowConverter(headers, mapping, DEFAULTS)
    assert isinstance(converter.convert(RawRow(2, tuple(good))), Appointment)
    rng = random.Random(11)
    for n in range(2000):
        values = list(good)
        for i in rng.sample(range(len(values)), 3):
            values[i] = "".join(
                rng.choice("0123456789:/. PAMx-") for _ in range(rng.randint(0, 12))
            )
        assert isinstance(
            converter.convert(RawRow(n, tuple(values))), Appointment | Cancellation | list
        )


def test_the_documented_example_loads(tmp_path: Path) -> None:
    doc = csv_mapping.__doc__ or ""
    example = doc.split("::\n\n", 1)[1].split("\n\nRules:", 1)[0]

    mapping = load_mapping(write(tmp_path, textwrap.dedent(example)))

    assert mapping.encoding == "windows-1252"
    assert mapping.split_start
    assert mapping.duration_field == "duration"
    assert mapping.values["status"]["x Canceled"] == "cancelled"
    assert mapping.values["sedation"] == {"Y": "yes", "Sedation": "yes", "N": "no", "LA": "no"}
