"""A patient's texts across all their appointments, for the SMS caps.

The caps are the patient's, not an appointment's: someone with a biopsy and a clinic visit in the
same week has one daily and one weekly allowance. So the dispatcher's decision (and preview's
forecast of it) weighs every text the patient was sent lately, whichever appointment it was for,
and the texts still to come of every appointment they have booked.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable
from datetime import datetime, timedelta

from sqlalchemy import Connection, select

from ..catalog import Catalog
from ..domain.appointment import Appointment, AppointmentStatus
from ..domain.planning import Recipient, ReminderStatus, plan_reminders
from ..domain.protocol import Channel
from ..domain.sms_caps import Text
from ..store import records
from ..store.records import RowData
from ..store.tables import appointments, reminders

# The widest cap window (7 days), and a day more for the difference between time zones.
LOOKBACK = timedelta(days=8)


def sms_history(
    conn: Connection, patient_ids: set[int], now: datetime, *, except_appointment: int = 0
) -> dict[int, list[datetime]]:
    """When each patient was texted, as far back as the widest cap window reaches."""
    query = (
        select(appointments.c.patient_id, reminders.c.sent_at)
        .join(appointments, appointments.c.id == reminders.c.appointment_id)
        .where(appointments.c.patient_id.in_(patient_ids))
        .where(appointments.c.id != except_appointment)
        .where(reminders.c.channel == Channel.SMS.value)
        .where(reminders.c.recipient == Recipient.PATIENT.value)  # copies went to the caregiver
        .where(reminders.c.status == ReminderStatus.SENT.value)
        .where(reminders.c.sent_at > now - LOOKBACK)
    )
    history: dict[int, list[datetime]] = defaultdict(list)
    for patient_id, sent_at in conn.execute(query).tuples():
        history[patient_id].append(sent_at)
    return history


def booked_appointments(
    conn: Connection, patient_ids: set[int], now: datetime
) -> dict[int, list[tuple[Appointment, RowData]]]:
    """Per patient, the booked appointments that may still have texts to come (after-care
    follows the start by days, so those that started lately count too)."""
    query = (
        records.select_with_patients()
        .where(appointments.c.patient_id.in_(patient_ids))
        .where(appointments.c.status == AppointmentStatus.BOOKED.value)
        .where(appointments.c.start_at > now - LOOKBACK)
    )
    booked: dict[int, list[tuple[Appointment, RowData]]] = defaultdict(list)
    for row in conn.execute(query).mappings():
        patient = records.patient_of(row)
        booked[row["patient_id"]].append((records.appointment_from_row(row, patient), row))
    return booked


def texts_to_come(
    appointment: Appointment, stored: RowData, catalog: Catalog, now: datetime
) -> list[Text]:
    """The appointment's SMS due after `now` in its plan, each keyed (appointment row id, step,
    nominal time) and weighted by its step's `sms_priority`."""
    protocol = catalog.protocol_or_none(stored["protocol_id"])
    clinic = catalog.clinics.get(appointment.clinic_id)
    if protocol is None or clinic is None:
        return []
    planned = plan_reminders(
        appointment,
        protocol,
        clinic.send_window,
        stored["planned_at"] or stored["updated_at"],
        stored["scheduled_at"],
    )
    return [
        Text(
            text_key(stored, p.step_id, p.nominal_at),
            p.due_at,
            protocol.step(p.step_id).sms_priority,
        )
        for p in planned
        if p.channel is Channel.SMS
        and p.recipient is Recipient.PATIENT
        and p.status is ReminderStatus.PENDING
        and p.due_at > now
    ]


def text_key(stored: RowData, step_id: str, nominal_at: datetime) -> Hashable:
    return (stored["id"], step_id, nominal_at)
