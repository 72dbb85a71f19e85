"""The audit trail of one appointment: every decision about it and its reminders, in order."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, or_, select

from ..store.engine import reading
from ..store.tables import appointments, audit_log, reminders
from .importing import CANCEL_NOT_FOUND
from .previewing import NotFound


@dataclass(frozen=True)
class AuditEntry:
    at: datetime
    event: str
    reason: str
    step: str | None  # None: about the appointment itself
    channel: str | None
    reminder_id: int | None
    detail: dict[str, Any] | None

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "event": self.event,
            "reason": self.reason,
            "step": self.step,
            "channel": self.channel,
            "reminder_id": self.reminder_id,
            "detail": self.detail,
        }


def audit_trail(engine: Engine, external_id: str) -> list[AuditEntry]:
    """Raises NotFound for an appointment nobody ever sent. Entries never hold a message body
    (only its hash) nor contact details. A cancellation that came for this id before (or
    without) the appointment itself is part of its trail."""
    with reading(engine) as conn:
        appointment_id = conn.execute(
            select(appointments.c.id).where(appointments.c.external_id == external_id)
        ).scalar()
        about_it = audit_log.c.appointment_id == appointment_id
        unknown_cancel = (  # a cancellation for it before it was known, and what it stopped
            audit_log.c.appointment_id.is_(None)
            & audit_log.c.event.in_([CANCEL_NOT_FOUND, "out_of_order"])
            & audit_log.c.detail.contains(json.dumps(external_id))
        )
        rows = conn.execute(
            select(audit_log, reminders.c.step_id, reminders.c.channel)
            .outerjoin(reminders, reminders.c.id == audit_log.c.reminder_id)
            .where(or_(about_it, unknown_cancel) if appointment_id is not None else unknown_cancel)
            .order_by(audit_log.c.at, audit_log.c.id)
        ).mappings()
        entries = [
            AuditEntry(
                at=row["at"],
                event=row["event"],
                reason=row["reason"],
                step=row["step_id"],
                channel=row["channel"],
                reminder_id=row["reminder_id"],
                detail=json.loads(row["detail"]) if row["detail"] else None,
            )
            for row in rows
        ]
    # `contains` found candidates; only an exact id is this appointment's.
    entries = [
        e for e in entries if (e.detail or {}).get("external_id", external_id) == external_id
    ]
    if appointment_id is None and not entries:
        raise NotFound(f"no appointment with id {external_id!r}")
    return entries
