"""HL7 NK1 segments -> the patient's caregiver: which NK1, which number, and no consent unless
the feed's mapping says the clinic collects it."""

from __future__ import annotations

import pytest

from reminder_service.configuration.problems import ConfigError
from reminder_service.domain.appointment import CAREGIVER_UNSAID, Appointment, Caregiver
from reminder_service.importers.csv_rows import ImportDefaults
from reminder_service.importers.hl7v2_siu import SiuMapping, load_siu_mapping, parse_siu

UK = ImportDefaults("riverside", "Europe/London", "GB", "en-GB")
US = ImportDefaults("lakeside", "America/Chicago", "US", "en-US")


def message(*nk1: str, pid11: str = "") -> bytes:
    return (
        "MSH|^~\\&|EHR|RIVERSIDE|REMIND|X|20261120093000||SIU^S12|C1|P|2.5\r"
        "SCH|PL1|FL1|||||||||^^^20261210093000^^^^^^^^60\r"
        f"PID|1||MRN1||Patient^Test||19700101|F|||{pid11}||07700 900123^PRN^CP\r"
        + "".join(f"{segment}\r" for segment in nk1)
        + "AIS|1||BMBX\r"
    ).encode()


def parsed(data: bytes, defaults: ImportDefaults = UK, mapping: SiuMapping | None = None):  # type: ignore[no-untyped-def]
    [change] = parse_siu(data, defaults=defaults, mapping=mapping)
    assert change.ack_code == "AA", change.errors
    assert isinstance(change.appointment, Appointment)
    return change.appointment.patient.caregiver, [str(w) for w in change.warnings]


def test_no_nk1_says_nothing_about_a_caregiver() -> None:
    assert parsed(message()) == (CAREGIVER_UNSAID, [])


def test_an_nk1_with_a_mobile_is_the_caregiver_without_consent_by_default() -> None:
    caregiver, warnings = parsed(
        message("NK1|1|Carer^Ann|MTH^Mother|1 High St|07700 900456^PRN^CP||C")
    )
    # Consents unsaid: importing keeps what was recorded for this number, else no copies.
    assert caregiver == Caregiver("Ann Carer", "+447700900456", "Mother", None, None)
    assert warnings == []


def test_the_feed_mapping_may_say_the_clinic_collects_consent() -> None:
    caregiver, _ = parsed(
        message("NK1|1|Carer^Ann|MTH^Mother||07700 900456^PRN^CP"),
        mapping=SiuMapping(caregiver_copies=True),
    )
    assert isinstance(caregiver, Caregiver) and caregiver.gets_copies


def test_employers_are_skipped_and_a_care_giver_comes_first() -> None:
    caregiver, _ = parsed(
        message(
            "NK1|1|Works^Acme|EMR^Employer||07700 900111^WPN^CP||E",
            "NK1|2|Kin^Bob|BRO^Brother||07700 900222^PRN^CP||N",
            "NK1|3|Carer^Ann|CGV^Care giver||07700 900456^PRN^CP||C",
        )
    )
    assert isinstance(caregiver, Caregiver)
    assert (caregiver.name, caregiver.mobile) == ("Ann Carer", "+447700900456")


def test_the_first_person_with_a_mobile_wins_landlines_are_passed_over() -> None:
    caregiver, _ = parsed(
        message(
            "NK1|1|Kin^Bob|BRO^Brother||020 7946 0000^PRN^PH",
            "NK1|2|Carer^Ann|DAU^Daughter||^PRN^CP^^44^7700^900456",
        )
    )
    assert isinstance(caregiver, Caregiver) and caregiver.mobile == "+447700900456"


def test_v27_telecom_field_and_a_marked_business_phone() -> None:
    nk1_40 = "NK1|1|Carer^Ann|MTH" + "|" * 37 + "07700 900456^PRN^CP"
    caregiver, _ = parsed(message(nk1_40))
    assert isinstance(caregiver, Caregiver) and caregiver.mobile == "+447700900456"
    unmarked_work = parsed(message("NK1|1|Carer^Ann|MTH|||07700 900456^WPN^PH"))[0]
    assert unmarked_work is None  # a work number is a mobile only when marked so
    marked_work = parsed(message("NK1|1|Carer^Ann|MTH|||07700 900456^WPN^CP"))[0]
    assert isinstance(marked_work, Caregiver) and marked_work.mobile == "+447700900456"


def test_nk1s_without_any_mobile_mean_no_caregiver() -> None:
    assert parsed(message("NK1|1|Kin^Bob|BRO||020 7946 0000^PRN^PH")) == (None, [])


def test_an_unreadable_marked_mobile_is_a_warning_and_the_appointment_imports() -> None:
    caregiver, warnings = parsed(message("NK1|1|Carer^Ann|MTH||07700 9004^PRN^CP"))
    assert isinstance(caregiver, Caregiver) and caregiver.mobile is None
    assert warnings == [
        "NK1-5: caregiver's mobile dropped: not a valid phone number for region GB; "
        "no copies are sent"
    ]


def test_the_number_is_read_in_the_patients_countries_never_guessed() -> None:
    # A US feed, a patient with a UK address: (734) 555-0123 reads differently in the two.
    caregiver, warnings = parsed(
        message(
            "NK1|1|Carer^Ann|MTH||(734)555-0123^PRN^CP", pid11="1 High St^^London^^^GBR"
        ).replace(b"07700 900123", b"+447700900123"),
        defaults=US,
    )
    assert isinstance(caregiver, Caregiver) and caregiver.mobile is None
    assert "reads as a different number in US and GB" in warnings[0]


def test_an_over_long_name_is_a_warning_and_left_empty() -> None:
    caregiver, warnings = parsed(message(f"NK1|1|{'x' * 120}^Ann|MTH||07700 900456^PRN^CP"))
    assert isinstance(caregiver, Caregiver) and caregiver.name == ""
    assert warnings[0].startswith("NK1-2: caregiver's name is 124 characters long")


def test_the_mapping_may_ignore_nk1() -> None:
    data = message("NK1|1|Carer^Ann|MTH||07700 900456^PRN^CP")
    assert parsed(data, mapping=SiuMapping(caregivers=False))[0] is CAREGIVER_UNSAID


def test_the_mapping_file_reads_caregiver_options_and_names_a_bad_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    good = tmp_path / "good.yaml"
    good.write_text("caregiver_copies: true\ncaregivers: true\n")
    assert load_siu_mapping(good).caregiver_copies is True
    bad = tmp_path / "bad.yaml"
    bad.write_text("caregiver_copies: sometimes\n")
    with pytest.raises(ConfigError) as raised:
        load_siu_mapping(bad)
    assert "caregiver_copies" in str(raised.value) and "true or false" in str(raised.value)
