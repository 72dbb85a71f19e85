"""HL7 v2 SIU importer: every conformance sample, framing, escapes, timestamps, errors, mapping."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from reminder_service.configuration.problems import ConfigError
from reminder_service.domain.appointment import AppointmentStatus, Tristate
from reminder_service.importers.csv_rows import ImportDefaults
from reminder_service.importers.hl7v2_siu import (
    ChangeKind,
    FieldRef,
    SiuChange,
    SiuMapping,
    load_siu_mapping,
    parse_siu,
    parse_timestamp,
    split_messages,
)

SAMPLES = Path(__file__).parents[1] / "conformance" / "hl7"  # from ../shared/conformance
REPO = Path(__file__).resolve().parents[2]
US = ImportDefaults("clinic-us", "America/New_York", "US", "en-US")
GB = ImportDefaults("clinic-gb", "Europe/London", "GB", "en-GB")
EMAIL_XTN = b"7777^^CP~^NET^Internet^adam@example.org"  # replaces PID-14's "7777^^CP"


@dataclass(frozen=True)
class Expected:
    event: str
    kind: ChangeKind
    appointment_id: str
    patient_id: str
    status: AppointmentStatus
    start: datetime
    duration: int
    procedure: str
    location: str
    mobile: str | None
    email: str | None


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, sec: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, sec, tzinfo=UTC)


MS_BIOPSY = Expected(
    event="S12",
    kind=ChangeKind.BOOKED,
    status=AppointmentStatus.BOOKED,
    appointment_id="36996",
    patient_id="PATID1234",
    start=utc(2021, 9, 24, 7, 15),  # TQ1-7 09:30+02:15; SCH-11 holds stale 2020 dates
    duration=50,  # TQ1-8 end - start; SCH-9/10 says 60 seconds
    procedure="76164006",
    location="055, Room01, GH Clinic",
    mobile=None,  # 78788788, 12121212, 7777: not numbers in any region
    email="adam@example.org",  # added by the test (EMAIL_XTN)
)
RENAL_CANCEL = Expected(
    event="S15",
    kind=ChangeKind.CANCELLED,
    status=AppointmentStatus.CANCELLED,
    appointment_id="149549027",
    patient_id="10769859",
    start=utc(2024, 11, 13, 10, 0),
    duration=60,
    procedure="NEPHROLOGY HAEMODIALYSIS F/UP",
    location="RNJ Renal SBH, RNJ BARTS, RNJ KGV",
    mobile="+447898989898",
    email="testemail@test.co",
)
B, C, N = AppointmentStatus.BOOKED, AppointmentStatus.CANCELLED, ChangeKind.NO_SHOW

# file -> (defaults, inject an email?, expected). The Microsoft booked samples have no usable
# contact, so they are checked twice: as they are (an AE error) and with an email added.
CASES: dict[str, tuple[ImportDefaults, bool, Expected]] = {
    "embe7-siu-s17-no-rgs-tq1.hl7": (
        US,
        False,
        Expected(
            "S17",
            ChangeKind.CANCELLED,
            "APPTID123",
            "53356",
            C,
            utc(2021, 4, 6, 17, 30),  # naive 13:30 in New York (EDT)
            15,
            "ACTIVITY",  # AIS-3 holds "Activity"
            "",  # AIL-3 is ^^^ and there is no PV1
            "+17705555555",
            None,
        ),
    ),
    "msfc-siu-s12-biopsy-tq1-pv1-dg1.hl7": (
        US,
        True,
        MS_BIOPSY,
    ),
    "msfc-siu-s12-checkup-three-rgs.hl7": (
        US,
        True,
        Expected(
            "S12",
            ChangeKind.BOOKED,
            "36996",
            "PATID1234",
            B,
            utc(2021, 8, 18, 9, 15),
            60,
            "58410-2",  # the first RGS group's AIS
            "LabUnit101, Lab Room 01, GHH Hospital",
            None,
            "adam@example.org",
        ),
    ),
    "msfc-siu-s13-reschedule.hl7": (
        US,
        True,
        replace(MS_BIOPSY, event="S13"),
    ),
    "msfc-siu-s14-room-change.hl7": (
        US,
        True,
        replace(MS_BIOPSY, event="S14", location="055, Room02, GH Clinic"),
    ),
    "msfc-siu-s15-cancel.hl7": (
        US,
        False,
        replace(MS_BIOPSY, event="S15", kind=ChangeKind.CANCELLED, status=C, email=None),
    ),
    "msfc-siu-s17-delete.hl7": (
        US,
        False,
        replace(MS_BIOPSY, event="S17", kind=ChangeKind.CANCELLED, status=C, email=None),
    ),
    "msfc-siu-s26-noshow.hl7": (
        US,
        False,
        replace(MS_BIOPSY, event="S26", kind=N, email=None),
    ),
    "pacsbridge-siu-s15-cr-misplaced-sch-fields.hl7": (
        US,
        False,
        Expected(
            "S15",
            ChangeKind.CANCELLED,
            "APPT001",
            "12345",
            C,
            utc(2024, 1, 20, 15, 0),  # SCH-11 empty (the time sits in SCH-12): AIS-4, naive EST
            60,  # AIS-7/8 empty ("30|min" sits in AIS-5/6): the default
            "CT_SCAN",
            "",
            None,
            None,
        ),
    ),
    "renalware-barts-siu-s12-new-booking.hl7": (
        GB,
        False,
        Expected(
            "S12",
            ChangeKind.BOOKED,
            "149549015",  # SCH-2 empty: SCH-1
            "10769857",
            B,
            utc(2024, 11, 6, 12, 0),
            30,
            "NEPHROLOGY NEW",
            "RNJ Renal OPD, RNJ ROYALLONDON, RNJ MainBld RLH",
            None,  # 0766655652: one digit short, dropped with a warning
            "testrenal@test.co",
        ),
    ),
    "renalware-barts-siu-s13-reschedule.hl7": (
        GB,
        False,
        Expected(
            "S13",
            ChangeKind.BOOKED,
            "149549023",
            "10769861",
            B,
            utc(2024, 11, 6, 11, 30),
            30,
            "NEPHROLOGY NEW",
            "RNJ Renal OPD, RNJ ROYALLONDON, RNJ MainBld RLH",
            None,
            "testrenal@co.in",
        ),
    ),
    "renalware-barts-siu-s15-cancel.hl7": (
        GB,
        False,
        RENAL_CANCEL,
    ),
    "renalware-barts-siu-s26-dna.hl7": (
        GB,
        False,
        replace(RENAL_CANCEL, event="S26", kind=N, status=B),
    ),
}


def only(changes: list[SiuChange]) -> SiuChange:
    assert len(changes) == 1
    return changes[0]


def test_every_sample_here_exists() -> None:
    """The later public samples have their cases in tests/integration/test_public_samples.py,
    which also checks that every sample file has a case in one of the two."""
    assert set(CASES) <= {p.name for p in SAMPLES.glob("*.hl7")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_sample_maps(name: str) -> None:
    defaults, add_email, want = CASES[name]
    data = (SAMPLES / name).read_bytes()
    if add_email:
        assert data.count(b"7777^^CP") == 1
        data = data.replace(b"7777^^CP", EMAIL_XTN)
    change = only(parse_siu(data, defaults=defaults))
    assert change.errors == []
    assert change.ack_code == "AA"
    assert (change.event, change.kind) == (want.event, want.kind)
    a = change.appointment
    assert a is not None
    assert a.external_id == want.appointment_id
    assert a.patient.external_id == want.patient_id
    assert a.status is want.status
    assert a.start == want.start
    assert a.duration_minutes == want.duration
    assert a.procedure == want.procedure
    assert a.location == want.location
    assert (a.patient.mobile, a.patient.email) == (want.mobile, want.email)
    assert a.clinic_id == defaults.clinic_id
    assert a.patient.timezone == defaults.timezone
    assert (a.sedation, a.anticoagulant) == (Tristate.UNKNOWN, Tristate.UNKNOWN)


@pytest.mark.parametrize(
    "name",
    [
        "msfc-siu-s12-biopsy-tq1-pv1-dg1.hl7",
        "msfc-siu-s12-checkup-three-rgs.hl7",
        "msfc-siu-s13-reschedule.hl7",
        "msfc-siu-s14-room-change.hl7",
    ],
)
def test_booking_without_a_usable_contact_is_an_error(name: str) -> None:
    change = only(parse_siu((SAMPLES / name).read_bytes(), defaults=US))
    assert change.appointment is None
    assert change.ack_code == "AE"
    assert [str(e) for e in change.errors] == ["PID-13/PID-14: no usable mobile number or email"]
    assert {w.where for w in change.warnings} == {"PID-13", "PID-14"}
    assert change.control_id.startswith("MSG000")


def test_dropped_numbers_are_warnings_and_never_quoted() -> None:
    data = (SAMPLES / "renalware-barts-siu-s12-new-booking.hl7").read_bytes()
    change = only(parse_siu(data, defaults=GB))
    assert [w.where for w in change.warnings] == ["PID-13"]
    assert "0766655652" not in str(change.warnings[0])


def test_sample_details() -> None:
    ms = only(parse_siu((SAMPLES / "msfc-siu-s15-cancel.hl7").read_bytes(), defaults=US))
    assert ms.control_id == "MSG00015"
    assert ms.message_time == utc(2021, 9, 23, 9, 11)  # 11:26+02:15
    assert ms.appointment is not None
    patient = ms.appointment.patient
    assert (patient.first_name, patient.last_name) == ("ADAM", "EVERYMAN")  # FN subcomponent
    assert patient.language == "ar"  # PID-15 "ara", ISO 639-2
    embe7 = only(parse_siu((SAMPLES / "embe7-siu-s17-no-rgs-tq1.hl7").read_bytes(), defaults=US))
    assert embe7.appointment is not None
    assert embe7.appointment.patient.language == "en-US"  # "English" -> en -> the default's tag
    assert embe7.message_time == utc(2021, 3, 31, 18, 56, 28)


def test_line_endings_give_identical_results() -> None:
    lf = (SAMPLES / "renalware-barts-siu-s15-cancel.hl7").read_bytes()
    variants = [lf, lf.replace(b"\n", b"\r"), lf.replace(b"\n", b"\r\n"), lf.rstrip(b"\n")]
    results = [only(parse_siu(v, defaults=GB)) for v in variants]
    assert all(r == results[0] for r in results)
    assert results[0].appointment is not None


def test_batch_with_mllp_framing_and_blank_lines() -> None:
    names = ["renalware-barts-siu-s12-new-booking.hl7", "renalware-barts-siu-s15-cancel.hl7"]
    framed = [b"\x0b" + (SAMPLES / n).read_bytes().replace(b"\n", b"\r") + b"\x1c\r" for n in names]
    data = (
        b"FHS|^~\\&|BLT_TIE\r\nBHS|^~\\&|BLT_TIE\r\n\r\n"
        + b"\r\n\r\n".join(framed)
        + b"\nBTS|2\nFTS|1\n"
    )
    changes = parse_siu(data, defaults=GB)
    assert [c.index for c in changes] == [1, 2]
    assert [c.event for c in changes] == ["S12", "S15"]
    assert [c.ack_code for c in changes] == ["AA", "AA"]
    assert len(split_messages(data)) == 2


MINIMAL = (
    "MSH|^~\\&|APP|FAC|RS|RS|20260301083000||SIU^S12|CTRL1|P|2.5\r"
    "SCH||A1|||||BX^Biopsy||30|min|^^30^{start}\r"
    "PID|1||P1^^^H^MR~P9^^^H^NHS||Doe^Jane||||||||{phones}|{business}|{language}\r"
    "NTE|1||{note}\r"
    "AIL|1||{room}\r"
)


def minimal(**values: str) -> bytes:
    fills = {
        "start": "202603100930",
        "phones": "^PRN^CP^^^^^^^^^+447700900123",
        "business": "",
        "language": "",
        "note": "",
        "room": "Endo^Room 2",
    }
    fills.update(values)
    return MINIMAL.format(**fills).encode()


def test_minimal_message() -> None:
    change = only(parse_siu(minimal(), defaults=GB))
    a = change.appointment
    assert a is not None
    assert (a.external_id, a.patient.external_id, a.procedure) == ("A1", "P1", "BX")
    assert a.patient.mobile == "+447700900123"  # XTN-12 unformatted number; Ofcom drama range
    assert a.start == utc(2026, 3, 10, 9, 30)
    assert (a.duration_minutes, a.location) == (30, "Endo, Room 2")


def test_escape_sequences() -> None:
    room = "Endo\\T\\Day\\S\\Unit \\F\\ 3\\R\\4\\E\\x\\H\\bold\\N\\ \\X41\\"
    change = only(parse_siu(minimal(room=room), defaults=GB))
    assert change.appointment is not None
    assert change.appointment.location == "Endo&Day^Unit | 3~4\\xbold A"


def test_segments_outside_the_version_s_structure_are_read() -> None:
    """What hl7apy's tolerant mode refuses: TQ1 in v2.4, Z segments, repeats, any order."""
    data = (
        b"MSH|^~\\&|APP|FAC|RS|RS|20260301083000||SIU^S12|CTRL2|P|2.4\r"
        b"ZXT|custom|data^with^components\r"
        b"PID|1||P1^^^H^MR||Doe^Jane||||||||^PRN^CP^^^^^^^^^+447700900123\r"
        b"SCH||A2|||||BX^Biopsy\r"
        b"NTE|1||sedation: yes\r"
        b"TQ1|1|||||45^min|202603100930\r"
        b"AIS|1||BMB^Bone marrow biopsy\r"
        b"AIS|2||OTHER^Second service\r"
        b"NTE|2||anticoagulant: yes\r"
        b"ZAP|1|N\r"
    )
    mapping = SiuMapping(flags={"on_chemotherapy": FieldRef.parse("ZAP-2")})
    change = only(parse_siu(data, defaults=GB, mapping=mapping))
    a = change.appointment
    assert (change.ack_code, change.errors) == ("AA", [])
    assert a is not None
    assert (a.start, a.duration_minutes) == (utc(2026, 3, 10, 9, 30), 45)  # from TQ1
    assert a.procedure == "BMB"  # the first AIS
    assert (a.sedation, a.anticoagulant) == (Tristate.YES, Tristate.YES)  # both NTEs
    assert a.on_chemotherapy is Tristate.NO  # from the Z segment


def test_sender_s_own_encoding_characters() -> None:
    """MSH-2 may declare other separators; every field is split with the declared ones."""
    swapped = bytes.maketrans(b"^~\\&", b"$%*@")
    data = minimal(room="Endo\\S\\Day^Room 2").translate(swapped)
    assert data.startswith(b"MSH|$%*@|")
    change = only(parse_siu(data, defaults=GB))
    assert change.appointment is not None
    assert change.appointment.patient.external_id == "P1"
    assert change.appointment.location == "Endo$Day, Room 2"  # *S* is the component character
    truncation = minimal().replace(b"MSH|^~\\&|", b"MSH|^~\\&#|")  # v2.7's fifth character
    assert only(parse_siu(truncation, defaults=GB)).ack_code == "AA"


def test_broken_escape_sequences_never_log_the_value(caplog: pytest.LogCaptureFixture) -> None:
    room = "Ward \\Zodd\\ Seven \\X4\\ \\Cxx\\ unterminated \\"
    with caplog.at_level(logging.DEBUG):
        change = only(parse_siu(minimal(room=room), defaults=GB))
    assert change.appointment is not None
    assert change.appointment.location == "Ward  Seven   unterminated \\"
    assert not [r for r in caplog.records if "Ward" in r.getMessage() or "Doe" in r.getMessage()]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026", utc(2026, 1, 1)),  # winter: London is UTC
        ("202607", utc(2026, 6, 30, 23, 0)),  # summer: BST
        ("20260710", utc(2026, 7, 9, 23, 0)),
        ("2026071009", utc(2026, 7, 10, 8, 0)),
        ("202607100930", utc(2026, 7, 10, 8, 30)),
        ("20260710093015", utc(2026, 7, 10, 8, 30, 15)),
        ("20260710093015.1234", datetime(2026, 7, 10, 8, 30, 15, 123400, tzinfo=UTC)),
        ("202607100930+0215", utc(2026, 7, 10, 7, 15)),
        ("20260710093015.5-0500", datetime(2026, 7, 10, 14, 30, 15, 500000, tzinfo=UTC)),
        ("202607100930+0000", utc(2026, 7, 10, 9, 30)),
    ],
)
def test_timestamps(text: str, expected: datetime) -> None:
    assert parse_timestamp(text, "Europe/London") == expected


@pytest.mark.parametrize("text", ["", "2026-07-10", "20261310", "2026071025", "202607100930+2400"])
def test_bad_timestamps(text: str) -> None:
    assert isinstance(parse_timestamp(text, "Europe/London"), str)


def test_skipped_local_time_is_an_error() -> None:
    change = only(parse_siu(minimal(start="202603290130"), defaults=GB))  # clocks go forward
    assert change.appointment is None
    assert [e.where for e in change.errors] == ["SCH-11.4"]


def test_start_with_offset_and_bad_start() -> None:
    ok = only(parse_siu(minimal(start="20260310093000.25+0100"), defaults=GB))
    assert ok.appointment is not None
    assert ok.appointment.start == datetime(2026, 3, 10, 8, 30, 0, 250000, tzinfo=UTC)
    bad = only(parse_siu(minimal(start="tomorrow"), defaults=GB))
    assert bad.appointment is None
    assert [str(e) for e in bad.errors] == ["SCH-11.4: not a timestamp (YYYYMMDDHHMM[SS][+HHMM])"]


@pytest.mark.parametrize(
    "data",
    [
        b"this is not HL7 at all",
        b"\x00\xff\xfe garbage",
        b"MSH",
        b"MSH|^^^^|x",
        b"",
    ],
)
def test_garbage_is_a_parse_error(data: bytes) -> None:
    changes = parse_siu(data, defaults=GB)
    assert all(c.ack_code == "AR" and c.appointment is None for c in changes)
    assert len(changes) == (0 if not data else 1)


def test_parse_error_keeps_the_control_id() -> None:
    change = only(
        parse_siu(b"MSH|^^^^|APP|FAC|RS|RS|2026||SIU^S12|CTRL9|P|2.5\rSCH|1", defaults=GB)
    )
    assert (change.ack_code, change.control_id) == ("AR", "CTRL9")


def test_garbage_between_messages_does_not_stop_the_batch() -> None:
    good = minimal()
    changes = parse_siu(b"junk line\r" + good + b"\r" + good, defaults=GB)
    assert [c.ack_code for c in changes] == ["AR", "AA", "AA"]


def test_other_message_types_and_events_are_errors() -> None:
    adt = b"MSH|^~\\&|A|B|C|D|20260101||ADT^A60|C1|P|2.5\rPID|1||P1"
    change = only(parse_siu(adt, defaults=GB))
    assert (change.ack_code, [e.where for e in change.errors]) == ("AE", ["MSH-9"])
    s18 = only(parse_siu(minimal().replace(b"SIU^S12", b"SIU^S18"), defaults=GB))
    assert [e.where for e in s18.errors] == ["MSH-9"]


def test_missing_values_name_the_field_only() -> None:
    data = (
        minimal(phones="", start="").replace(b"|A1|", b"||").replace(b"P1^^^H^MR~P9^^^H^NHS", b"")
    )
    change = only(parse_siu(data, defaults=GB))
    assert change.appointment is None
    assert [e.where for e in change.errors] == [
        "SCH-2.1/SCH-1.1",
        "PID-3",
        "TQ1-7.1/SCH-11.4/AIS-4.1/AIG-8.1/AIL-6.1/AIP-6.1",
        "PID-13/PID-14",
    ]
    assert "Doe" not in " ".join(str(e) for e in change.errors)


def test_cancellation_needs_no_contact() -> None:
    data = minimal(phones="0000").replace(b"SIU^S12", b"SIU^S15")
    change = only(parse_siu(data, defaults=GB))
    assert change.appointment is not None
    assert change.appointment.status is AppointmentStatus.CANCELLED
    assert change.appointment.patient.mobile is None


def test_filler_status_cancels_a_booking_event() -> None:
    data = minimal().replace(
        b"|30|min|^^30^202603100930", b"|30|min|^^30^202603100930" + b"|" * 14 + b"Deleted"
    )
    change = only(parse_siu(data, defaults=GB))
    assert change.kind is ChangeKind.CANCELLED
    assert change.appointment is not None
    assert change.appointment.status is AppointmentStatus.CANCELLED


def test_email_and_mobile_choice() -> None:
    phones = "01632960000^PRN^PH~07700900456^ORN^CP~^NET^Internet^Jane@Example.org"
    change = only(parse_siu(minimal(phones=phones), defaults=GB))
    assert change.appointment is not None
    assert change.appointment.patient.mobile == "+447700900456"  # the CP one, not the landline
    assert change.appointment.patient.email == "Jane@example.org"


def test_language_codes() -> None:
    for code, tag in [("SPA", "es"), ("es", "es"), ("eng", "en-GB"), ("fr-CA", "fr-CA")]:
        change = only(parse_siu(minimal(language=code), defaults=GB))
        assert change.appointment is not None
        assert change.appointment.patient.language == tag
    unknown = only(parse_siu(minimal(language="Klingon"), defaults=GB))
    assert unknown.appointment is not None
    assert unknown.appointment.patient.language == "en-GB"
    assert [w.where for w in unknown.warnings] == ["PID-15"]


def test_flags_from_nte_and_mapped_field() -> None:
    note = "sedation: yes\\.br\\Anticoagulant: no"
    change = only(parse_siu(minimal(note=note), defaults=GB))
    assert change.appointment is not None
    assert change.appointment.sedation is Tristate.YES
    assert change.appointment.anticoagulant is Tristate.NO
    mapping = SiuMapping(flags={"on_chemotherapy": FieldRef.parse("ZAP-2")}, nte_flags=False)
    data = minimal(note=note) + b"\rZAP|1|Y"
    mapped = only(parse_siu(data, defaults=GB, mapping=mapping))
    assert mapped.appointment is not None
    assert mapped.appointment.on_chemotherapy is Tristate.YES
    assert mapped.appointment.sedation is Tristate.UNKNOWN


def test_patient_id_type() -> None:
    nhs = SiuMapping(patient_id_type="NHS")
    change = only(parse_siu(minimal(), defaults=GB, mapping=nhs))
    assert change.appointment is not None
    assert change.appointment.patient.external_id == "P9"
    missing = only(parse_siu(minimal(), defaults=GB, mapping=SiuMapping(patient_id_type="SS")))
    assert [str(e) for e in missing.errors] == ["PID-3: no identifier of type SS"]


def test_charsets() -> None:
    data = minimal(room="Salle é").replace(b"|P|2.5", b"|P|2.5" + b"|" * 6 + b"8859/1")
    latin = data.decode().encode("latin-1")
    for raw in (latin, minimal(room="Salle é"), minimal(room="Salle é").decode().encode("cp1252")):
        change = only(parse_siu(raw, defaults=GB))
        assert change.appointment is not None
        assert change.appointment.location == "Salle é"


def test_example_mapping_loads() -> None:
    mapping = load_siu_mapping(REPO / "config/mappings/hl7-siu.example.yaml")
    assert mapping.patient_id_type == "MR"
    assert mapping.flags == {"sedation": FieldRef("ZAP", 2), "anticoagulant": FieldRef("ZAP", 3)}
    assert str(mapping.start[1]) == "SCH-11.4"


def test_bad_mapping_names_the_fields(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(
        "start: [SCH-11.4, 'eleven']\n"
        "nte_flags: maybe\n"
        "flags: {sedation: ZAP, walking: ZAP-1}\n"
        "location_components: [0]\n"
        "colour: blue\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_siu_mapping(path)
    text = str(caught.value)
    for name in ("'start'", "'nte_flags'", "'sedation'", "'walking'", "'location_components'"):
        assert f"field {name}" in text
    assert "field 'colour': unknown field" in text


def test_bad_defaults_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone"):
        parse_siu(minimal(), defaults=ImportDefaults("c", "Mars/Base", "GB", "en-GB"))
