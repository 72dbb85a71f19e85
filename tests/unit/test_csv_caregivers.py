"""Caregiver columns in a CSV export: read like the patient's, with their own consent; an
unreadable caregiver number is a warning naming row and column, never a rejected appointment."""

from __future__ import annotations

import pickle

from reminder_service.domain.appointment import CAREGIVER_UNSAID, Appointment, Caregiver
from reminder_service.importers.csv_mapping import LAYOUT_FIELDS, CsvMapping, parse_mapping
from reminder_service.importers.csv_rows import (
    ImportDefaults,
    RowError,
    Warned,
    parse_csv,
)

DEFAULTS = ImportDefaults("riverside", "Europe/London", "GB", "en-GB")
HEADER = ",".join(LAYOUT_FIELDS)
ROW = (
    "A1,P1,Test,Patient,07700 900123,,en-GB,Europe/London,BMBX,2026-12-03T09:30,45,Day Unit,"
    "yes,no,booked"
)
CARE_HEADER = (
    "caregiver_name,caregiver_mobile,caregiver_relationship,caregiver_consent,caregiver_copies"
)


def parse(header: str, *rows: str, mapping: CsvMapping | None = None):  # type: ignore[no-untyped-def]
    data = "\n".join([header, *rows]).encode()
    return parse_csv(data, filename="t.csv", defaults=DEFAULTS, mapping=mapping)


def only(parsed) -> Appointment:  # type: ignore[no-untyped-def]
    assert parsed.errors == []
    [(_, change)] = parsed.rows
    assert isinstance(change, Appointment)
    return change


def test_a_file_without_caregiver_columns_says_nothing_about_one() -> None:
    assert only(parse(HEADER, ROW)).patient.caregiver is CAREGIVER_UNSAID


def test_the_caregiver_is_read_with_the_patients_countries() -> None:
    parsed = parse(f"{HEADER},{CARE_HEADER}", f"{ROW},Ann Carer,07700 900456,mother,yes,yes")
    caregiver = only(parsed).patient.caregiver
    assert caregiver == Caregiver("Ann Carer", "+447700900456", "mother", True, True)
    assert parsed.warnings == []


def test_blank_consents_are_no_and_a_blank_caregiver_is_none() -> None:
    parsed = parse(
        f"{HEADER},{CARE_HEADER}",
        f"{ROW},Ann Carer,07700 900456,,,",
        ROW.replace("A1", "A2") + ",,,,yes,yes",
    )
    first, second = (change for _, change in parsed.rows)
    assert isinstance(first, Appointment) and isinstance(second, Appointment)
    assert first.patient.caregiver == Caregiver("Ann Carer", "+447700900456", "", False, False)
    assert second.patient.caregiver is None  # no name, no mobile: the patient has none


def test_an_unreadable_caregiver_number_is_a_warning_not_a_rejection() -> None:
    parsed = parse(f"{HEADER},{CARE_HEADER}", f"{ROW},Ann Carer,07700 9004,mother,yes,yes")
    appointment = only(parsed)
    assert appointment.patient.mobile == "+447700900123"  # the patient's own reminders go on
    caregiver = appointment.patient.known_caregiver
    assert caregiver is not None and caregiver.mobile is None and not caregiver.gets_copies
    [warning] = parsed.warnings
    assert (warning.line, warning.column) == (2, "caregiver_mobile")
    assert "not a valid phone number" in warning.reason and "9004" not in warning.reason


def test_an_ambiguous_caregiver_number_is_refused_never_guessed() -> None:
    """(734) 555-0123 is a Michigan number in the US and a UK mobile: a US zone with a UK clinic
    reads it both ways, so it is refused like the patient's would be."""
    row = ROW.replace("Europe/London", "America/New_York").replace("07700 900123", "+447700900123")
    parsed = parse(f"{HEADER},{CARE_HEADER}", f"{row},Ann Carer,(734) 555-0123,mother,yes,yes")
    assert only(parsed).patient.known_caregiver.mobile is None  # type: ignore[union-attr]
    [warning] = parsed.warnings
    assert (
        warning.column == "caregiver_mobile" and "different number in US and GB" in warning.reason
    )


def test_an_unreadable_consent_is_a_warning_and_counts_as_no() -> None:
    parsed = parse(f"{HEADER},{CARE_HEADER}", f"{ROW},Ann Carer,07700 900456,mother,perhaps,yes")
    caregiver = only(parsed).patient.known_caregiver
    assert caregiver is not None and not caregiver.sms_consent and caregiver.copies
    assert parsed.warnings == [RowError(2, "caregiver_consent", "is not yes or no; taken as no")]


def test_an_over_long_caregiver_name_is_a_row_error_naming_the_column() -> None:
    parsed = parse(f"{HEADER},{CARE_HEADER}", f"{ROW},{'x' * 101},07700 900456,mother,yes,yes")
    assert parsed.rows == []
    assert [(e.line, e.column) for e in parsed.errors] == [(2, "caregiver_name")]


def test_a_mapping_names_the_caregiver_columns_and_their_spellings() -> None:
    mapping = parse_mapping(
        b"columns: {caregiver_name: NOK Name, caregiver_mobile: NOK Cell,\n"
        b"          caregiver_consent: NOK SMS OK, caregiver_copies: Copy NOK}\n"
        b"values: {caregiver_consent: {'yes': [Consented]}}\n",
        "nok.yaml",
    )
    parsed = parse(
        f"{HEADER},NOK Name,NOK Cell,NOK SMS OK,Copy NOK",
        f"{ROW},Ann Carer,07700 900456,Consented,Y",
        mapping=mapping,
    )
    caregiver = only(parsed).patient.caregiver
    assert caregiver == Caregiver("Ann Carer", "+447700900456", "", True, True)


def test_a_warned_row_pickles_for_the_worker_processes() -> None:
    warned = Warned(only(parse(HEADER, ROW)), [RowError(2, "caregiver_mobile", "why")])
    assert pickle.loads(pickle.dumps(warned)) == warned
