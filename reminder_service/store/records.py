"""Rows <-> domain objects, kept in one place so every query agrees on the mapping."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from sqlalchemy import Select, select

from ..domain.appointment import (
    CAREGIVER_UNSAID,
    FLAG_NAMES,
    Appointment,
    AppointmentStatus,
    Caregiver,
    Patient,
    Tristate,
)
from ..domain.planning import Recipient, ReminderStatus
from ..domain.protocol import Channel
from ..domain.reconcile import ExistingReminder
from .tables import appointments, patients

# A row as SQLAlchemy returns it (keys may be names or columns).
RowData = Mapping[Any, Any]

FLAG_COLUMNS = FLAG_NAMES  # one column per flag, named as the flag
# The caregiver's columns on patients, as Caregiver's fields prefixed "caregiver_".
CAREGIVER_COLUMNS = tuple(f"caregiver_{f.name}" for f in fields(Caregiver))
# patients' columns: Patient's fields (the caregiver spread over its own columns).
PATIENT_COLUMNS = (
    *(f.name for f in fields(Patient) if f.name != "caregiver"),
    *CAREGIVER_COLUMNS,
)


def select_with_patients() -> Select[Any]:
    """Appointments joined to their patients, each patient column labelled `p_<column>` (see
    `patient_of`), so one query loads both."""
    labelled = [patients.c[c].label(f"p_{c}") for c in PATIENT_COLUMNS]
    return select(appointments, *labelled).join(
        patients, patients.c.id == appointments.c.patient_id
    )


def patient_of(row: RowData) -> dict[str, Any]:
    """The patient's columns of a `select_with_patients` row."""
    return {c: row[f"p_{c}"] for c in PATIENT_COLUMNS}


def patient_values(patient: Patient) -> dict[str, Any]:
    return {
        "external_id": patient.external_id,
        "first_name": patient.first_name,
        "last_name": patient.last_name,
        "mobile": patient.mobile,
        "email": patient.email,
        "language": patient.language,
        "timezone": patient.timezone,
        "sms_consent": patient.sms_consent,
        "deceased": patient.deceased,
        "do_not_contact": patient.do_not_contact,
        **caregiver_values(patient.known_caregiver),
    }


def caregiver_values(caregiver: Caregiver | None) -> dict[str, Any]:
    """The caregiver's columns: all empty when there is none (patient_values gives these for a
    source that said nothing too: see `caregiver_said`)."""
    if caregiver is None:
        return {
            "caregiver_name": None,
            "caregiver_mobile": None,
            "caregiver_relationship": None,
            "caregiver_sms_consent": False,
            "caregiver_copies": False,
        }
    return {
        "caregiver_name": caregiver.name,
        "caregiver_mobile": caregiver.mobile,
        "caregiver_relationship": caregiver.relationship,
        # A consent the source could not give is resolved when importing; unresolved it is no.
        "caregiver_sms_consent": bool(caregiver.sms_consent),
        "caregiver_copies": bool(caregiver.copies),
    }


def caregiver_said(patient: Patient) -> bool:
    """Whether the source said anything about a caregiver (one, or none): if not, the stored
    caregiver stays as it is."""
    return patient.caregiver is not CAREGIVER_UNSAID


def caregiver_from_row(patient: RowData) -> Caregiver | None:
    if patient["caregiver_name"] is None:
        return None
    return Caregiver(
        name=patient["caregiver_name"],
        mobile=patient["caregiver_mobile"],
        relationship=patient["caregiver_relationship"] or "",
        sms_consent=bool(patient["caregiver_sms_consent"]),
        copies=bool(patient["caregiver_copies"]),
    )


def appointment_values(appointment: Appointment) -> dict[str, Any]:
    values = {
        "external_id": appointment.external_id,
        "clinic_id": appointment.clinic_id,
        "procedure": appointment.procedure,
        "start_at": appointment.start,
        "duration_minutes": appointment.duration_minutes,
        "location": appointment.location,
        "status": appointment.status.value,
        "fingerprint": appointment.fingerprint(),
    }
    values.update({flag: getattr(appointment, flag).value for flag in FLAG_COLUMNS})
    return values


def patient_from_row(patient: RowData) -> Patient:
    return Patient(
        external_id=patient["external_id"],
        first_name=patient["first_name"],
        last_name=patient["last_name"],
        mobile=patient["mobile"],
        email=patient["email"],
        language=patient["language"],
        timezone=patient["timezone"],
        sms_consent=patient["sms_consent"],
        deceased=bool(patient["deceased"]),
        do_not_contact=bool(patient["do_not_contact"]),
        caregiver=caregiver_from_row(patient),
    )


def appointment_from_row(row: RowData, patient: RowData) -> Appointment:
    return Appointment(
        external_id=row["external_id"],
        clinic_id=row["clinic_id"],
        patient=patient_from_row(patient),
        procedure=row["procedure"],
        start=row["start_at"],
        duration_minutes=row["duration_minutes"],
        location=row["location"],
        status=AppointmentStatus(row["status"]),
        **{flag: Tristate(row[flag]) for flag in FLAG_COLUMNS},
    )


def existing_reminder(row: RowData) -> ExistingReminder:
    return ExistingReminder(
        id=row["id"],
        step_id=row["step_id"],
        channel=Channel(row["channel"]),
        nominal_at=row["nominal_at"],
        status=ReminderStatus(row["status"]),
        recipient=Recipient(row["recipient"]),
        dispatched=row["attempts"] > 0,
    )
