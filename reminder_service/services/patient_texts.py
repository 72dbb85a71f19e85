"""A patient's texts across all their appointments, for the SMS caps.

The caps are the patient's, not an appointment's: someone with a biopsy and a clinic visit in the
same week has one daily and one weekly allowance. So the dispatcher's decision (and preview's
forecast of it) weighs every text the patient was sent lately, whichever appointment it was for,
and the texts still to come of every appointment they have booked. Both gather them here and
decide with `domain.sending.decide`, so a preview cannot say other than what dispatch does.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ..catalog import Catalog
from ..domain.appointment import Appointment
from ..domain.clinic import Clinic
from ..domain.planning import PlannedReminder, Recipient, ReminderStatus, plan_reminders
from ..domain.protocol import Channel, Protocol, Step
from ..domain.reminder import text_key, text_of
from ..domain.sms_caps import PatientTexts, Text
from ..domain.sms_decision import Fallbacks
from ..rendering.renderer import Renderer
from ..store import appointments, records, reminders
from ..store.records import RowData
from ..store.reminders import StoredText

if TYPE_CHECKING:
    from sqlalchemy import Connection

WAITING = frozenset({ReminderStatus.PENDING.value, ReminderStatus.SENDING.value})

# The widest cap window (7 days), and a day more for the difference between time zones.
LOOKBACK = timedelta(days=8)


def booked_appointments(
    conn: Connection, patient_ids: set[int], now: datetime
) -> dict[int, list[tuple[Appointment, RowData]]]:
    """Per patient, the booked appointments that may still have texts to come (after-care
    follows the start by days, so those that started lately count too)."""
    booked: dict[int, list[tuple[Appointment, RowData]]] = defaultdict(list)
    for row in appointments.booked_of_patients(conn, patient_ids, since=now - LOOKBACK):
        patient = records.patient_of(row)
        booked[row["patient_id"]].append((records.appointment_from_row(row, patient), row))
    return booked


def texts_to_come(
    appointment: Appointment,
    stored: RowData,
    rows: list[StoredText],
    catalog: Catalog,
    now: datetime,
) -> list[Text]:
    """The appointment's SMS still to come: its stored rows waiting or in flight (due now at the
    earliest), then the texts of its plan after `now` that are not stored yet. Each is keyed
    (appointment row id, step, nominal time) and weighted by its step."""
    protocol = catalog.protocol_or_none(stored["protocol_id"])
    clinic = catalog.clinics.get(appointment.clinic_id)
    if protocol is None or clinic is None:
        return []
    texts = [
        text_of(protocol.step_or_none(r.step_id), stored["id"], r.step_id, r.nominal_at,
                max(r.due_at, now))
        for r in rows
        if r.status in WAITING
    ]  # fmt: skip
    known = {text_key(stored["id"], r.step_id, r.nominal_at) for r in rows}
    planned = plan_as_stored(appointment, stored, protocol, clinic)
    texts.extend(
        text_of(protocol.step_or_none(p.step_id), stored["id"], p.step_id, p.nominal_at, p.due_at)
        for p in planned
        if p.channel is Channel.SMS
        and p.recipient is Recipient.PATIENT
        and p.status is ReminderStatus.PENDING
        and p.due_at > now
        and text_key(stored["id"], p.step_id, p.nominal_at) not in known
    )
    return texts


def plan_as_stored(
    appointment: Appointment, stored: RowData, protocol: Protocol, clinic: Clinic
) -> list[PlannedReminder]:
    """The appointment's whole plan as it was made: from the moment it was planned and the
    moment its time was set (a stored appointment row), so it matches the rows stored."""
    return plan_reminders(
        appointment,
        protocol,
        clinic.send_window,
        stored["planned_at"] or stored["updated_at"],
        stored["scheduled_at"],
    )


def load(conn: Connection, patient_ids: set[int], catalog: Catalog, now: datetime) -> PatientTexts:
    """The texts the caps weigh for each of these patients, as of `now`."""
    # The widest cap window reaches back LOOKBACK at most.
    history = reminders.sms_sent_since(conn, patient_ids, now - LOOKBACK)
    booked = booked_appointments(conn, patient_ids, now)
    rows = reminders.patient_sms(conn, {row["id"] for b in booked.values() for _, row in b})
    to_come = {
        patient: [
            text
            for appointment, row in of_patient
            for text in texts_to_come(appointment, row, rows.get(row["id"], []), catalog, now)
        ]
        for patient, of_patient in booked.items()
    }
    return PatientTexts(history, to_come)


def fallbacks(
    step: Step | None,
    appointment: Appointment,
    protocol_id: str | None,
    renderer: Renderer,
    language: str,
    *,
    email_opted_out: bool,
) -> Fallbacks:
    """Where the step's text can go if it gives way to the caps, for this patient: by email
    when they have an address still subscribed and the step goes by email (its own email, or
    the fallback follow_ups makes), or as a merge line when its template has one."""
    if step is None:
        return Fallbacks(email=False, merge_line=False)
    patient = appointment.patient
    emails = step.email_fallback or any(
        rule.channel is Channel.EMAIL and rule.condition.holds(appointment)
        for rule in step.channels
    )
    merge = protocol_id is not None and renderer.has_merge_line(
        protocol_id, step.template, patient.language, language
    )
    email = bool(patient.email) and not email_opted_out and emails
    return Fallbacks(email, merge, step.over_cap == "merge")
