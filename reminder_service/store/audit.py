"""The audit log: entries written as AuditRecords, and an appointment's trail read back.

Imports write their many entries through bulk.insert_audit directly (rows encoded once for a
whole chunk); everything else writes records here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, Engine, or_, select

from ..domain.audit import AuditEvent, AuditRecord
from . import bulk
from .engine import reading
from .tables import appointments, audit_log, reminders

# Entries that name an appointment only by its source id in their detail: a cancellation that
# came before (or without) the appointment, and what it stopped.
_BY_EXTERNAL_ID = (AuditEvent.CANCEL_NOT_FOUND, AuditEvent.OUT_OF_ORDER)


def write(conn: Connection, records: Iterable[AuditRecord]) -> None:
    """Entries in one statement (none: nothing written)."""
    bulk.insert_audit(conn, [record.as_row() for record in records])


def noted(conn: Connection, appointment_id: int, reminder_id: int, event: AuditEvent) -> bool:
    """Whether this reminder has an entry of this event already."""
    found = conn.execute(
        select(audit_log.c.id)
        .where(audit_log.c.appointment_id == appointment_id)  # indexed
        .where(audit_log.c.reminder_id == reminder_id)
        .where(audit_log.c.event == event.value)
        .limit(1)
    ).first()
    return found is not None


def appointment_trail(engine: Engine, external_id: str) -> tuple[bool, list[dict[str, Any]]]:
    """Whether an appointment with this source id is stored, and every entry about it, oldest
    first: its own, and a cancellation for its id from before (or without) it. Each entry has
    at, event, reason, reminder_id, the reminder's step_id and channel, and its detail decoded."""
    with reading(engine) as conn:
        appointment_id = conn.execute(
            select(appointments.c.id).where(appointments.c.external_id == external_id)
        ).scalar()
        about_it = audit_log.c.appointment_id == appointment_id
        unknown_cancel = (  # a cancellation for it before it was known, and what it stopped
            audit_log.c.appointment_id.is_(None)
            & audit_log.c.event.in_([event.value for event in _BY_EXTERNAL_ID])
            & audit_log.c.detail.contains(json.dumps(external_id))
        )
        rows = conn.execute(
            select(audit_log, reminders.c.step_id, reminders.c.channel)
            .outerjoin(reminders, reminders.c.id == audit_log.c.reminder_id)
            .where(or_(about_it, unknown_cancel) if appointment_id is not None else unknown_cancel)
            .order_by(audit_log.c.at, audit_log.c.id)
        ).mappings()
        entries = [
            {**row, "detail": json.loads(row["detail"]) if row["detail"] else None} for row in rows
        ]
    # `contains` found candidates; only an exact id is this appointment's.
    entries = [
        e for e in entries if (e["detail"] or {}).get("external_id", external_id) == external_id
    ]
    return appointment_id is not None, entries
