"""The audit trail of one appointment: every decision about it and its reminders, in order."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, select

from ..store.engine import reading
from ..store.tables import appointments, audit_log, reminders
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
    """Raises NotFound for an unknown appointment. Entries never hold a message body (only its
    hash) nor contact details."""
    with reading(engine) as conn:
        appointment_id = conn.execute(
            select(appointments.c.id).where(appointments.c.external_id == external_id)
        ).scalar()
        if appointment_id is None:
            raise NotFound(f"no appointment with id {external_id!r}")
        rows = conn.execute(
            select(audit_log, reminders.c.step_id, reminders.c.channel)
            .outerjoin(reminders, reminders.c.id == audit_log.c.reminder_id)
            .where(audit_log.c.appointment_id == appointment_id)
            .order_by(audit_log.c.at, audit_log.c.id)
        ).mappings()
        return [
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
