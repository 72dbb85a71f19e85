"""FHIR RelatedPerson -> the patient's caregiver: contained or in a Bundle, the mobile read as the
patient's, no consent unless the clinic says it collects it."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from reminder_service.domain.appointment import CAREGIVER_UNSAID, Appointment, Caregiver
from reminder_service.importers.csv_rows import ImportDefaults
from reminder_service.importers.fhir_appointments import (
    FhirOutcome,
    apply_known_patient,
    parse_fhir,
)
from tests.factories import patient as known_patient

UK = ImportDefaults("riverside", "Europe/London", "GB", "en-GB")


def related(**changes: Any) -> dict[str, Any]:
    return {
        "resourceType": "RelatedPerson", "id": "rp1", "patient": {"reference": "Patient/p1"},
        "relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode",
                                      "code": "MTH", "display": "mother"}]}],
        "name": [{"family": "Carer", "given": ["Ann"]}],
        "telecom": [{"system": "phone", "use": "home", "value": "020 7946 0000"},
                    {"system": "phone", "use": "mobile", "value": "07700 900456"}],
        **changes,
    }  # fmt: skip


def appointment(*actors: str, contained: list[Any] | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Appointment", "id": "a1", "status": "booked",
        "identifier": [{"value": "FA1"}], "start": "2026-12-10T09:30:00Z",
        "serviceType": [{"coding": [{"code": "BMBX"}]}],
        "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}]
        + [{"actor": {"reference": a}, "status": "accepted"} for a in actors],
    }  # fmt: skip
    if contained is not None:
        resource["contained"] = contained
    return resource


PATIENT = {
    "resourceType": "Patient", "id": "p1", "identifier": [{"value": "P1"}],
    "name": [{"family": "Patient", "given": ["Test"]}],
    "telecom": [{"system": "phone", "use": "mobile", "value": "07700 900123"}],
}  # fmt: skip


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": "batch",
            "entry": [{"resource": r} for r in resources]}  # fmt: skip


def one(document: dict[str, Any], defaults: ImportDefaults = UK):  # type: ignore[no-untyped-def]
    [change] = parse_fhir(document, defaults=defaults)
    assert change.outcome is FhirOutcome.BOOKED, change.issues
    assert isinstance(change.appointment, Appointment)
    warnings = [(i.expression, i.diagnostics) for i in change.issues if i.severity == "warning"]
    return change.appointment.patient.caregiver, warnings


def test_a_related_person_in_the_bundle_is_the_caregiver_without_consent() -> None:
    caregiver, warnings = one(bundle(appointment("RelatedPerson/rp1"), PATIENT, related()))
    assert caregiver == Caregiver("Ann Carer", "+447700900456", "mother", None, None)
    assert warnings == []


def test_a_contained_related_person_with_consent_collected_by_the_clinic() -> None:
    document = bundle(appointment("#rp1", contained=[related(relationship=[{"text": "Mum"}])]),
                      PATIENT)  # fmt: skip
    caregiver, _ = one(document, replace(UK, fhir_caregiver_copies=True))
    assert caregiver == Caregiver("Ann Carer", "+447700900456", "Mum", True, True)


def test_no_related_person_says_nothing() -> None:
    assert one(bundle(appointment(), PATIENT)) == (CAREGIVER_UNSAID, [])


def test_a_related_person_not_in_the_request_is_a_warning_and_says_nothing() -> None:
    caregiver, warnings = one(bundle(appointment("RelatedPerson/elsewhere"), PATIENT))
    assert caregiver is CAREGIVER_UNSAID
    assert warnings[0][0] == "Bundle.entry[0].resource.participant[1].actor"


def test_another_patients_related_person_is_never_taken() -> None:
    other = related(patient={"reference": "Patient/p2"})
    caregiver, warnings = one(bundle(appointment("RelatedPerson/rp1"), PATIENT, other))
    assert caregiver is CAREGIVER_UNSAID
    assert warnings == [("Bundle.entry[2].resource.patient",
                         "is another patient's related person; not taken as this patient's "
                         "caregiver")]  # fmt: skip


def test_an_unreadable_related_person_is_a_warning_not_a_rejection() -> None:
    """In the Bundle, it is a resource of its own. (A contained one is part of the Appointment,
    validated with it: broken, it is the Appointment's error, as any contained resource.)"""
    broken = related()
    del broken["patient"]
    caregiver, warnings = one(bundle(appointment("RelatedPerson/rp1"), PATIENT, broken))
    assert caregiver is CAREGIVER_UNSAID
    assert warnings == [("Bundle.entry[2].resource.patient", "Field required")]


def test_an_ambiguous_caregiver_number_is_dropped_with_a_warning() -> None:
    # A patient with a US address in a UK clinic's feed: (734) 555-0123 reads both ways.
    patient = {
        **PATIENT,
        "address": [{"country": "US"}],
        "telecom": [{"system": "phone", "use": "mobile", "value": "+447700900123"}],
    }
    person = related(telecom=[{"system": "phone", "use": "mobile", "value": "(734) 555-0123"}])
    caregiver, warnings = one(bundle(appointment("RelatedPerson/rp1"), patient, person))
    assert isinstance(caregiver, Caregiver) and caregiver.mobile is None
    assert warnings == [
        (
            "Bundle.entry[2].resource.telecom[0].value",
            "reads as a different number in GB or US; dropped (never guessed)",
        )
    ]


def test_a_known_patient_keeps_the_caregiver_the_appointment_named() -> None:
    document = appointment("#rp1", contained=[related()])
    [change] = parse_fhir(document, defaults=UK)
    assert change.outcome is FhirOutcome.NEEDS_PATIENT
    completed = apply_known_patient(change, known_patient())
    assert isinstance(completed.appointment, Appointment)
    caregiver = completed.appointment.patient.caregiver
    assert isinstance(caregiver, Caregiver) and caregiver.mobile == "+447700900456"
