"""Preview: every message an appointment's patient gets, when, and why any step is skipped."""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..catalog import Catalog
from ..clock import Clock
from ..domain.appointment import Appointment, caregiver_copy
from ..domain.confirmation import Confirmation, confirmation_deadline
from ..domain.planning import PlannedReminder, Recipient, ReminderStatus
from ..domain.protocol import Channel
from ..domain.reminder import Reminder, StoredAppointment, text_of
from ..domain.retries import RetryPolicy
from ..domain.sending import Circumstances, Decision, Defer, Merge, PatientCaps, Send, Skip, decide
from ..domain.sms_caps import Text
from ..domain.sms_decision import SmsOutcome
from ..domain.timing import zone
from ..rendering.renderer import Renderer, RenderError
from ..store import appointments, opt_outs, records, reminders
from ..store.engine import reading
from ..store.field_limits import can_be_stored
from ..store.records import RowData
from ..store.reminders import reminder_from_row, stored_appointment
from ..store.tables import STAFF_CHANNEL
from . import patient_texts
from .materializing import CannotPlan, remaining_plan

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

SHOW_BODY = {ReminderStatus.PENDING, ReminderStatus.SENDING, ReminderStatus.SENT}
MAX_ATTEMPTS = RetryPolicy().max_attempts  # the dispatcher's backstop
# A line, and the reminder it shows (stored, or planned and not stored yet; None: neither).
Entry = tuple["PreviewLine", Reminder | None]


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
    def __init__(
        self,
        engine: Engine,
        catalog: Catalog,
        renderer: Renderer,
        clock: Clock,
        max_attempts: int = MAX_ATTEMPTS,
    ) -> None:
        """`max_attempts` is the dispatcher's: preview decides as it does."""
        self._engine = engine
        self._catalog = catalog
        self._renderer = renderer
        self._clock = clock
        self._max_attempts = max_attempts

    def preview(self, external_id: str) -> Preview:
        if not can_be_stored("appointment_id", external_id):  # a NUL would fail on PostgreSQL
            raise NotFound(f"no appointment with id {external_id!r}")
        with reading(self._engine) as conn:
            row = appointments.by_external_id(conn, external_id)
            if row is None:
                raise NotFound(f"no appointment with id {external_id!r}")
            patient = records.patient_of(row)
            rows = reminders.of_appointment(conn, row["id"])
            outlook = self._outlook(conn, row)
        stored = stored_appointment(row)
        appointment = stored.appointment
        entries: list[Entry] = [
            (self._line(r, appointment, row), reminder_from_row(r)) for r in rows
        ]
        entries.extend(self._later_lines(stored, row, patient))
        lines = self._forecast_caps(entries, stored, outlook)
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
        return patient_texts.load(conn, {patient}, self._catalog, self._clock()).of(patient)

    def _forecast_caps(
        self, entries: list[Entry], stored: StoredAppointment, outlook: list[Text]
    ) -> list[PreviewLine]:
        """What the SMS caps will make of each pending text: the dispatcher's own decision
        (`domain.sending.decide`), made as it will be made just before each is sent, over the
        patient's texts sent by then and still to come."""
        lines = [line for line, _ in entries]
        appointment = stored.appointment
        clinic = self._catalog.clinics.get(appointment.clinic_id)
        protocol = self._catalog.protocol_or_none(stored.protocol_id)
        if clinic is None or protocol is None:
            return lines
        now = self._clock()
        email = appointment.patient.email
        with reading(self._engine) as conn:
            email_opted_out = bool(email) and bool(opt_outs.opted_out_emails(conn, [email or ""]))
        texts = {text.key: text for text in outlook}
        weighed: dict[int, Reminder] = {}
        for index, (line, reminder) in enumerate(entries):
            pending = line.status == ReminderStatus.PENDING.value
            if line.channel != Channel.SMS.value or not pending or reminder is None:
                continue
            if reminder.recipient is not Recipient.PATIENT:
                continue  # the caps are the patient's; a copy follows its own rules
            key = reminder.text_key
            if key not in texts:  # due already, not sent yet: the dispatcher weighs it as now
                at = max(line.due_at or now, now)
                step = protocol.step_or_none(reminder.step_id)
                texts[key] = text_of(step, stored.id, reminder.step_id, reminder.nominal_at, at)
            weighed[index] = reminder
        for index, reminder in weighed.items():
            step = protocol.step_or_none(reminder.step_id)
            routes = patient_texts.fallbacks(
                step, appointment, stored.protocol_id, self._renderer, clinic.default_language,
                email_opted_out=email_opted_out,
            )  # fmt: skip
            key = reminder.text_key
            caps = PatientCaps([t for k, t in texts.items() if k != key], routes)
            given = Circumstances(clinic, step, self._max_attempts, caps=caps)
            decision = _when_sent(reminder, stored, texts[key].at, given)
            lines[index] = _with_decision(lines[index], decision)
        return lines

    def _later_lines(
        self, stored: StoredAppointment, row: RowData, patient: RowData
    ) -> list[Entry]:
        """The rest of the plan, beyond the planning horizon: not stored yet, computed the same
        way the materializer will store it."""
        try:
            later = remaining_plan(row, patient, self._catalog).reminders
        except CannotPlan as exc:
            line = PreviewLine("*", "*", None, "unknown", f"cannot plan: {exc}", None, None, None)
            return [(line, None)]
        return [
            (self._planned_line(p, stored.appointment, row), _planned(p, stored)) for p in later
        ]

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
        message = self._renderer.render_for(
            stored["protocol_id"],
            reminder["template"],
            Channel(reminder["channel"]),
            appointment,
            clinic,
            stored_appointment(stored).rescheduled,
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


def _planned(planned: PlannedReminder, stored: StoredAppointment) -> Reminder:
    """A reminder of the plan not stored yet, as the dispatcher will claim it."""
    return Reminder(
        id=0, appointment_id=stored.id, appointment_version=stored.version,
        step_id=planned.step_id, channel=planned.channel, recipient=planned.recipient,
        template=planned.template, status=planned.status, reason=planned.reason,
        nominal_at=planned.nominal_at, due_at=planned.due_at, not_after=planned.not_after,
        attempts=0,
    )  # fmt: skip


def _when_sent(
    reminder: Reminder, stored: StoredAppointment, at: datetime, given: Circumstances
) -> Decision:
    """The dispatcher's decision when it claims the reminder at `at` (a claim is an attempt),
    or when the send window it waits for opens."""
    claimed = replace(reminder, attempts=reminder.attempts + 1)
    decision = decide(claimed, stored, at, given)
    for _ in range(3):  # the window opens within a day: deferred once, then decided
        if not isinstance(decision, Defer):
            break
        decision = decide(claimed, stored, decision.until, given)
    return decision


def _with_decision(line: PreviewLine, decision: Decision) -> PreviewLine:
    """The line with what the caps will make of it, in the dispatcher's own words."""
    if isinstance(decision, Send) and decision.caps is not None:
        note = f"; {decision.note}" if decision.note else ""
    elif isinstance(decision, Skip) and decision.caps is SmsOutcome.ALERT_STAFF:
        note = f"; expected to give way to the SMS caps: {decision.reason}; staff will be told"
    elif isinstance(decision, Skip | Merge) and decision.caps is not None:
        note = f"; expected to give way to the SMS caps: {decision.reason}"
    else:
        note = ""  # not for the caps to say
    return replace(line, reason=line.reason + note) if note else line


def confirmation_state(catalog: Catalog, row: RowData, appointment: Appointment) -> Confirmation:
    """The confirmation state of a stored appointment (a `select_with_patients` row)."""
    protocol = catalog.protocol_or_none(row["protocol_id"])
    rule = protocol.confirmation if protocol else None
    deadline = confirmation_deadline(rule, appointment, row["scheduled_at"]) if rule else None
    return Confirmation(
        deadline, row["confirmed_at"], row["confirmed_by"], row["confirmation_alerted_at"]
    )
