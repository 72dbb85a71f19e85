"""Status: counts by status, the next due reminder, recent failures."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..domain.planning import ReminderStatus
from ..store.reports import status_counts

if TYPE_CHECKING:
    from sqlalchemy import Engine


@dataclass(frozen=True)
class StatusReport:
    reminders_by_status: dict[str, int]
    appointments_by_status: dict[str, int]
    next_due: datetime | None
    recent_failures: list[dict[str, Any]]
    staff_alerts: list[dict[str, Any]]
    # Appointments with reminders beyond the planning horizon, not counted above yet.
    appointments_with_later_reminders: int = 0
    # Replies by SMS: booked appointments confirmed (1), new times asked for (2), free text.
    replies: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "reminders_by_status": self.reminders_by_status,
            "appointments_by_status": self.appointments_by_status,
            "next_due": self.next_due.isoformat() if self.next_due else None,
            "recent_failures": [
                {**f, "updated_at": f["updated_at"].isoformat()} for f in self.recent_failures
            ],
            "staff_alerts": [{**a, "at": a["at"].isoformat()} for a in self.staff_alerts],
            "appointments_with_later_reminders": self.appointments_with_later_reminders,
            "replies": self.replies,
        }


def status_report(engine: Engine, failures: int = 10) -> StatusReport:
    counts = status_counts(engine, failures)
    return StatusReport(
        {s.value: counts.reminders_by_status.get(s.value, 0) for s in ReminderStatus},
        counts.appointments_by_status,
        counts.next_due,
        counts.recent_failures,
        counts.staff_alerts,
        counts.appointments_with_later_reminders,
        {
            "confirmed": counts.confirmed,
            "new_time_requested": counts.new_time_requested,
            "free_text": counts.free_text,
        },
    )
