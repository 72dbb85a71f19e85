"""HL7 v2 contacts as real senders write them, and which clinic (so country) a message is for."""

from __future__ import annotations

from reminder_service.domain.appointment import Appointment
from reminder_service.importers.csv_rows import ImportDefaults
from reminder_service.importers.hl7v2_siu import SiuMapping, parse_siu

UK = ImportDefaults("riverside", "Europe/London", "GB", "en-GB")
US = ImportDefaults("lakeside", "America/Chicago", "US", "en-US")
CLINICS = {"riverside": UK, "lakeside": US}


def message(pid13: str = "", pid14: str = "", facility: str = "LAKESIDE", pid11: str = "") -> bytes:
    return (
        f"MSH|^~\\&|EHR|{facility}|REMIND|X|20261120093000||SIU^S12|C1|P|2.5\r"
        "SCH|PL1|FL1|||||||||^^^20261210093000^^^^^^^^60\r"
        f"PID|1||MRN1||Patient^Test||19700101|F|||{pid11}||{pid13}|{pid14}\r"
        "AIS|1||BMBX\r"
    ).encode()


def contacts(data: bytes, defaults: ImportDefaults | None = US, **kw):  # type: ignore[no-untyped-def]
    [change] = parse_siu(data, defaults=defaults, clinics=CLINICS, **kw)
    appointment = change.appointment
    if appointment is None:
        return change.ack_code, [str(e) for e in change.errors]
    patient = appointment.patient  # type: ignore[union-attr]
    return patient.mobile, patient.email, appointment.clinic_id  # type: ignore[union-attr]


def test_a_us_number_in_a_us_feed_is_a_us_number() -> None:
    assert contacts(message(pid13="(734)555-0123^PRN^CP")) == ("+17345550123", None, "lakeside")


def test_the_same_message_in_a_uk_feed_would_be_a_uk_mobile() -> None:
    # Why the feed's clinic matters: this is the reading the wrong clinic would give.
    assert contacts(message(pid13="(734)555-0123^PRN^CP"), defaults=UK)[0] == "+447345550123"


def test_the_patient_address_country_makes_a_foreign_reading_a_refusal() -> None:
    # A UK feed, a patient whose address is in the USA: the number reads differently in the two
    # countries, so it is dropped (and with no other contact, the booking is refused).
    data = message(pid13="(734)555-0123^PRN^CP", pid11="1 Main St^^Detroit^MI^48201^USA")
    code, errors = contacts(data, defaults=UK)
    assert code == "AE"
    assert errors == ["PID-13/PID-14: no usable mobile number or email"]


def test_pid14_business_phone_is_never_a_mobile_unless_marked() -> None:
    refused = ("AE", ["PID-13/PID-14: no usable mobile number or email"])
    assert contacts(message(pid14="(312)555-0123^WPN^PH")) == refused
    assert contacts(message(pid14="(312)555-0123"))[0] == "AE"
    # Marked as a mobile (equipment CP, or use CELL), a work number may be the patient's.
    assert contacts(message(pid14="(312)555-0123^WPN^CP"))[0] == "+13125550123"
    assert contacts(message(pid14="(312)555-0123^CELL"))[0] == "+13125550123"


def test_pid14_may_be_allowed_by_the_mapping() -> None:
    mapping = SiuMapping(business_phones=())
    assert contacts(message(pid14="(312)555-0123^WPN^PH"), mapping=mapping)[0] == "+13125550123"


def test_xtn4_is_an_email_whatever_xtn2_and_xtn3_say() -> None:
    assert contacts(message(pid13="^^^test.patient@example.org"))[1] == "test.patient@example.org"
    # A phone and an email in one repetition: both are the patient's.
    both = message(pid13="(312)555-0123^PRN^CP^test.patient@example.org")
    assert contacts(both)[:2] == ("+13125550123", "test.patient@example.org")
    # Typed as Internet with the address in XTN-4, as before.
    typed = message(pid13="^NET^Internet^test.patient@example.org")
    assert contacts(typed)[1] == "test.patient@example.org"


def test_an_address_in_xtn1_marked_email_is_not_read_as_a_phone() -> None:
    barts = message(pid13="test.patient@example.org^EMAIL~07700900123^PRN^CP", facility="X")
    assert contacts(barts, defaults=UK)[:2] == ("+447700900123", "test.patient@example.org")


def test_the_sending_facility_chooses_the_clinic() -> None:
    mapping = SiuMapping(facilities={"LAKESIDE": "lakeside", "RIVERSIDE": "riverside"})
    us = message(pid13="(734)555-0123^PRN^CP", facility="Lakeside^2.16.840.1.1^ISO")
    assert contacts(us, defaults=UK, mapping=mapping) == ("+17345550123", None, "lakeside")
    uk = message(pid13="07700 900123^PRN^CP", facility="RIVERSIDE")
    assert contacts(uk, defaults=US, mapping=mapping) == ("+447700900123", None, "riverside")


def test_an_unmapped_facility_without_a_feed_clinic_is_refused() -> None:
    mapping = SiuMapping(facilities={"LAKESIDE": "lakeside"})
    data = message(pid13="07700 900123^PRN^CP", facility="ELSEWHERE")
    code, errors = contacts(data, defaults=None, mapping=mapping)
    assert code == "AE"
    assert errors[0].startswith("MSH-4: sending facility 'ELSEWHERE' is not in the mapping")


def test_a_facility_mapped_to_an_unconfigured_clinic_is_refused() -> None:
    mapping = SiuMapping(facilities={"LAKESIDE": "gone"})
    code, errors = contacts(message(), defaults=None, mapping=mapping)
    assert code == "AE" and "'gone', which is not configured" in errors[0]


def test_the_end_in_sch11_5_gives_the_duration_and_pv1_3_9_the_place() -> None:
    data = (
        b"MSH|^~\\&|EHR|X|REMIND|X|20261120093000||SIU^S12|C1|P|2.4\r"
        b"SCH|PL1|FL1|||||||||^^^20261210093000^20261210101500\r"
        b"PID|1||MRN1||Patient^Test||||||||07700900123^PRN^CP\r"
        b"PV1|||^^^^^^^^Day Unit, Level 2\r"
        b"AIS|1||BMBX\r"
    )
    [change] = parse_siu(data, defaults=UK)
    appointment = change.appointment
    assert isinstance(appointment, Appointment), change.errors
    assert (appointment.duration_minutes, appointment.location) == (45, "Day Unit, Level 2")


def test_the_sender_country_in_msh17_is_a_candidate_too() -> None:
    data = message(pid13="(734)555-0123^PRN^CP").replace(b"|P|2.5\r", b"|P|2.5|||||USA\r", 1)
    assert contacts(data, defaults=UK)[0] == "AE"  # GB and US readings differ: never guessed
