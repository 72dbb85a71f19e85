"""What each stored text may hold: its length, read from the table definitions (`tables.py`),
and no NUL character. Every importer checks what the database enforces: PostgreSQL refuses an
over-long VARCHAR or any text holding 0x00 (and with it the whole import's transaction), while
SQLite would store either silently. Schema metadata only: no database is reached here.

Fields are named as the CSV layout and the JSON API name them; each importer says where the
value came from in its own terms (a CSV column, an HL7 segment-field, a FHIR element).
"""

from __future__ import annotations

from collections.abc import Mapping

from sqlalchemy import Column, String

from ..domain.appointment import Appointment, Cancellation, Patient
from .tables import appointments, patients


def _length(column: Column[str]) -> int:
    assert isinstance(column.type, String) and column.type.length, column
    return column.type.length


# Field -> the most characters its column holds.
MAX_LENGTH: Mapping[str, int] = {
    "appointment_id": _length(appointments.c.external_id),
    "clinic": _length(appointments.c.clinic_id),
    "procedure": _length(appointments.c.procedure),
    "location": _length(appointments.c.location),
    "patient_id": _length(patients.c.external_id),
    "first_name": _length(patients.c.first_name),
    "last_name": _length(patients.c.last_name),
    "mobile": _length(patients.c.mobile),
    "email": _length(patients.c.email),
    "language": _length(patients.c.language),
    "timezone": _length(patients.c.timezone),
    "sms_consent": _length(patients.c.sms_consent),
    "fhir_id": _length(patients.c.fhir_id),
    "caregiver_name": _length(patients.c.caregiver_name),
    "caregiver_mobile": _length(patients.c.caregiver_mobile),
    "caregiver_relationship": _length(patients.c.caregiver_relationship),
}


NUL_REASON = "holds a NUL character (0x00), which no text column can store"


def field_problem(name: str, value: str | None) -> str:
    """Why `value` cannot be stored as field `name`, or "". Never quotes the value."""
    limit = MAX_LENGTH[name]
    if value is None:
        return ""
    if len(value) > limit:
        return f"is {len(value):,} characters long; at most {limit} are stored"
    return NUL_REASON if "\x00" in value else ""


def can_be_stored(name: str, value: str) -> bool:
    """Whether a value could be in field `name`'s column: one that could not is never found
    there, so a lookup by it is answered "not found" without asking the database."""
    return not field_problem(name, value)


def unstorable(values: Mapping[str, str | None]) -> list[tuple[str, str]]:
    """(field, reason) for each value, by field name, that its column cannot store."""
    found = []
    for name, value in values.items():
        reason = field_problem(name, value)
        if reason:
            found.append((name, reason))
    return found


def patient_fields(patient: Patient) -> dict[str, str | None]:
    fields: dict[str, str | None] = {
        "patient_id": patient.external_id,
        "first_name": patient.first_name,
        "last_name": patient.last_name,
        "mobile": patient.mobile,
        "email": patient.email,
        "language": patient.language,
        "timezone": patient.timezone,
        "sms_consent": patient.sms_consent,
    }
    caregiver = patient.known_caregiver
    if caregiver is not None:
        fields["caregiver_name"] = caregiver.name
        fields["caregiver_mobile"] = caregiver.mobile
        fields["caregiver_relationship"] = caregiver.relationship
    return fields


def change_fields(change: Appointment | Cancellation) -> dict[str, str | None]:
    """Every stored text of an appointment (with its patient), or a cancellation's id."""
    if isinstance(change, Cancellation):
        return {"appointment_id": change.external_id}
    return {
        "appointment_id": change.external_id,
        "clinic": change.clinic_id,
        "procedure": change.procedure,
        "location": change.location,
        **patient_fields(change.patient),
    }
