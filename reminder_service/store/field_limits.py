"""How long each stored text may be, read from the table definitions (`tables.py`), so every
importer checks the numbers the database enforces: PostgreSQL refuses an over-long VARCHAR (and
with it the whole import's transaction), while SQLite would store it silently.

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
}


def too_long(name: str, value: str | None) -> str:
    """Why `value` cannot be stored as field `name`, or "". Never quotes the value."""
    limit = MAX_LENGTH[name]
    if value is None or len(value) <= limit:
        return ""
    return f"is {len(value):,} characters long; at most {limit} are stored"


def overlong(values: Mapping[str, str | None]) -> list[tuple[str, str]]:
    """(field, reason) for each value, by field name, that its column cannot hold."""
    found = []
    for name, value in values.items():
        reason = too_long(name, value)
        if reason:
            found.append((name, reason))
    return found


def patient_fields(patient: Patient) -> dict[str, str | None]:
    return {
        "patient_id": patient.external_id,
        "first_name": patient.first_name,
        "last_name": patient.last_name,
        "mobile": patient.mobile,
        "email": patient.email,
        "language": patient.language,
        "timezone": patient.timezone,
        "sms_consent": patient.sms_consent,
    }


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
