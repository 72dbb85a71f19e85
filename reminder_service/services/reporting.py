"""Status: counts by status, the next due reminder, recent failures."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from ..domain.appointment import AppointmentStatus
from ..domain.audit import AuditEvent
from ..domain.planning import ReminderStatus
from ..domain.replies import ReplyKind
from ..store.engine import reading
from ..store.tables import appointments, audit_log, inbound_messages, reminders


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
    with reading(engine) as conn:
        # A comprehension, not dict(result): results have keys(), so dict() reads them as mappings.
        by_status: dict[str, int] = {
            status: count
            for status, count in conn.execute(
                select(reminders.c.status, func.count()).group_by(reminders.c.status)
            ).tuples()
        }
        appointment_counts: dict[str, int] = {
            status: count
            for status, count in conn.execute(
                select(appointments.c.status, func.count()).group_by(appointments.c.status)
            ).tuples()
        }
        next_due = conn.execute(
            select(func.min(reminders.c.due_at)).where(
                reminders.c.status == ReminderStatus.PENDING.value
            )
        ).scalar()
        failed = (
            conn.execute(
                select(
                    reminders.c.id,
                    appointments.c.external_id.label("appointment_id"),
                    reminders.c.step_id,
                    reminders.c.channel,
                    reminders.c.reason,
                    reminders.c.updated_at,
                )
                .join(appointments, appointments.c.id == reminders.c.appointment_id)
                .where(reminders.c.status == ReminderStatus.FAILED.value)
                .order_by(reminders.c.updated_at.desc())
                .limit(failures)
            )
            .mappings()
            .all()
        )
        alerts = (
            conn.execute(
                select(
                    audit_log.c.at,
                    appointments.c.external_id.label("appointment_id"),
                    audit_log.c.reason,
                )
                .join(appointments, appointments.c.id == audit_log.c.appointment_id)
                .where(audit_log.c.event == AuditEvent.STAFF_ALERT.value)
                .order_by(audit_log.c.at.desc(), audit_log.c.id.desc())
                .limit(failures)
            )
            .mappings()
            .all()
        )
        later = conn.execute(
            select(func.count())
            .select_from(appointments)
            .where(appointments.c.plan_resume_at.is_not(None))
        ).scalar_one()
        booked = appointments.c.status == AppointmentStatus.BOOKED.value
        replies = {
            "confirmed": conn.execute(
                select(func.count()).where(booked, appointments.c.confirmed_at.is_not(None))
            ).scalar_one(),
            "new_time_requested": conn.execute(
                select(func.count()).where(
                    booked, appointments.c.new_time_requested_at.is_not(None)
                )
            ).scalar_one(),
            "free_text": conn.execute(
                select(func.count())
                .select_from(inbound_messages)
                .where(inbound_messages.c.kind == ReplyKind.OTHER.value)
            ).scalar_one(),
        }
    counts = {s.value: int(by_status.get(s.value, 0)) for s in ReminderStatus}
    return StatusReport(
        counts,
        {k: int(v) for k, v in appointment_counts.items()},
        next_due,
        [dict(f) for f in failed],
        [dict(a) for a in alerts],
        int(later),
        {k: int(v) for k, v in replies.items()},
    )
