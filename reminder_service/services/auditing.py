"""The audit trail of one appointment: every decision about it and its reminders, in order."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..store import audit
from .previewing import NotFound

if TYPE_CHECKING:
    from sqlalchemy import Engine


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
    known, rows = audit.appointment_trail(engine, external_id)
    if not known and not rows:
        raise NotFound(f"no appointment with id {external_id!r}")
    return [
        AuditEntry(
            at=row["at"],
            event=row["event"],
            reason=row["reason"],
            step=row["step_id"],
            channel=row["channel"],
            reminder_id=row["reminder_id"],
            detail=row["detail"],
        )
        for row in rows
    ]
