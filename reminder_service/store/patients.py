"""Patients as single lookups (imports write them in bulk through store/appointments)."""

from __future__ import annotations

from sqlalchemy import Engine, select

from .engine import reading
from .tables import patients


def email_of(engine: Engine, patient_id: int) -> str | None:
    """The address on record for the patient (None: no such patient, or no address)."""
    with reading(engine) as conn:
        email: str | None = conn.execute(
            select(patients.c.email).where(patients.c.id == patient_id)
        ).scalar()
    return email
