"""Replies: what happens when a patient texts us back.

- An opt-out keyword stops every SMS to that number at once: the number goes on the opt-out list,
  which the dispatcher checks just before each send, so reminders already planned or claimed do
  not go either. One confirmation at most: a repeated STOP gets no answer.
- START, UNSTOP or YES takes the number off the list; HELP answers with the clinic's name and
  phone.
- Reply codes apply to the nearest upcoming appointment on the number (a caregiver's number may
  serve several patients): 1 confirms it, 2 asks for a new time (the clinic's staff get an alert
  and the patient an acknowledgement).
- Anything else is kept for the clinic's staff to read (`reminder-service replies`), and the
  patient is told it was passed to the team, with a number for anything urgent: once per number
  per 12 hours (domain/replies.py).
- An opted-out number gets no answer but the STOP confirmation and HELP (carriers require HELP to
  be answered whatever the opt-in state); its replies are still recorded.

Each inbound message is handled once, by its provider id: a webhook posted twice changes nothing.
Messages from one number are handled one at a time (on PostgreSQL, a lock per number; SQLite's
writers take turns anyway), so two texts arriving together get one acknowledgement between them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from ..catalog import Catalog
from ..clock import Clock
from ..domain.appointment import Patient, masked_patient
from ..domain.audit import AuditEvent, AuditRecord
from ..domain.clinic import Clinic
from ..domain.protocol import Channel
from ..domain.replies import FOR_STAFF, ReplyKind, acknowledge, classify_reply
from ..rendering.renderer import Renderer, RenderError
from ..store import audit, confirmations, opt_outs, replies, staff_alerts
from ..store.replies import ReplyAppointment
from .critical_reach import alert_after_opt_out
from .follow_ups import NEW_TIME_TEMPLATE, staff_alert_row, staff_time

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

log = logging.getLogger(__name__)

REPLY_TEMPLATES = "_replies"  # templates/_replies/<language>/<answer>.sms.j2
ACKNOWLEDGED = "acknowledged"  # the answer to free text
AUTOMATIC = "automatic"  # handled_by of the replies the service dealt with itself
BY_THE_PATIENT = "patient (SMS)"  # confirmed_by when the patient replied 1
# Answers an opted-out number still gets: the STOP confirmation, and HELP.
TO_OPTED_OUT = frozenset({"opted_out", "help"})


@dataclass(frozen=True)
class ReplyOutcome:
    kind: ReplyKind
    answer: str | None  # the SMS to send back, if any
    duplicate: bool = False


class ReplyService:
    def __init__(self, engine: Engine, catalog: Catalog, renderer: Renderer, clock: Clock) -> None:
        self._engine = engine
        self._catalog = catalog
        self._renderer = renderer
        self._clock = clock

    def handle(self, message_sid: str, phone: str, body: str) -> ReplyOutcome:
        kind = classify_reply(body)
        now = self._clock()
        with self._engine.begin() as conn:
            replies.one_at_a_time(conn, phone)
            if replies.seen(conn, message_sid):
                return ReplyOutcome(kind, None, duplicate=True)
            appointment = replies.nearest_appointment(conn, phone, now)
            clinic = self._catalog.clinics.get(appointment.clinic_id if appointment else None)
            assert clinic is not None  # the default clinic always exists
            answer_name = self._apply(conn, kind, phone, appointment, clinic, now)
            if answer_name not in TO_OPTED_OUT and opt_outs.sms_opted_out(conn, phone):
                answer_name = None
            language = appointment.language if appointment else clinic.default_language
            answer = self._answer(answer_name, clinic, language) if answer_name else None
            replies.record(
                conn,
                message_sid=message_sid,
                received_at=now,
                phone=phone,
                body=body,
                kind=kind.value,
                appointment_id=appointment.id if appointment else None,
                answer=answer_name if answer else None,
                handled_at=None if kind in FOR_STAFF else now,
                handled_by=None if kind in FOR_STAFF else AUTOMATIC,
            )
        log.info("inbound SMS %s: %s (answer: %s)", message_sid, kind.value, answer_name)
        return ReplyOutcome(kind, answer)

    def _apply(
        self,
        conn: Connection,
        kind: ReplyKind,
        phone: str,
        appointment: ReplyAppointment | None,
        clinic: Clinic,
        now: datetime,
    ) -> str | None:
        """Record what the reply means; returns the name of the answer to send, if any."""
        appointment_id = appointment.id if appointment else None
        if kind is ReplyKind.OPT_OUT:
            fresh = opt_outs.record_sms(conn, [phone], now, source="reply STOP")
            if fresh:
                _audit(conn, now, appointment_id, AuditEvent.OPTED_OUT, "the patient replied STOP")
                alert_after_opt_out(conn, self._catalog, phone, now)
            return "opted_out" if fresh else None  # one confirmation at most
        if kind is ReplyKind.OPT_IN:
            if opt_outs.remove_sms(conn, phone):
                _audit(conn, now, appointment_id, AuditEvent.OPTED_IN, "the patient replied START")
                return "opted_in"
            return None
        if kind is ReplyKind.HELP:
            return "help"
        if kind in (ReplyKind.CONFIRM, ReplyKind.NEW_TIME):
            if appointment is None:
                return "no_appointment"
            if kind is ReplyKind.CONFIRM:
                confirmations.confirm(conn, appointment.id, now, BY_THE_PATIENT)
                _audit(conn, now, appointment.id, AuditEvent.CONFIRMED, "the patient replied 1")
                return "confirmed"
            confirmations.new_time_requested(conn, appointment.id, now)
            # The staff alert's own words (templates/_staff/<language>/new_time_request.*); the
            # audit and the alert's report name the patient masked, never their message.
            reason = (
                f"{masked_patient(_patient(appointment))} asked to change their appointment on "
                f"{staff_time(appointment.start_at, clinic)}; please call them"
            )
            _audit(conn, now, appointment.id, AuditEvent.STAFF_ALERT, reason)
            alert = staff_alert_row(
                appointment.id, appointment.version, "reply", reason, now,
                template=NEW_TIME_TEMPLATE,
            )  # fmt: skip
            staff_alerts.add(conn, [alert])
            return "new_time"
        kept = "a free-text reply for staff (kept, not logged)"
        _audit(conn, now, appointment_id, AuditEvent.REPLY, kept)
        last = replies.last_answered(conn, phone, ACKNOWLEDGED)
        return ACKNOWLEDGED if acknowledge(kind, last, now) else None

    def _answer(self, name: str, clinic: Clinic, language: str) -> str | None:
        context = {
            "clinic": {
                "name": clinic.name,
                "phone": clinic.phone,
                "out_of_hours_phone": clinic.out_of_hours_phone,
                "emergency_number": clinic.emergency_number,
            }
        }
        try:
            message = self._renderer.render(
                REPLY_TEMPLATES, name, Channel.SMS, language, clinic.default_language, context
            )
        except RenderError:
            log.exception("reply template %s could not be rendered", name)
            return None
        return message.sms


def storable_phone(phone: str) -> bool:
    """Whether an inbound message's From number fits its column (and holds no NUL)."""
    return replies.phone_fits(phone)


def _patient(appointment: ReplyAppointment) -> Patient:
    """Enough of the patient for the masked name staff alerts give."""
    return Patient(
        "", appointment.first_name, appointment.last_name, appointment.mobile, None, "", ""
    )


def _audit(
    conn: Connection, now: datetime, appointment_id: int | None, event: AuditEvent, reason: str
) -> None:
    audit.write(conn, [AuditRecord(now, event, reason, appointment_id)])
