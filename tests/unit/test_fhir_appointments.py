"""FHIR importer: every conformance sample, bundles and references, validation issues, mapping."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reminder_service.domain.appointment import (
    Appointment,
    AppointmentStatus,
    Cancellation,
    Patient,
)
from reminder_service.importers.csv_rows import ImportDefaults
from reminder_service.importers.fhir_appointments import (
    FhirChange,
    FhirIssue,
    FhirOutcome,
    apply_known_patient,
    map_patient,
    parse_fhir,
)

SAMPLES = Path(__file__).parents[1] / "conformance" / "fhir"  # from ../shared/conformance
US = ImportDefaults("clinic-us", "America/New_York", "US", "en-US")
AU = ImportDefaults("clinic-au", "Australia/Melbourne", "AU", "en-AU")
MSFC_PATIENT = "Patient/9e909e52-61a1-be50-1878-a12ef8c36346"
MSFC_PATIENT_ENTRY = "Bundle.entry[19].resource"


def load(name: str) -> dict[str, Any]:
    with (SAMPLES / name).open(encoding="utf-8") as file:
        document: dict[str, Any] = json.load(file)
    return document


def only(changes: list[FhirChange]) -> FhirChange:
    assert len(changes) == 1, changes
    return changes[0]


def booked(change: FhirChange) -> Appointment:
    assert change.appointment is not None, change.issues
    return change.appointment


def errors(change: FhirChange) -> list[FhirIssue]:
    return [issue for issue in change.issues if issue.severity == "error"]


def bundle(*resources: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    entries = [
        {
            "fullUrl": f"urn:uuid:0000000{i}-0000-4000-8000-000000000000",
            "resource": resource,
            "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
        }
        for i, resource in enumerate(resources)
    ]
    return {"resourceType": "Bundle", "type": kind, "entry": entries}


def msfc_with_mobile(name: str) -> dict[str, Any]:
    """A Microsoft bundle whose patient also has a mobile (the sample has none)."""
    document = load(name)
    patient = document["entry"][19]["resource"]
    assert patient["resourceType"] == "Patient"
    patient["telecom"].append({"system": "phone", "value": "+1 202 555 0143", "use": "mobile"})
    return document


# --- the conformance samples --------------------------------------------------------------------


# The samples this module covers; the later public ones are covered, each with its exact
# outcome, by tests/integration/test_public_samples.py.
SAMPLE_NAMES = (
    "msfc-siu-s12-01-bundle.json",
    "msfc-siu-s15-01-bundle.json",
    "msfc-siu-s26-01-bundle.json",
    "r4-appointment-example-request.json",
    "r4-appointment-example.json",
    "r4-appointment-example2doctors.json",
    "r4-patient-example.json",
)


def test_every_sample_parses_without_errors_except_the_s12_without_a_contact() -> None:
    for name in SAMPLE_NAMES:
        changes = parse_fhir(load(name), defaults=US)
        rejected = [c for c in changes if c.outcome is FhirOutcome.REJECTED]
        expected = 1 if name == "msfc-siu-s12-01-bundle.json" else 0
        assert len(rejected) == expected, (name, rejected)


def test_r4_patient_example_alone_gives_no_change_and_no_error() -> None:
    assert parse_fhir(load("r4-patient-example.json"), defaults=AU) == []


def test_r4_appointment_example_needs_its_patient() -> None:
    change = only(parse_fhir(load("r4-appointment-example.json"), defaults=AU))
    assert change.outcome is FhirOutcome.NEEDS_PATIENT
    assert change.appointment is None
    assert change.patient_reference == "Patient/example"
    assert change.issues == []


def test_r4_appointment_example_completed_with_the_known_patient() -> None:
    change = only(parse_fhir(load("r4-appointment-example.json"), defaults=AU))
    patient, issues = map_patient(load("r4-patient-example.json"), defaults=AU)
    assert patient is not None and issues == []
    completed = apply_known_patient(change, patient)
    assert completed.outcome is FhirOutcome.BOOKED
    appointment = booked(completed)
    assert appointment.external_id == "example"  # no identifier: the resource id
    assert appointment.status is AppointmentStatus.BOOKED
    assert appointment.start == datetime(2013, 12, 10, 9, 0, tzinfo=UTC)
    assert appointment.duration_minutes == 120
    assert appointment.procedure == "52"  # serviceType, before appointmentType FOLLOWUP
    assert appointment.location == "South Wing, second floor"
    assert appointment.clinic_id == "clinic-au"
    assert appointment.patient is patient


def test_r4_patient_example_maps_to_our_patient() -> None:
    patient, issues = map_patient(load("r4-patient-example.json"), defaults=AU)
    assert issues == []
    assert patient == Patient(
        external_id="12345",  # the MR identifier
        first_name="Peter",  # official name, first given
        last_name="Chalmers",
        mobile="+61334105613",  # use: mobile, read in AU; the work and old numbers are not
        email=None,
        language="en-AU",  # no communication: the default
        timezone="Australia/Melbourne",
        deceased=False,
    )


def test_r4_appointment_example_in_a_bundle_with_its_patient() -> None:
    document = bundle(load("r4-appointment-example.json"), load("r4-patient-example.json"))
    change = only(parse_fhir(document, defaults=AU))
    assert change.outcome is FhirOutcome.BOOKED
    assert change.patient_reference == "Patient/example"
    appointment = booked(change)
    assert appointment.external_id == "example"
    assert appointment.patient.external_id == "12345"
    assert appointment.patient.mobile == "+61334105613"
    assert appointment.location == "South Wing, second floor"


def test_both_r4_appointments_resolve_the_patient_by_its_full_url() -> None:
    patient = load("r4-patient-example.json")
    first, second = load("r4-appointment-example.json"), load("r4-appointment-example2doctors.json")
    for appointment in (first, second):
        appointment["participant"][0]["actor"]["reference"] = "urn:uuid:patient-1"
    document = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"resource": first},
            {"fullUrl": "urn:uuid:patient-1", "resource": patient},
            {"resource": second},
        ],
    }
    changes = parse_fhir(document, defaults=AU)
    assert [c.outcome for c in changes] == [FhirOutcome.BOOKED, FhirOutcome.BOOKED]
    assert [booked(c).external_id for c in changes] == ["example", "2docs"]
    assert {booked(c).patient.last_name for c in changes} == {"Chalmers"}


def test_r4_appointment_example_request_is_proposed_so_not_booked() -> None:
    change = only(parse_fhir(load("r4-appointment-example-request.json"), defaults=AU))
    assert change.outcome is FhirOutcome.NOT_BOOKED
    assert change.appointment is None
    # Understood, with nothing to do yet: an informational issue naming the element, not an error.
    [issue] = change.issues
    assert (issue.severity, issue.code, issue.expression) == (
        "information",
        "informational",
        "Appointment.status",
    )
    assert issue.diagnostics.startswith("proposed: not booked yet")


def test_r4_appointment_example2doctors() -> None:
    change = only(parse_fhir(load("r4-appointment-example2doctors.json"), defaults=AU))
    assert change.outcome is FhirOutcome.NEEDS_PATIENT
    assert change.patient_reference == "Patient/example"
    patient, _ = map_patient(load("r4-patient-example.json"), defaults=AU)
    assert patient is not None
    appointment = booked(apply_known_patient(change, patient))
    assert appointment.external_id == "2docs"
    assert appointment.start == datetime(2013, 12, 9, 9, 0, tzinfo=UTC)
    assert appointment.duration_minutes == 120
    assert appointment.procedure == "52"
    assert appointment.location == ""  # "Phone Call" is an actor with no reference, not a Location


def test_msfc_s12_booking_is_rejected_as_its_patient_has_no_contact() -> None:
    change = only(parse_fhir(load("msfc-siu-s12-01-bundle.json"), defaults=US))
    assert change.outcome is FhirOutcome.REJECTED
    assert change.appointment is None
    assert errors(change) == [
        FhirIssue(
            "error",
            "required",
            f"{MSFC_PATIENT_ENTRY}.telecom",
            "no usable mobile number or email to send reminders to",
        )
    ]
    # The email 89898989 is dropped; the home/work numbers (2222, 12121212, 7777) are no mobiles.
    assert [i.expression for i in change.issues if i.severity == "warning"] == [
        f"{MSFC_PATIENT_ENTRY}.telecom[4].value"
    ]


def test_msfc_s12_booking_with_a_mobile_added() -> None:
    change = only(parse_fhir(msfc_with_mobile("msfc-siu-s12-01-bundle.json"), defaults=US))
    assert change.outcome is FhirOutcome.BOOKED
    assert change.patient_reference == MSFC_PATIENT
    appointment = booked(change)
    assert appointment.external_id == "36996"  # FILL (SCH-2), not PLAC 12345 or the resource id
    assert appointment.status is AppointmentStatus.BOOKED
    # 12:45+05:30; end 13:35 gives 50 minutes, although minutesDuration says 1.
    assert appointment.start == datetime(2021, 9, 24, 7, 15, tzinfo=UTC)
    assert appointment.duration_minutes == 50
    assert appointment.procedure == "EMERGENCY"  # appointmentType: no serviceType
    assert appointment.location == "055"  # the Location's name (no display on the reference)
    patient = appointment.patient
    assert patient.external_id == "1234567"  # the first MR identifier
    assert (patient.first_name, patient.last_name) == ("stanley", "Josh")  # the official name
    assert patient.mobile == "+12025550143"
    assert patient.email is None
    assert patient.language == "ar"  # preferred communication, first coding
    assert patient.timezone == "America/New_York"
    assert patient.deceased is True  # deceasedDateTime


def test_msfc_s15_cancellation_needs_no_contact() -> None:
    change = only(parse_fhir(load("msfc-siu-s15-01-bundle.json"), defaults=US))
    assert change.outcome is FhirOutcome.CANCELLED
    assert errors(change) == []
    appointment = booked(change)
    assert appointment.external_id == "36996"
    assert appointment.status is AppointmentStatus.CANCELLED
    assert appointment.start == datetime(2021, 9, 24, 7, 15, tzinfo=UTC)
    assert appointment.duration_minutes == 50
    assert appointment.procedure == "EMERGENCY"
    assert appointment.location == "055"
    assert appointment.patient.external_id == "1234567"
    assert (appointment.patient.mobile, appointment.patient.email) == (None, None)


def test_msfc_s26_no_show_keeps_the_appointment_booked() -> None:
    change = only(parse_fhir(load("msfc-siu-s26-01-bundle.json"), defaults=US))
    assert change.outcome is FhirOutcome.NO_SHOW
    assert errors(change) == []
    appointment = booked(change)
    assert appointment.external_id == "36996"
    assert appointment.status is AppointmentStatus.BOOKED
    assert appointment.start == datetime(2021, 9, 24, 7, 15, tzinfo=UTC)
    assert appointment.duration_minutes == 50
    assert appointment.procedure == "EMERGENCY"
    assert appointment.patient.deceased is True


# --- validation and codes -----------------------------------------------------------------------


def r4_appointment(**changes: Any) -> dict[str, Any]:
    appointment = load("r4-appointment-example.json")
    appointment.update(changes)
    return appointment


@pytest.mark.parametrize(
    ("changes", "expression"),
    [
        ({"status": 12}, "Appointment.status"),
        ({"start": "next tuesday"}, "Appointment.start"),
        ({"minutesDuration": "long"}, "Appointment.minutesDuration"),
        ({"serviceType": {"coding": []}}, "Appointment.serviceType"),
    ],
)
def test_invalid_structure_names_the_element(changes: dict[str, Any], expression: str) -> None:
    change = only(parse_fhir(r4_appointment(**changes), defaults=AU))
    assert change.outcome is FhirOutcome.REJECTED
    assert change.appointment is None
    assert [(i.severity, i.expression) for i in change.issues] == [("error", expression)]


def test_invalid_participant_actor_names_the_element() -> None:
    appointment = r4_appointment()
    appointment["participant"][0]["actor"] = "Patient/example"
    change = only(parse_fhir(appointment, defaults=AU))
    assert change.outcome is FhirOutcome.REJECTED
    assert [i.expression for i in change.issues] == ["Appointment.participant[0].actor"]


def test_invalid_appointment_in_a_bundle_is_named_from_the_bundle() -> None:
    document = bundle(load("r4-patient-example.json"), r4_appointment(start="2013-12-10"))
    change = only(parse_fhir(document, defaults=AU))
    assert [i.expression for i in errors(change)] == ["Bundle.entry[1].resource.start"]


def test_unknown_status_is_a_code_issue() -> None:
    change = only(parse_fhir(r4_appointment(status="confirmed"), defaults=AU))
    assert change.outcome is FhirOutcome.REJECTED
    (issue,) = change.issues
    assert (issue.severity, issue.code, issue.expression) == (
        "error",
        "code-invalid",
        "Appointment.status",
    )


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        ("proposed", FhirOutcome.NOT_BOOKED),
        ("pending", FhirOutcome.NOT_BOOKED),
        ("waitlist", FhirOutcome.NOT_BOOKED),
        ("arrived", FhirOutcome.BOOKED),
        ("checked-in", FhirOutcome.BOOKED),
        ("fulfilled", FhirOutcome.BOOKED),
        ("entered-in-error", FhirOutcome.CANCELLED),
        ("noshow", FhirOutcome.NO_SHOW),
    ],
)
def test_status_outcomes(status: str, outcome: FhirOutcome) -> None:
    document = bundle(r4_appointment(status=status), load("r4-patient-example.json"))
    change = only(parse_fhir(document, defaults=AU))
    assert change.outcome is outcome
    assert (change.appointment is None) == (outcome is FhirOutcome.NOT_BOOKED)


def test_booked_without_start_is_an_error() -> None:
    appointment = r4_appointment()
    del appointment["start"], appointment["end"]
    change = only(parse_fhir(appointment, defaults=AU))
    assert [i.expression for i in errors(change)] == ["Appointment.start"]


def test_end_before_start_is_an_error() -> None:
    change = only(parse_fhir(r4_appointment(end="2013-12-10T08:00:00Z"), defaults=AU))
    assert [i.expression for i in errors(change)] == ["Appointment.end"]


def test_duration_from_minutes_duration_then_the_default() -> None:
    patient = load("r4-patient-example.json")
    timed = r4_appointment(minutesDuration=45)
    del timed["end"]
    untimed = r4_appointment(id="untimed")
    del untimed["end"]
    changes = parse_fhir(bundle(timed, untimed, patient), defaults=AU)
    assert [booked(c).duration_minutes for c in changes] == [45, AU.duration_minutes]


def test_identifier_rules() -> None:
    placer = {"type": {"coding": [{"code": "PLAC"}]}, "value": "P-1"}
    filler = {"type": {"coding": [{"code": "FILL"}]}, "value": "F-1"}
    plain = {"system": "urn:x", "value": "X-1"}
    cases = [([plain, placer, filler], "F-1"), ([plain, placer], "P-1"), ([plain], "X-1")]
    for identifiers, expected in cases:
        change = only(parse_fhir(r4_appointment(identifier=identifiers), defaults=AU))
        assert change.awaiting is not None
        assert change.awaiting[0].external_id == expected


def test_procedure_from_reason_code_when_nothing_else() -> None:
    appointment = r4_appointment(reasonCode=[{"coding": [{"code": "bmb"}]}])
    del appointment["serviceType"], appointment["appointmentType"]
    change = only(parse_fhir(appointment, defaults=AU))
    assert change.awaiting is not None
    assert change.awaiting[0].procedure == "BMB"


def test_location_name_from_the_bundle() -> None:
    appointment = r4_appointment()
    appointment["participant"][2]["actor"] = {"reference": "Location/1"}
    location = {"resourceType": "Location", "id": "1", "name": "Day Unit"}
    document = bundle(appointment, location, load("r4-patient-example.json"))
    assert booked(only(parse_fhir(document, defaults=AU))).location == "Day Unit"


def test_no_patient_participant_is_an_error() -> None:
    appointment = r4_appointment()
    del appointment["participant"][0]
    change = only(parse_fhir(appointment, defaults=AU))
    assert [i.expression for i in errors(change)] == ["Appointment.participant"]


def test_other_resource_types_are_an_error_or_ignored() -> None:
    observation = {"resourceType": "Observation", "id": "x"}
    change = only(parse_fhir(observation, defaults=AU))
    assert change.outcome is FhirOutcome.REJECTED
    assert [(i.code, i.expression) for i in change.issues] == [("not-supported", "resourceType")]
    assert parse_fhir(bundle(observation), defaults=AU) == []


def test_unsupported_bundle_type_is_an_error() -> None:
    document = bundle(load("r4-appointment-example.json"), kind="searchset")
    assert [i.expression for i in only(parse_fhir(document, defaults=AU)).issues] == ["Bundle.type"]


def test_invalid_standalone_patient_is_reported() -> None:
    patient = load("r4-patient-example.json")
    patient["telecom"][1]["value"] = 35556473
    change = only(parse_fhir(patient, defaults=AU))
    assert change.outcome is FhirOutcome.REJECTED
    assert [i.expression for i in change.issues] == ["Patient.telecom[1].value"]


# --- patient contacts ---------------------------------------------------------------------------


def patient_with(telecom: list[dict[str, Any]], **changes: Any) -> dict[str, Any]:
    patient = copy.deepcopy(load("r4-patient-example.json"))
    patient.update(telecom=telecom, **changes)
    return patient


def test_impossible_mobile_is_dropped_with_a_warning() -> None:
    telecom = [
        {"system": "phone", "value": "12", "use": "mobile"},
        {"system": "email", "value": "peter@example.org"},
    ]
    patient, issues = map_patient(patient_with(telecom), defaults=AU)
    assert patient is not None
    assert (patient.mobile, patient.email) == (None, "peter@example.org")
    assert [(i.severity, i.expression) for i in issues] == [("warning", "Patient.telecom[0].value")]


def test_555_mobile_is_kept_as_e164() -> None:
    telecom = [{"system": "phone", "value": "(555) 555-0100", "use": "mobile"}]
    patient, _ = map_patient(patient_with(telecom), defaults=US)
    assert patient is not None and patient.mobile == "+15555550100"


def test_best_ranked_mobile_wins_and_old_numbers_are_skipped() -> None:
    telecom: list[dict[str, Any]] = [
        {"system": "phone", "value": "+61 412 345 678", "use": "old"},
        {"system": "phone", "value": "+61 412 345 679", "use": "mobile", "rank": 2},
        {"system": "sms", "value": "+61 412 345 670", "rank": 1},
    ]
    patient, _ = map_patient(patient_with(telecom), defaults=AU)
    assert patient is not None and patient.mobile == "+61412345670"


def test_a_home_phone_that_is_a_mobile_counts() -> None:
    telecom = [
        {"system": "phone", "value": "(03) 5555 6473", "use": "home"},
        {"system": "phone", "value": "0412 345 678", "use": "home"},
    ]
    patient, _ = map_patient(patient_with(telecom), defaults=AU)
    assert patient is not None and patient.mobile == "+61412345678"


def test_unknown_telecom_codes_are_warnings() -> None:
    telecom = [
        {"system": "telex", "value": "123"},
        {"system": "phone", "value": "0412 345 678", "use": "cell"},
    ]
    patient, issues = map_patient(patient_with(telecom), defaults=AU)
    assert patient is not None and patient.mobile == "+61412345678"
    assert [(i.severity, i.code, i.expression) for i in issues] == [
        ("warning", "code-invalid", "Patient.telecom[0].system"),
        ("warning", "code-invalid", "Patient.telecom[1].use"),
    ]


def test_cancellation_is_not_rejected_for_a_bad_contact() -> None:
    patient = patient_with([{"system": "phone", "value": "1", "use": "mobile"}])
    document = bundle(r4_appointment(status="cancelled"), patient)
    change = only(parse_fhir(document, defaults=AU))
    assert change.outcome is FhirOutcome.CANCELLED
    assert booked(change).status is AppointmentStatus.CANCELLED
    assert [i.severity for i in change.issues] == ["warning"]


def test_cancellation_with_an_invalid_patient_is_a_cancellation_by_id() -> None:
    patient = patient_with([{"system": "phone", "value": 1, "use": "mobile"}])
    document = bundle(r4_appointment(status="cancelled"), patient)
    change = only(parse_fhir(document, defaults=AU))
    assert change.outcome is FhirOutcome.CANCELLED
    assert change.appointment == Cancellation("example")
    assert [i.severity for i in change.issues] == ["warning"]


@pytest.mark.parametrize(
    ("status", "no_show"), [("cancelled", False), ("entered-in-error", False), ("noshow", True)]
)
def test_a_cancellation_needs_only_its_identifier(status: str, no_show: bool) -> None:
    # No participant, no start, no service type: FHIR itself calls this Appointment invalid,
    # but refusing it would leave the cancelled appointment's reminders going.
    document = {
        "resourceType": "Appointment",
        "status": status,
        "identifier": [
            {"value": "PLACER-1", "type": {"coding": [{"code": "PLAC"}]}},
            {"value": "FILLER-9", "type": {"coding": [{"code": "FILL"}]}},
        ],
    }
    change = only(parse_fhir(document, defaults=AU))
    assert change.appointment == Cancellation("FILLER-9", no_show=no_show)
    assert change.issues and {i.severity for i in change.issues} == {"warning"}


def test_a_cancellation_with_no_identifier_and_no_id_is_refused() -> None:
    change = only(parse_fhir({"resourceType": "Appointment", "status": "cancelled"}, defaults=AU))
    assert change.outcome is FhirOutcome.REJECTED and change.appointment is None


def test_language_preferred_communication_and_default_region() -> None:
    spoken = [
        {"language": {"coding": [{"code": "fr"}]}},
        {"language": {"coding": [{"code": "es"}]}, "preferred": True},
    ]
    patient, _ = map_patient(patient_with([], communication=spoken), defaults=AU)
    assert patient is not None and patient.language == "es"
    english = [{"language": {"coding": [{"code": "en"}]}}]
    patient, _ = map_patient(patient_with([], communication=english), defaults=AU)
    assert patient is not None and patient.language == "en-AU"


def test_apply_known_patient_refuses_a_complete_change() -> None:
    change = FhirChange(None, FhirOutcome.NOT_BOOKED, [])
    patient, _ = map_patient(load("r4-patient-example.json"), defaults=AU)
    assert patient is not None
    with pytest.raises(ValueError, match="not waiting"):
        apply_known_patient(change, patient)


def test_a_number_that_reads_differently_in_the_patients_country_is_never_guessed() -> None:
    uk_clinic = ImportDefaults("riverside", "Europe/London", "GB", "en-GB")
    telecom = [{"system": "phone", "value": "(734) 555-0123", "use": "mobile"}]
    in_us = [{"country": "USA", "city": "Detroit"}]
    patient, issues = map_patient(patient_with(telecom, address=in_us), defaults=uk_clinic)
    assert patient is not None and patient.mobile is None
    [issue] = [i for i in issues if i.expression == "Patient.telecom[0].value"]
    assert "reads as a different number in GB or US" in issue.diagnostics
    # Without an address abroad, the clinic's country is the only reading.
    patient, _ = map_patient(patient_with(telecom, address=[]), defaults=uk_clinic)
    assert patient is not None and patient.mobile == "+447345550123"


def test_a_preferred_communication_with_no_language_falls_back_with_a_warning() -> None:
    # Found by the fuzzing profile: FHIR requires communication.language, yet a null passes the
    # model; it crashed the whole document.
    spoken = [{"language": {"coding": [{"code": "fr"}]}}, {"preferred": True, "language": None}]
    patient, issues = map_patient(patient_with([], communication=spoken), defaults=AU)
    assert patient is not None and patient.language == "en-AU"
    assert any(
        i.expression == "Patient.communication[1].language" and "default used" in i.diagnostics
        for i in issues
    )
