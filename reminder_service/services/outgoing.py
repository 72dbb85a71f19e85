"""The messages the dispatcher sends: a reminder rendered for its channel and recipient.

A text carries the lines of skipped texts merged into it; a caregiver's copy says whose it is;
an email has the clinic's From address, the appointment as a calendar entry when its step says
so, and List-Unsubscribe links for the patient. A staff alert names the appointment and the
reason, never a patient's message.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime

from ..catalog import Catalog
from ..channels.base import CalendarEvent, ListUnsubscribe, OutgoingEmail, OutgoingSms, SmsSender
from ..channels.unsubscribe import UnsubscribeLinks
from ..domain.appointment import Appointment, caregiver_copy, masked_patient
from ..domain.clinic import Clinic
from ..domain.planning import Recipient
from ..domain.protocol import Channel
from ..domain.reminder import Reminder, StoredAppointment
from ..rendering.renderer import RenderedMessage, Renderer, RenderError
from .follow_ups import staff_time
from .importing import CALENDAR_CANCEL

log = logging.getLogger(__name__)

STAFF_TEMPLATES = "_staff"  # the templates of alerts to the clinic's staff

# Per batch: skipped texts waiting to ride on their appointment's next text to one recipient.
Merges = dict[tuple[int, Recipient], list[Reminder]]


@dataclass(frozen=True)
class Job:
    """A message ready to go, and what its row will say once it has."""

    reminder: Reminder
    message: OutgoingSms | OutgoingEmail
    language: str
    digest: str
    requested: str = ""  # the patient's language, when the message is in another
    merged: tuple[int, ...] = ()  # skipped texts whose lines ride on this one
    note: str = ""  # why it went though the caps were full (a critical text), for its row


class Messages:
    def __init__(
        self,
        catalog: Catalog,
        renderer: Renderer,
        public_url: str = "",
        email_from: str = "reminders@localhost",
        unsubscribe: UnsubscribeLinks | None = None,
    ) -> None:
        """`email_from` is the service-wide From address (a clinic's own `email_from` wins);
        `unsubscribe` makes the List-Unsubscribe links of patient emails."""
        self._catalog = catalog
        self._renderer = renderer
        self._public_url = public_url.rstrip("/")
        self._email_from = email_from
        self._unsubscribe = unsubscribe
        # The clinics' own SMS senders; the others send from the channel's configured one.
        self._sms_senders = {
            c.id: SmsSender(c.sms_from, c.messaging_service_sid)
            for c in catalog.clinics.by_id.values()
            if c.sms_from or c.messaging_service_sid
        }

    def to_recipient(
        self,
        reminder: Reminder,
        stored: StoredAppointment,
        clinic: Clinic,
        to: str,
        now: datetime,
        merges: Merges,
        note: str = "",
    ) -> Job:
        """The reminder's message to the patient (or the caregiver's copy), taking the lines
        waiting in `merges` for it. Raises RenderError."""
        appointment = stored.appointment
        message = self._renderer.render_for(
            stored.protocol_id or "", reminder.template, reminder.channel, appointment, clinic,
            stored.rescheduled,
        )  # fmt: skip
        outgoing: OutgoingSms | OutgoingEmail
        merged: tuple[int, ...] = ()
        if message.channel is Channel.SMS:
            assert message.sms is not None
            waiting = merges.pop((reminder.appointment_id, reminder.recipient), [])
            body, merged = self._with_merges(message.sms, waiting, stored, clinic)
            if reminder.recipient is Recipient.CAREGIVER:
                body = caregiver_copy(body, appointment.patient)
            callback = None
            if self._public_url:
                callback = f"{self._public_url}/webhooks/twilio/status?reminder={reminder.id}"
            outgoing = OutgoingSms(
                reminder.id, appointment.external_id, reminder.step_id, to, body, now,
                status_callback=callback, sender=self._sms_senders.get(clinic.id),
            )  # fmt: skip
        else:
            assert message.subject is not None and message.text is not None
            assert message.html is not None
            outgoing = OutgoingEmail(
                reminder.id, appointment.external_id, reminder.step_id, to, clinic.name,
                message.subject, message.text, message.html,
                f"<reminder-{reminder.id}.v{stored.version}@reminder-service>", now,
                calendar=self._calendar(reminder, stored, clinic),
                from_address=self._from_address(clinic),
                unsubscribe=self._list_unsubscribe(stored.patient_id, to, clinic),
            )  # fmt: skip
        requested = appointment.patient.language
        return Job(reminder, outgoing, message.language, digest(message), requested, merged, note)

    def to_staff(
        self, reminder: Reminder, stored: StoredAppointment, clinic: Clinic, now: datetime
    ) -> Job:
        """A staff alert, to the clinic's staff address. Raises RenderError."""
        appointment = stored.appointment
        report = reminder.alert or reminder.reason
        context = {
            "clinic_name": clinic.name,
            "appointment_id": appointment.external_id,
            "appointment_time": staff_time(appointment.start, clinic),
            "patient": masked_patient(appointment.patient),
            "step": reminder.step_id,
            "reason": report,
            "lines": report.splitlines(),  # an alert listing several appointments, one a line
        }
        message = self._renderer.render(
            STAFF_TEMPLATES, reminder.template, Channel.EMAIL, clinic.default_language,
            clinic.default_language, context,
        )  # fmt: skip
        assert message.subject is not None and message.text is not None
        assert message.html is not None
        outgoing = OutgoingEmail(
            reminder.id, appointment.external_id, reminder.step_id, clinic.staff_email,
            clinic.name, message.subject, message.text, message.html,
            f"<staff-alert-{reminder.id}@reminder-service>", now,
            from_address=self._from_address(clinic),
        )  # fmt: skip
        return Job(reminder, outgoing, message.language, digest(message))

    def _with_merges(
        self, body: str, waiting: list[Reminder], stored: StoredAppointment, clinic: Clinic
    ) -> tuple[str, tuple[int, ...]]:
        """This text, with the lines of skipped texts its step chain said to merge into it."""
        lines, merged = [], []
        for skipped in waiting:
            try:
                line = self._renderer.merge_line_for(
                    stored.protocol_id or "", skipped.template, stored.appointment, clinic,
                    stored.rescheduled,
                )  # fmt: skip
            except RenderError:
                log.exception("reminder %s: its merge line cannot be rendered", skipped.id)
                continue
            lines.append(line)
            merged.append(skipped.id)
        return "\n".join([body, *lines]), tuple(merged)

    def _calendar(
        self, reminder: Reminder, stored: StoredAppointment, clinic: Clinic
    ) -> CalendarEvent | None:
        cancelled = reminder.template == CALENDAR_CANCEL
        protocol = self._catalog.protocol_or_none(stored.protocol_id)
        step = protocol.step_or_none(reminder.step_id) if protocol else None
        if not cancelled and (step is None or not step.calendar):
            return None
        organizer = self._from_address(clinic)
        return calendar_event(stored.appointment, stored.version, clinic, organizer, cancelled)

    def _list_unsubscribe(self, patient_id: int, to: str, clinic: Clinic) -> ListUnsubscribe | None:
        if self._unsubscribe is None:
            return None
        return self._unsubscribe.for_patient(patient_id, to, self._from_address(clinic))

    def _from_address(self, clinic: Clinic) -> str:
        return clinic.email_from or self._email_from


def calendar_event(
    appointment: Appointment, version: int, clinic: Clinic, organizer: str, cancelled: bool
) -> CalendarEvent:
    """The appointment as a calendar entry: one UID for all its versions, so a reschedule
    updates the entry and a cancellation removes it. The summary names the clinic only."""
    key = hashlib.sha256(appointment.external_id.encode()).hexdigest()[:24]
    return CalendarEvent(
        uid=f"appointment-{key}@reminder-service",
        sequence=version,
        start=appointment.start,
        end=appointment.end,
        summary=f"Appointment: {clinic.name}",
        location=appointment.location or clinic.address,
        organizer=organizer,
        cancelled=cancelled,
        organizer_name=clinic.name,
        attendee=appointment.patient.email or "",
        attendee_name=f"{appointment.patient.first_name} {appointment.patient.last_name}".strip(),
    )


def digest(message: RenderedMessage) -> str:
    """The SHA-256 of what was sent, for the audit trail (never the body itself)."""
    body = (
        message.sms
        if message.sms is not None
        else f"{message.subject}\n{message.text}\n{message.html}"
    )
    return hashlib.sha256(body.encode()).hexdigest()
