"""An appointment's answer columns: confirmed (by the patient's 1, or by staff), a new time
asked for (the patient's 2), and listed to staff when a confirmation is overdue."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime

from sqlalchemy import Connection, and_, or_, text, update
from sqlalchemy.sql.elements import ColumnElement

from ..domain.appointment import AppointmentStatus
from ..domain.protocol import Condition
from ..domain.timing import Anchor
from . import records
from .records import RowData
from .tables import appointments

# Serialises checks across processes on PostgreSQL, so one run sees every due appointment and
# each clinic gets one email per run, not one per process: any fixed 64-bit number.
CHECK_LOCK_KEY = 0x636F6E6669726D  # "confirm"


def confirm(conn: Connection, appointment_id: int, now: datetime, by: str) -> None:
    """Record a confirmation (the patient's latest reply 1 stands)."""
    _set(conn, appointment_id, confirmed_at=now, confirmed_by=by)


def confirm_once(conn: Connection, appointment_id: int, now: datetime, by: str) -> bool:
    """Record a confirmation unless there is one already (it keeps its first); whether it was
    recorded."""
    done = conn.execute(
        update(appointments)
        .where(appointments.c.id == appointment_id, appointments.c.confirmed_at.is_(None))
        .values(confirmed_at=now, confirmed_by=by)
    )
    return bool(done.rowcount)


def new_time_requested(conn: Connection, appointment_id: int, now: datetime) -> None:
    _set(conn, appointment_id, new_time_requested_at=now)


def take_turns(conn: Connection) -> None:
    """PostgreSQL: one check at a time across processes (to the end of this transaction).
    SQLite's writers take turns already (BEGIN IMMEDIATE)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": CHECK_LOCK_KEY})


def unlisted_candidates(
    conn: Connection,
    latest: Iterable[tuple[str, Anchor, datetime, Condition]],
    now: datetime,
) -> Iterator[RowData]:
    """Booked, unconfirmed, unlisted appointments still to come whose anchor (per protocol id:
    the booking, or the start) is at `latest` or before and whose flags meet the protocol's
    condition, as `records.select_with_patients` rows, soonest first. Read as they are
    consumed: the appointments near their deadline may be many, and most need no call."""
    bounds: list[ColumnElement[bool]] = []
    for protocol_id, anchor, at, condition in latest:
        booking = anchor is Anchor.BOOKING
        column = appointments.c.scheduled_at if booking else appointments.c.start_at
        flags = [
            appointments.c[name].in_(sorted(value.value for value in allowed))
            for name, allowed in condition.requirements
        ]
        bounds.append(and_(appointments.c.protocol_id == protocol_id, column <= at, *flags))
    query = (
        records.select_with_patients()
        .where(appointments.c.status == AppointmentStatus.BOOKED.value)
        .where(appointments.c.confirmed_at.is_(None))
        .where(appointments.c.confirmation_alerted_at.is_(None))
        .where(appointments.c.start_at > now)
        .where(or_(*bounds))
        .order_by(appointments.c.start_at, appointments.c.id)
    )
    return iter(conn.execute(query).mappings())


def claim_for_listing(conn: Connection, appointment_id: int, now: datetime) -> bool:
    """Mark the appointment listed, if nothing listed or confirmed it since it was read: the
    condition makes the claim atomic, so two processes never both list it."""
    done = conn.execute(
        update(appointments)
        .where(appointments.c.id == appointment_id)
        .where(appointments.c.confirmation_alerted_at.is_(None))
        .where(appointments.c.confirmed_at.is_(None))
        .where(appointments.c.status == AppointmentStatus.BOOKED.value)
        .values(confirmation_alerted_at=now)
    )
    return bool(done.rowcount)


def _set(conn: Connection, appointment_id: int, **values: object) -> None:
    conn.execute(update(appointments).where(appointments.c.id == appointment_id).values(**values))
