"""Preview: every message an appointment's patient gets, when, and why any step is skipped."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select

from ..catalog import Catalog
from ..clock import Clock
from ..domain.appointment import Appointment, caregiver_copy
from ..domain.confirmation import Confirmation, confirmation_deadline
from ..domain.planning import PlannedReminder, Recipient, ReminderStatus
from ..domain.protocol import Channel
from ..domain.sms_caps import Text
from ..domain.sms_decision import Fallbacks, SmsDecision, SmsOutcome, decide
from ..domain.timing import zone
from ..rendering.renderer import Renderer, RenderError
from ..store import records
from ..store.engine import reading
from ..store.field_limits import can_be_stored
from ..store.records import RowData
from ..store.tables import STAFF_CHANNEL, appointments, reminders
from . import patient_texts
from .email_opt_outs import opted_out_emails
from .materializing import CannotPlan, remaining_plan
from .patient_texts import PatientTexts

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
    nominal_at: datetime | None = None  # the protocol's moment: with the step, which text it is
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
    confirmed_at: datetime | None = None  # the patient replied 1 (or staff confirmed)
    new_time_requested_at: datetime | None = None  # the patient replied 2
    confirmation: Confirmation | None = None


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
            outlook = self._outlook(conn, row)
        appointment = records.appointment_from_row(row, patient)
        lines = [self._line(r, appointment, row) for r in rows]
        lines.extend(self._later_lines(appointment, row, patient))
        lines = self._forecast_caps(lines, appointment, row, outlook)
        lines.extend(self._disabled_steps(row["protocol_id"]))
        return Preview(
            appointment,
            row["protocol_id"],
            lines,
            row["confirmed_at"],
            row["new_time_requested_at"],
            confirmation_state(self._catalog, row, appointment),
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
            nominal_at=reminder["nominal_at"],
            recipient=recipient,
        )

    def _outlook(self, conn: Connection, stored: RowData) -> list[Text]:
        """The patient's texts, for every appointment they have: sent lately, or to come."""
        patient = stored["patient_id"]
        return PatientTexts.load(conn, {patient}, self._catalog, self._clock()).of(patient)

    def _forecast_caps(
        self,
        lines: list[PreviewLine],
        appointment: Appointment,
        stored: RowData,
        outlook: list[Text],
    ) -> list[PreviewLine]:
        """What the SMS caps will make of each pending text, decided as the dispatcher decides
        (for good just before each is sent, against what was sent by then)."""
        clinic = self._catalog.clinics.get(appointment.clinic_id)
        protocol = self._catalog.protocol_or_none(stored["protocol_id"])
        if clinic is None or protocol is None:
            return lines
        now = self._clock()
        email = appointment.patient.email
        with reading(self._engine) as conn:
            email_opted_out = bool(email) and bool(opted_out_emails(conn, [email or ""]))
        texts = {text.key: text for text in outlook}
        asked: dict[Hashable, Fallbacks] = {}
        keys: dict[int, Hashable] = {}
        for index, line in enumerate(lines):
            pending = line.status == ReminderStatus.PENDING.value
            if line.channel != Channel.SMS.value or not pending or line.nominal_at is None:
                continue
            if line.recipient != Recipient.PATIENT.value:
                continue  # the caps are the patient's; a copy follows its own rules
            step = protocol.step_or_none(line.step)
            key = patient_texts.text_key(stored, line.step, line.nominal_at)
            if key not in texts:  # due already, not sent yet: the dispatcher weighs it as now
                at = max(line.due_at or now, now)
                texts[key] = patient_texts.text_of(step, stored, line.step, line.nominal_at, at)
            keys[index] = key
            asked[key] = patient_texts.fallbacks(
                step, appointment, stored, self._renderer, clinic.default_language,
                email_opted_out=email_opted_out,
            )  # fmt: skip
        tz = zone(appointment.patient.timezone)
        decisions = decide(list(texts.values()), clinic.sms_caps, tz, asked)
        return [
            _with_decision(line, decisions[keys[index]]) if index in keys else line
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
            "nominal_at": planned.nominal_at,
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


def _with_decision(line: PreviewLine, decision: SmsDecision) -> PreviewLine:
    """The line with what the caps will make of it, in the dispatcher's own words."""
    if decision.outcome is SmsOutcome.SEND:
        note = f"; {decision.reason}" if decision.reason else ""
    elif decision.outcome is SmsOutcome.ALERT_STAFF:
        note = f"; expected to give way to the SMS caps: {decision.reason}; staff will be told"
    else:
        note = f"; expected to give way to the SMS caps: {decision.reason}"
    return replace(line, reason=line.reason + note) if note else line


def confirmation_state(catalog: Catalog, row: RowData, appointment: Appointment) -> Confirmation:
    """The confirmation state of a stored appointment (a `select_with_patients` row)."""
    protocol = catalog.protocol_or_none(row["protocol_id"])
    rule = protocol.confirmation if protocol else None
    deadline = confirmation_deadline(rule, appointment, row["scheduled_at"]) if rule else None
    return Confirmation(
        deadline, row["confirmed_at"], row["confirmed_by"], row["confirmation_alerted_at"]
    )
