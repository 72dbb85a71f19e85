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

import hashlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, String, and_, func, insert, or_, select, text, update

from ..catalog import Catalog
from ..clock import Clock
from ..domain.appointment import AppointmentStatus, Patient, masked_patient
from ..domain.audit import AuditEvent, AuditRecord
from ..domain.clinic import Clinic
from ..domain.protocol import Channel
from ..domain.replies import FOR_STAFF, ReplyKind, acknowledge, classify_reply
from ..rendering.renderer import Renderer, RenderError
from ..store import audit, opt_outs
from ..store.records import RowData
from ..store.tables import appointments, inbound_messages, patients, reminders
from .critical_reach import alert_after_opt_out
from .follow_ups import NEW_TIME_TEMPLATE, staff_alert_row, staff_time

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
            _one_at_a_time(conn, phone)
            seen = conn.execute(
                select(inbound_messages.c.id).where(inbound_messages.c.message_sid == message_sid)
            ).first()
            if seen is not None:
                return ReplyOutcome(kind, None, duplicate=True)
            appointment = _nearest_appointment(conn, phone, now)
            clinic = self._catalog.clinics.get(appointment["clinic_id"] if appointment else None)
            assert clinic is not None  # the default clinic always exists
            answer_name = self._apply(conn, kind, phone, appointment, clinic, now)
            if answer_name not in TO_OPTED_OUT and opt_outs.sms_opted_out(conn, phone):
                answer_name = None
            language = appointment["language"] if appointment else clinic.default_language
            answer = self._answer(answer_name, clinic, language) if answer_name else None
            conn.execute(
                insert(inbound_messages).values(
                    message_sid=message_sid,
                    received_at=now,
                    phone=phone,
                    body=body,
                    kind=kind.value,
                    appointment_id=appointment["id"] if appointment else None,
                    answer=answer_name if answer else None,
                    handled_at=None if kind in FOR_STAFF else now,
                    handled_by=None if kind in FOR_STAFF else AUTOMATIC,
                )
            )
        log.info("inbound SMS %s: %s (answer: %s)", message_sid, kind.value, answer_name)
        return ReplyOutcome(kind, answer)

    def _apply(
        self,
        conn: Connection,
        kind: ReplyKind,
        phone: str,
        appointment: RowData | None,
        clinic: Clinic,
        now: datetime,
    ) -> str | None:
        """Record what the reply means; returns the name of the answer to send, if any."""
        appointment_id = appointment["id"] if appointment else None
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
                _set(conn, appointment["id"], confirmed_at=now, confirmed_by=BY_THE_PATIENT)
                _audit(conn, now, appointment["id"], AuditEvent.CONFIRMED, "the patient replied 1")
                return "confirmed"
            _set(conn, appointment["id"], new_time_requested_at=now)
            # The staff alert's own words (templates/_staff/<language>/new_time_request.*); the
            # audit and the alert's report name the patient masked, never their message.
            reason = (
                f"{masked_patient(_patient(appointment))} asked to change their appointment on "
                f"{staff_time(appointment['start_at'], clinic)}; please call them"
            )
            _audit(conn, now, appointment["id"], AuditEvent.STAFF_ALERT, reason)
            alert = staff_alert_row(
                appointment["id"], appointment["version"], "reply", reason, now,
                template=NEW_TIME_TEMPLATE,
            )  # fmt: skip
            conn.execute(insert(reminders).values(**alert))
            return "new_time"
        kept = "a free-text reply for staff (kept, not logged)"
        _audit(conn, now, appointment_id, AuditEvent.REPLY, kept)
        last = conn.execute(
            select(func.max(inbound_messages.c.received_at))
            .where(inbound_messages.c.phone == phone)
            .where(inbound_messages.c.answer == ACKNOWLEDGED)
        ).scalar_one_or_none()
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
    column = inbound_messages.c.phone.type
    assert isinstance(column, String) and column.length
    return len(phone) <= column.length and "\x00" not in phone


def _nearest_appointment(conn: Connection, phone: str, now: datetime) -> RowData | None:
    """The booked appointment on this number that comes next (or, if none is to come, the
    latest one): a reply code is about the visit the patient has in mind."""
    base = (
        select(
            appointments.c.id,
            appointments.c.clinic_id,
            appointments.c.version,
            appointments.c.start_at,
            patients.c.language,
            patients.c.first_name,
            patients.c.last_name,
            patients.c.mobile,
        )
        .join(patients, patients.c.id == appointments.c.patient_id)
        .where(
            or_(
                patients.c.mobile == phone,
                # A caregiver gets the patient's texts (and their reply codes) with both consents.
                and_(
                    patients.c.caregiver_mobile == phone,
                    patients.c.caregiver_copies.is_(True),
                    patients.c.caregiver_sms_consent.is_(True),
                ),
            )
        )
        .where(appointments.c.status == AppointmentStatus.BOOKED.value)
    )
    upcoming = conn.execute(
        base.where(appointments.c.start_at >= now).order_by(appointments.c.start_at).limit(1)
    ).mappings()
    found = upcoming.first()
    if found is None:
        found = (
            conn.execute(base.order_by(appointments.c.start_at.desc()).limit(1)).mappings().first()
        )
    return found


def _patient(row: RowData) -> Patient:
    """Enough of the patient for the masked name staff alerts give."""
    return Patient("", row["first_name"], row["last_name"], row["mobile"], None, "", "")


def _one_at_a_time(conn: Connection, phone: str) -> None:
    """PostgreSQL: hold this number's lock to the end of the transaction, so two messages from
    it are handled one after the other (one acknowledgement, one opt-out) even in two
    processes. SQLite's writers take turns already (BEGIN IMMEDIATE)."""
    if conn.dialect.name != "postgresql":
        return
    key = int.from_bytes(hashlib.sha256(f"reply:{phone}".encode()).digest()[:8], "big", signed=True)
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def _set(conn: Connection, appointment_id: int, **values: Any) -> None:
    conn.execute(update(appointments).where(appointments.c.id == appointment_id).values(**values))


def _audit(
    conn: Connection, now: datetime, appointment_id: int | None, event: AuditEvent, reason: str
) -> None:
    audit.write(conn, [AuditRecord(now, event, reason, appointment_id)])
