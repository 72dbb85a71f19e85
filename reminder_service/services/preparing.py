"""Preparing a claimed batch: each reminder decided at send time, and its message built.

One set of queries for the whole batch (the appointments, the opt-outs, the patients' texts under
the SMS caps, the merge lines waiting), then for each reminder `domain.sending.decide` and, if it
goes, its message. The batch's view of the caps and of the merges is kept current as it goes: a
text let go counts for the patient's next one, a text merged may ride on one later in the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import datetime

from ..catalog import Catalog
from ..clock import Clock
from ..domain.appointment import Appointment
from ..domain.clinic import Clinic
from ..domain.opt_outs import opt_out_key
from ..domain.planning import Recipient, ReminderStatus
from ..domain.protocol import Channel, Step
from ..domain.reminder import Outcome, Reminder, StoredAppointment
from ..domain.sending import (
    Cancel,
    Circumstances,
    Decision,
    Defer,
    Fail,
    Merge,
    PatientCaps,
    Send,
    Skip,
    decide,
)
from ..domain.sms_caps import PatientTexts
from ..rendering.renderer import Renderer, RenderError
from ..store.reminders import ReminderStore
from . import patient_texts
from .outgoing import Job, Merges, Messages

log = logging.getLogger(__name__)

# A reminder to try again later, and why (an unexpected error while preparing it).
RetryLater = Callable[[Reminder, datetime, str], Outcome]


class Preparation:
    def __init__(
        self,
        store: ReminderStore,
        catalog: Catalog,
        renderer: Renderer,
        messages: Messages,
        clock: Clock,
        max_attempts: int,
        retry: RetryLater,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._renderer = renderer
        self._messages = messages
        self._clock = clock
        self._max_attempts = max_attempts
        self._retry = retry
        self._merges: Merges = {}  # per batch: skipped texts waiting to ride on the next one

    def prepare_all(self, claimed: list[Reminder]) -> list[Outcome | Job]:
        """Decide each claimed reminder and build its message: one set of queries for them all."""
        store = self._store
        appointments = store.appointments({r.appointment_id for r in claimed})
        numbers = {n for s in appointments.values() for n in _numbers(s.appointment) if n}
        opted_out = store.sms_opted_out(numbers)
        now = self._clock()
        texts = store.patient_texts({s.patient_id for s in appointments.values()}, now)
        self._merges = store.pending_merges(set(appointments))
        unsubscribed = self._unsubscribed(s.appointment for s in appointments.values())
        prepared: list[Outcome | Job] = []
        for reminder in claimed:
            stored = appointments[reminder.appointment_id]
            try:
                prepared.append(
                    self._prepare(reminder, stored, now, opted_out, unsubscribed, texts)
                )
            except Exception as exc:  # a bug: retry later, never lose the reminder
                log.exception("reminder %s: unexpected error while preparing", reminder.id)
                prepared.append(
                    self._retry(reminder, now, f"unexpected error: {type(exc).__name__}")
                )
        return prepared

    def _unsubscribed(self, appointments: Iterable[Appointment]) -> set[str]:
        """The patients' addresses that unsubscribed from email."""
        emails = {a.patient.email for a in appointments if a.patient.email}
        keys = self._store.email_opted_out({opt_out_key(e) for e in emails})
        return {e for e in emails if opt_out_key(e) in keys}

    def _prepare(
        self,
        reminder: Reminder,
        stored: StoredAppointment,
        now: datetime,
        opted_out: set[str],
        unsubscribed: set[str],
        texts: PatientTexts,
    ) -> Outcome | Job:
        """The send-time decision, then the message; or the outcome when it must not be sent."""
        clinic = self._catalog.clinics.get(stored.appointment.clinic_id)
        protocol = self._catalog.protocol_or_none(stored.protocol_id)
        step = protocol.step_or_none(reminder.step_id) if protocol else None
        caps = None
        if protocol is not None and clinic is not None:
            caps = self._caps(reminder, stored, clinic, step, texts, unsubscribed)
        given = Circumstances(clinic, step, self._max_attempts, opted_out, unsubscribed, caps)
        decision = decide(reminder, stored, now, given)
        self._note_caps(decision, reminder, stored, texts, now)
        if not isinstance(decision, Send):
            return _outcome(reminder, decision)
        assert clinic is not None
        try:
            if reminder.recipient is Recipient.STAFF:
                return self._messages.to_staff(reminder, stored, clinic, now)
            return self._messages.to_recipient(
                reminder, stored, clinic, decision.to, now, self._merges, decision.note
            )
        except RenderError as exc:
            return Outcome(reminder, ReminderStatus.FAILED, f"template error: {exc}")

    def _caps(
        self,
        reminder: Reminder,
        stored: StoredAppointment,
        clinic: Clinic,
        step: Step | None,
        texts: PatientTexts,
        unsubscribed: set[str],
    ) -> PatientCaps | None:
        """What the SMS caps weigh for a patient's text, decided as preview decides: what this
        patient was sent and the texts still to come of every appointment they have booked."""
        if reminder.channel is not Channel.SMS or reminder.recipient is not Recipient.PATIENT:
            return None
        if not (clinic.sms_caps.per_day or clinic.sms_caps.per_week):
            return None
        key = reminder.text_key
        others = [text for text in texts.of(stored.patient_id) if text.key != key]
        email = stored.appointment.patient.email
        routes = patient_texts.fallbacks(
            step, stored.appointment, stored.protocol_id, self._renderer,
            clinic.default_language, email_opted_out=email in unsubscribed,
        )  # fmt: skip
        return PatientCaps(others, routes)

    def _note_caps(
        self,
        decision: Decision,
        reminder: Reminder,
        stored: StoredAppointment,
        texts: PatientTexts,
        now: datetime,
    ) -> None:
        """Keep the batch's view of the caps current: a text let go counts for the patient's
        next one; one turned away no longer counts; one merged may ride on a text later in
        this batch."""
        if not isinstance(decision, Send | Skip | Merge) or decision.caps is None:
            return
        if isinstance(decision, Send):
            texts.went(stored.patient_id, reminder.text_key, now)
            return
        texts.turned_away(stored.patient_id, reminder.text_key)
        if isinstance(decision, Merge):
            key = (reminder.appointment_id, reminder.recipient)
            self._merges.setdefault(key, []).append(reminder)


def _numbers(appointment: Appointment) -> tuple[str | None, str | None]:
    """The numbers an appointment's texts may go to: the patient's, their caregiver's."""
    return appointment.patient.mobile, appointment.patient.caregiver_copy_to


def _outcome(reminder: Reminder, decision: Decision) -> Outcome:
    """The outcome of a reminder that is not sent now."""
    match decision:
        case Cancel(reason):
            return Outcome(reminder, ReminderStatus.CANCELLED, reason)
        case Defer(until, reason):
            # Not an attempt: the message was never tried.
            changes = {"due_at": until, "attempts": reminder.attempts - 1}
            return Outcome(reminder, ReminderStatus.PENDING, reason, changes)
        case Merge(reason):
            return Outcome(reminder, ReminderStatus.SKIPPED, reason, {"merge_into_next": True})
        case Skip(reason, undeliverable):
            return Outcome(reminder, ReminderStatus.SKIPPED, reason, undeliverable=undeliverable)
        case Fail(reason, undeliverable):
            return Outcome(reminder, ReminderStatus.FAILED, reason, undeliverable=undeliverable)
    raise AssertionError(f"not an outcome: {decision!r}")
