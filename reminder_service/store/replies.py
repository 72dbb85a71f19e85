"""Inbound replies: recorded once each by the provider's id, the appointment a reply code is
about, the staff's inbox of them, and their handled marks."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    String,
    and_,
    func,
    insert,
    or_,
    select,
    text,
    update,
)

from ..domain.appointment import AppointmentStatus
from .engine import reading
from .records import RowData
from .tables import appointments, inbound_messages, patients


@dataclass(frozen=True, slots=True)
class ReplyAppointment:
    """What a reply needs of the appointment it is about."""

    id: int
    clinic_id: str
    version: int
    start_at: datetime
    language: str
    first_name: str
    last_name: str
    mobile: str | None


@dataclass(frozen=True)
class InboundReply:
    id: int
    received_at: datetime
    phone: str
    body: str
    kind: str  # opt_out, opt_in, help, confirm, new_time, other
    answer: str | None  # the reply we sent back (a template name)
    clinic_id: str
    appointment_id: str | None  # the source system's id
    appointment_start: datetime | None
    patient_id: str | None
    patient_name: str | None
    handled_at: datetime | None
    handled_by: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "received_at": self.received_at.isoformat(),
            "phone": self.phone,
            "body": self.body,
            "kind": self.kind,
            "answer": self.answer,
            "clinic": self.clinic_id,
            "appointment_id": self.appointment_id,
            "appointment_start": (
                self.appointment_start.isoformat() if self.appointment_start else None
            ),
            "patient_id": self.patient_id,
            "patient_name": self.patient_name,
            "handled_at": self.handled_at.isoformat() if self.handled_at else None,
            "handled_by": self.handled_by,
        }


def phone_fits(phone: str) -> bool:
    """Whether an inbound message's From number fits its column (and holds no NUL)."""
    column = inbound_messages.c.phone.type
    assert isinstance(column, String) and column.length
    return len(phone) <= column.length and "\x00" not in phone


def one_at_a_time(conn: Connection, phone: str) -> None:
    """PostgreSQL: hold this number's lock to the end of the transaction, so two messages from
    it are handled one after the other (one acknowledgement, one opt-out) even in two
    processes. SQLite's writers take turns already (BEGIN IMMEDIATE)."""
    if conn.dialect.name != "postgresql":
        return
    key = int.from_bytes(hashlib.sha256(f"reply:{phone}".encode()).digest()[:8], "big", signed=True)
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def seen(conn: Connection, message_sid: str) -> bool:
    """Whether the message with this provider id is recorded already."""
    query = select(inbound_messages.c.id).where(inbound_messages.c.message_sid == message_sid)
    return conn.execute(query).first() is not None


def record(
    conn: Connection,
    *,
    message_sid: str,
    received_at: datetime,
    phone: str,
    body: str,
    kind: str,
    appointment_id: int | None,
    answer: str | None,
    handled_at: datetime | None,
    handled_by: str | None,
) -> None:
    conn.execute(
        insert(inbound_messages).values(
            message_sid=message_sid,
            received_at=received_at,
            phone=phone,
            body=body,
            kind=kind,
            appointment_id=appointment_id,
            answer=answer,
            handled_at=handled_at,
            handled_by=handled_by,
        )
    )


def last_answered(conn: Connection, phone: str, answer: str) -> datetime | None:
    """When this number last got the answer `answer`, if ever."""
    last: datetime | None = conn.execute(
        select(func.max(inbound_messages.c.received_at))
        .where(inbound_messages.c.phone == phone)
        .where(inbound_messages.c.answer == answer)
    ).scalar_one_or_none()
    return last


def nearest_appointment(conn: Connection, phone: str, now: datetime) -> ReplyAppointment | None:
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
    return None if found is None else ReplyAppointment(**found)


def inbox(
    engine: Engine, default_clinic: str, *, unhandled: bool, clinic: str | None, limit: int
) -> list[InboundReply]:
    """The newest `limit` replies; only those not handled, or only one clinic's, if asked. A
    reply with no appointment is `default_clinic`'s."""
    query, clinic_column = _inbox_query(default_clinic)
    if unhandled:
        query = query.where(inbound_messages.c.handled_at.is_(None))
    if clinic is not None:
        query = query.where(clinic_column == clinic)
    query = query.order_by(
        inbound_messages.c.received_at.desc(), inbound_messages.c.id.desc()
    ).limit(limit)
    with reading(engine) as conn:
        return [_reply(row) for row in conn.execute(query).mappings()]


def mark_handled(conn: Connection, reply_id: int, now: datetime, by: str) -> bool:
    """Mark a reply handled, unless it was already (the first who and when stay)."""
    done = conn.execute(
        update(inbound_messages)
        .where(inbound_messages.c.id == reply_id)
        .where(inbound_messages.c.handled_at.is_(None))
        .values(handled_at=now, handled_by=by)
    )
    return bool(done.rowcount)


def find(
    conn: Connection, default_clinic: str, reply_id: int
) -> tuple[InboundReply, int | None] | None:
    """The reply, and the stored id of its appointment (None: it has none); None when there
    is no such reply."""
    query, _ = _inbox_query(default_clinic)
    row = conn.execute(query.where(inbound_messages.c.id == reply_id)).mappings().first()
    return None if row is None else (_reply(row), row["appointment_id"])


def _inbox_query(default_clinic: str) -> tuple[Select[Any], ColumnElement[Any]]:
    clinic = func.coalesce(appointments.c.clinic_id, default_clinic)
    return (
        select(
            inbound_messages,
            clinic.label("clinic_id"),
            appointments.c.external_id.label("appointment_external_id"),
            appointments.c.start_at.label("appointment_start"),
            patients.c.external_id.label("patient_external_id"),
            patients.c.first_name,
            patients.c.last_name,
        )
        .outerjoin(appointments, appointments.c.id == inbound_messages.c.appointment_id)
        .outerjoin(patients, patients.c.id == appointments.c.patient_id)
    ), clinic


def _reply(row: RowData) -> InboundReply:
    name = None
    if row["patient_external_id"] is not None:
        name = f"{row['first_name']} {row['last_name']}".strip()
    return InboundReply(
        id=row["id"],
        received_at=row["received_at"],
        phone=row["phone"],
        body=row["body"],
        kind=row["kind"],
        answer=row["answer"],
        clinic_id=row["clinic_id"],
        appointment_id=row["appointment_external_id"],
        appointment_start=row["appointment_start"],
        patient_id=row["patient_external_id"],
        patient_name=name,
        handled_at=row["handled_at"],
        handled_by=row["handled_by"],
    )
