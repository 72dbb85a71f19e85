"""The status report's counts and lists, read in one connection."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select

from ..domain.appointment import AppointmentStatus
from ..domain.audit import AuditEvent
from ..domain.planning import ReminderStatus
from ..domain.replies import ReplyKind
from .engine import reading
from .tables import appointments, audit_log, inbound_messages, reminders


@dataclass(frozen=True, slots=True)
class StatusCounts:
    reminders_by_status: dict[str, int]  # only the statuses some reminder has
    appointments_by_status: dict[str, int]
    next_due: datetime | None  # the earliest pending reminder's
    # The latest failed reminders: id, appointment_id (the source's), step_id, channel, reason,
    # updated_at.
    recent_failures: list[dict[str, Any]]
    # The latest staff alerts' audit entries: at, appointment_id (the source's), reason.
    staff_alerts: list[dict[str, Any]]
    appointments_with_later_reminders: int
    confirmed: int  # booked appointments confirmed
    new_time_requested: int  # booked appointments whose patient asked for a new time
    free_text: int  # free-text replies


def status_counts(engine: Engine, latest: int) -> StatusCounts:
    """The counts, and the `latest` failures and staff alerts, newest first."""
    with reading(engine) as conn:
        # A comprehension, not dict(result): results have keys(), so dict() reads them as mappings.
        by_status: dict[str, int] = {
            status: int(count)
            for status, count in conn.execute(
                select(reminders.c.status, func.count()).group_by(reminders.c.status)
            ).tuples()
        }
        appointment_counts: dict[str, int] = {
            status: int(count)
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
                .limit(latest)
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
                .limit(latest)
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
        confirmed = conn.execute(
            select(func.count()).where(booked, appointments.c.confirmed_at.is_not(None))
        ).scalar_one()
        new_time = conn.execute(
            select(func.count()).where(booked, appointments.c.new_time_requested_at.is_not(None))
        ).scalar_one()
        free_text = conn.execute(
            select(func.count())
            .select_from(inbound_messages)
            .where(inbound_messages.c.kind == ReplyKind.OTHER.value)
        ).scalar_one()
    return StatusCounts(
        by_status,
        appointment_counts,
        next_due,
        [dict(f) for f in failed],
        [dict(a) for a in alerts],
        int(later),
        int(confirmed),
        int(new_time),
        int(free_text),
    )
