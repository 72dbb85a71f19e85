"""Replies: what happens when a patient texts us back.

- An opt-out keyword stops every SMS to that number at once: the number goes on the opt-out list,
  which the dispatcher checks just before each send, so reminders already planned or claimed do
  not go either. One confirmation at most: a repeated STOP gets no answer.
- START, UNSTOP or YES takes the number off the list; HELP answers with the clinic's name and
  phone.
- Reply codes apply to the nearest upcoming appointment on the number (a caregiver's number may
  serve several patients): 1 confirms it, 2 asks for a new time (the clinic's staff get an alert
  and the patient an acknowledgement).
- Anything else is kept for the clinic's staff to read.

Each inbound message is handled once, by its provider id: a webhook posted twice changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, delete, insert, or_, select, update

from ..catalog import Catalog
from ..clock import Clock
from ..domain.appointment import AppointmentStatus
from ..domain.clinic import Clinic
from ..domain.protocol import Channel
from ..domain.replies import ReplyKind, classify_reply
from ..rendering import Renderer, RenderError
from ..store import bulk
from ..store.records import RowData
from ..store.tables import appointments, inbound_messages, patients, reminders, sms_opt_outs
from .follow_ups import record_opt_outs, staff_alert_row

log = logging.getLogger(__name__)

REPLY_TEMPLATES = "_replies"  # templates/_replies/<language>/<answer>.sms.j2


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
            seen = conn.execute(
                select(inbound_messages.c.id).where(inbound_messages.c.message_sid == message_sid)
            ).first()
            if seen is not None:
                return ReplyOutcome(kind, None, duplicate=True)
            appointment = _nearest_appointment(conn, phone, now)
            clinic = self._catalog.clinics.get(appointment["clinic_id"] if appointment else None)
            assert clinic is not None  # the default clinic always exists
            answer_name = self._apply(conn, kind, phone, appointment, now)
            conn.execute(
                insert(inbound_messages).values(
                    message_sid=message_sid,
                    received_at=now,
                    phone=phone,
                    body=body,
                    kind=kind.value,
                    appointment_id=appointment["id"] if appointment else None,
                )
            )
        log.info("inbound SMS %s: %s", message_sid, kind.value)
        language = appointment["language"] if appointment else clinic.default_language
        answer = self._answer(answer_name, clinic, language) if answer_name else None
        return ReplyOutcome(kind, answer)

    def _apply(
        self,
        conn: Connection,
        kind: ReplyKind,
        phone: str,
        appointment: RowData | None,
        now: datetime,
    ) -> str | None:
        """Record what the reply means; returns the name of the answer to send, if any."""
        appointment_id = appointment["id"] if appointment else None
        if kind is ReplyKind.OPT_OUT:
            fresh = record_opt_outs(conn, [phone], now, source="reply STOP")
            if fresh:
                _audit(conn, now, appointment_id, "opted_out", "the patient replied STOP")
            return "opted_out" if fresh else None  # one confirmation at most
        if kind is ReplyKind.OPT_IN:
            removed = conn.execute(delete(sms_opt_outs).where(sms_opt_outs.c.phone == phone))
            if removed.rowcount:
                _audit(conn, now, appointment_id, "opted_in", "the patient replied START")
                return "opted_in"
            return None
        if kind is ReplyKind.HELP:
            return "help"
        if kind in (ReplyKind.CONFIRM, ReplyKind.NEW_TIME):
            if appointment is None:
                return "no_appointment"
            if kind is ReplyKind.CONFIRM:
                _set(conn, appointment["id"], confirmed_at=now)
                _audit(conn, now, appointment["id"], "confirmed", "the patient replied 1")
                return "confirmed"
            _set(conn, appointment["id"], new_time_requested_at=now)
            reason = "the patient replied 2: asks for a new time"
            _audit(conn, now, appointment["id"], "staff_alert", reason)
            alert = staff_alert_row(appointment["id"], appointment["version"], "reply", reason, now)
            conn.execute(insert(reminders).values(**alert))
            return "new_time"
        _audit(conn, now, appointment_id, "reply", "a free-text reply for staff (kept, not logged)")
        return None

    def _answer(self, name: str, clinic: Clinic, language: str) -> str | None:
        context = {"clinic": {"name": clinic.name, "phone": clinic.phone}}
        try:
            message = self._renderer.render(
                REPLY_TEMPLATES, name, Channel.SMS, language, clinic.default_language, context
            )
        except RenderError:
            log.exception("reply template %s could not be rendered", name)
            return None
        return message.sms


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


def _set(conn: Connection, appointment_id: int, **values: Any) -> None:
    conn.execute(update(appointments).where(appointments.c.id == appointment_id).values(**values))


def _audit(
    conn: Connection, now: datetime, appointment_id: int | None, event: str, reason: str
) -> None:
    entry = {"at": now, "appointment_id": appointment_id, "reminder_id": None, "event": event,
             "reason": reason, "detail": None}  # fmt: skip
    bulk.insert_audit(conn, [entry])
