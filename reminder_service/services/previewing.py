"""Preview: every message an appointment's patient gets, when, and why any step is skipped."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select

from ..catalog import Catalog
from ..clock import Clock
from ..domain.appointment import Appointment, caregiver_copy
from ..domain.planning import PlannedReminder, Recipient, ReminderStatus
from ..domain.protocol import Channel
from ..domain.sms_caps import Text, give_way
from ..domain.timing import zone
from ..rendering import Renderer, RenderError
from ..store import records
from ..store.engine import reading
from ..store.field_limits import can_be_stored
from ..store.records import RowData
from ..store.tables import appointments, reminders
from . import patient_texts
from .follow_ups import STAFF_CHANNEL
from .materializing import CannotPlan, remaining_plan

SHOW_BODY = {ReminderStatus.PENDING, ReminderStatus.SENDING, ReminderStatus.SENT}


class NotFound(LookupError):
    pass


@dataclass(frozen=True)
class PreviewLine:
    step: str
    channel: str
    due_at: datetime | None  # in the patient's zone
    status: str
    reason: str
    subject: str | None
    body: str | None
    reminder_id: int | None
    recipient: str = Recipient.PATIENT.value  # or "caregiver": a copy of the patient's text

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "channel": self.channel,
            "due_at": self.due_at.isoformat() if self.due_at else None,
            "status": self.status,
            "reason": self.reason,
            "subject": self.subject,
            "body": self.body,
            "reminder_id": self.reminder_id,
            "recipient": self.recipient,
        }


@dataclass(frozen=True)
class Preview:
    appointment: Appointment
    protocol_id: str | None
    lines: list[PreviewLine]
    confirmed_at: datetime | None = None  # the patient replied 1
    new_time_requested_at: datetime | None = None  # the patient replied 2


class PreviewService:
    def __init__(self, engine: Engine, catalog: Catalog, renderer: Renderer, clock: Clock) -> None:
        self._engine = engine
        self._catalog = catalog
        self._renderer = renderer
        self._clock = clock

    def preview(self, external_id: str) -> Preview:
        if not can_be_stored("appointment_id", external_id):  # a NUL would fail on PostgreSQL
            raise NotFound(f"no appointment with id {external_id!r}")
        query = records.select_with_patients().where(appointments.c.external_id == external_id)
        with reading(self._engine) as conn:
            row = conn.execute(query).mappings().first()
            if row is None:
                raise NotFound(f"no appointment with id {external_id!r}")
            patient = records.patient_of(row)
            rows = (
                conn.execute(
                    select(reminders)
                    .where(reminders.c.appointment_id == row["id"])
                    .order_by(reminders.c.due_at, reminders.c.id)
                )
                .mappings()
                .all()
            )
            elsewhere = self._elsewhere(conn, row)
        appointment = records.appointment_from_row(row, patient)
        lines = [self._line(r, appointment, row) for r in rows]
        lines.extend(self._later_lines(appointment, row, patient))
        lines = self._forecast_caps(lines, appointment, row, elsewhere)
        lines.extend(self._disabled_steps(row["protocol_id"]))
        return Preview(
            appointment,
            row["protocol_id"],
            lines,
            row["confirmed_at"],
            row["new_time_requested_at"],
        )

    def _line(self, reminder: RowData, appointment: Appointment, stored: RowData) -> PreviewLine:
        status = ReminderStatus(reminder["status"])
        subject = body = None
        reason = reminder["reason"]
        if reminder["channel"] == STAFF_CHANNEL:
            # To the clinic, not the patient: what it reports, never a patient's message.
            reason = f"alert to clinic staff: {reminder['alert']}"
        elif status in SHOW_BODY:
            try:
                subject, body = self._render(reminder, appointment, stored)
            except RenderError as exc:
                reason = f"{reason}; cannot render: {exc}"
        recipient = reminder["recipient"]
        if body is not None and recipient == Recipient.CAREGIVER.value:
            body = caregiver_copy(body, appointment.patient)
        tz = zone(appointment.patient.timezone)
        return PreviewLine(
            step=reminder["step_id"],
            channel=reminder["channel"],
            due_at=(reminder["sent_at"] or reminder["due_at"]).astimezone(tz),
            status=status.value,
            reason=reason,
            subject=subject,
            body=body,
            reminder_id=reminder["id"],
            recipient=recipient,
        )

    def _elsewhere(self, conn: Connection, stored: RowData) -> list[Text]:
        """The patient's texts for their other appointments: sent lately, or still to come."""
        now, patient, itself = self._clock(), stored["patient_id"], stored["id"]
        history = patient_texts.sms_history(conn, {patient}, now, except_appointment=itself)
        texts = [Text(("sent", i), at, sent=True) for i, at in enumerate(history[patient])]
        for other, row in patient_texts.booked_appointments(conn, {patient}, now)[patient]:
            if row["id"] != itself:
                texts.extend(patient_texts.texts_to_come(other, row, self._catalog, now))
        return texts

    def _forecast_caps(
        self,
        lines: list[PreviewLine],
        appointment: Appointment,
        stored: RowData,
        elsewhere: list[Text],
    ) -> list[PreviewLine]:
        """Mark the pending texts expected to give way to the SMS caps (decided for good just
        before each is sent, against what was sent by then), counting the patient's texts for
        their other appointments too."""
        clinic = self._catalog.clinics.get(appointment.clinic_id)
        protocol = self._catalog.protocol_or_none(stored["protocol_id"])
        if clinic is None or protocol is None:
            return lines
        texts = list(elsewhere)
        for index, line in enumerate(lines):
            if line.channel != Channel.SMS.value or line.due_at is None:
                continue
            if line.recipient != Recipient.PATIENT.value:
                continue  # the caps are the patient's
            if line.status == ReminderStatus.SENT.value:
                texts.append(Text(index, line.due_at, sent=True))
            elif line.status == ReminderStatus.PENDING.value:
                step = protocol.step_or_none(line.step)
                texts.append(Text(index, line.due_at, step.sms_priority if step else 1))
        capped = give_way(texts, clinic.sms_caps, zone(appointment.patient.timezone))
        note = f"; expected to give way to the SMS caps ({clinic.sms_caps.describe()}): by email"
        return [
            replace(line, reason=line.reason + note) if index in capped else line
            for index, line in enumerate(lines)
        ]

    def _later_lines(
        self, appointment: Appointment, stored: RowData, patient: RowData
    ) -> list[PreviewLine]:
        """The rest of the plan, beyond the planning horizon: not stored yet, computed the same
        way the materializer will store it."""
        try:
            later = remaining_plan(stored, patient, self._catalog).reminders
        except CannotPlan as exc:
            return [PreviewLine("*", "*", None, "unknown", f"cannot plan: {exc}", None, None, None)]
        return [self._planned_line(p, appointment, stored) for p in later]

    def _planned_line(
        self, planned: PlannedReminder, appointment: Appointment, stored: RowData
    ) -> PreviewLine:
        """A reminder not stored yet, shown as its row will be."""
        row = {
            "id": None, "step_id": planned.step_id, "channel": planned.channel.value,
            "template": planned.template, "status": planned.status.value,
            "reason": planned.reason, "due_at": planned.due_at, "sent_at": None, "alert": None,
            "recipient": planned.recipient.value,
        }  # fmt: skip
        return self._line(row, appointment, stored)

    def _render(
        self, reminder: RowData, appointment: Appointment, stored: RowData
    ) -> tuple[str | None, str | None]:
        clinic = self._catalog.clinics.get(appointment.clinic_id)
        if clinic is None:
            raise RenderError(f"unknown clinic {appointment.clinic_id!r}")
        rescheduled = stored["scheduled_at"] != stored["booked_at"]
        message = self._renderer.render_for(
            stored["protocol_id"],
            reminder["template"],
            Channel(reminder["channel"]),
            appointment,
            clinic,
            rescheduled,
        )
        if message.channel is Channel.SMS:
            return None, message.sms
        return message.subject, message.text

    def _disabled_steps(self, protocol_id: str | None) -> list[PreviewLine]:
        if protocol_id is None:
            return []
        protocol = self._catalog.protocol(protocol_id)
        return [
            PreviewLine(
                step.id,
                rule.channel.value,
                None,
                "disabled",
                "step disabled in the protocol",
                None,
                None,
                None,
            )
            for step in protocol.steps
            if not step.enabled
            for rule in step.channels
        ]
