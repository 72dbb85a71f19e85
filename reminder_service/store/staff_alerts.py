"""Staff alerts and the other follow-ups: reminders rows made after the plan, when a message
cannot reach the patient (a fallback email, or the clinic's staff told), and what deciding on
them reads."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select

from ..domain.appointment import AppointmentStatus
from ..domain.planning import Recipient, ReminderStatus
from .tables import STAFF_CHANNEL, appointments, patients, reminders

# A step's text of an appointment: (appointment id, step id, nominal moment).
StepKey = tuple[int, str, datetime]


@dataclass(frozen=True, slots=True)
class StepRow:
    """One channel of a step, as follow-ups weigh it."""

    id: int | None  # None: a follow-up planned a moment ago, not stored yet
    channel: str  # as stored: "sms", "email", or "staff"
    status: str
    reason: str | None
    delivery_status: str | None = None  # what the provider reported, if anything
    delivery_error: str | None = None


def add(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    """Store follow-up rows (`services.follow_ups.staff_alert_row`, or a fallback email); none:
    nothing stored."""
    if rows:
        conn.execute(insert(reminders), list(rows))


def told(conn: Connection, appointment_ids: Sequence[int]) -> set[tuple[int, str]]:
    """(appointment, alert) of the staff alerts already made for these appointments."""
    if not appointment_ids:
        return set()
    query = (
        select(reminders.c.appointment_id, reminders.c.alert)
        .where(reminders.c.appointment_id.in_(appointment_ids))
        .where(reminders.c.channel == STAFF_CHANNEL)
    )
    return {(row.appointment_id, row.alert) for row in conn.execute(query)}


def steps_of(conn: Connection, appointment_ids: set[int]) -> dict[StepKey, list[StepRow]]:
    """The patient's channels of each step of these appointments (not cancelled ones, nor the
    caregiver's copies), with the staff alerts made for it."""
    query = (
        select(
            reminders.c.id,
            reminders.c.appointment_id,
            reminders.c.step_id,
            reminders.c.channel,
            reminders.c.nominal_at,
            reminders.c.status,
            reminders.c.reason,
            reminders.c.delivery_status,
            reminders.c.delivery_error,
        )
        .where(reminders.c.appointment_id.in_(appointment_ids))
        .where(reminders.c.status != ReminderStatus.CANCELLED.value)
        .where(reminders.c.recipient != Recipient.CAREGIVER.value)  # not the patient's channels
    )
    grouped: dict[StepKey, list[StepRow]] = defaultdict(list)
    for row in conn.execute(query).mappings():
        grouped[(row["appointment_id"], row["step_id"], row["nominal_at"])].append(
            StepRow(
                row["id"],
                row["channel"],
                row["status"],
                row["reason"],
                row["delivery_status"],
                row["delivery_error"],
            )
        )
    return grouped


def booked_contacts(
    conn: Connection, appointment_ids: set[int]
) -> dict[int, tuple[str | None, str | None]]:
    """Booked appointments among these: id -> (the patient's email, the protocol id)."""
    query = (
        select(appointments.c.id, patients.c.email, appointments.c.protocol_id)
        .join(patients, patients.c.id == appointments.c.patient_id)
        .where(appointments.c.id.in_(appointment_ids))
        .where(appointments.c.status == AppointmentStatus.BOOKED.value)
    )
    return {row.id: (row.email, row.protocol_id) for row in conn.execute(query)}
