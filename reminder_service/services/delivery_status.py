"""Delivery status: what the provider reports after accepting a message.

Twilio calls back as a message moves through queued, sending, sent, and finally delivered,
undelivered or failed. Callbacks can arrive out of order, so a status never replaces a later one.
An SMS reported undelivered or failed goes on to the follow-ups: the step by email, or staff.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select, update

from ..channels.base import Failure, FailureKind
from ..clock import Clock
from ..domain.failure_rules import FailureTable
from ..store import bulk
from ..store.tables import appointments, patients, reminders
from .follow_ups import FollowUps, record_opt_outs

# How far along each status is; terminal ones share the last rank.
PROGRESS = {
    "accepted": 1, "scheduled": 1, "queued": 1, "sending": 2, "sent": 3,
    "delivered": 4, "undelivered": 4, "failed": 4, "read": 5,
}  # fmt: skip
NOT_DELIVERED = frozenset({"undelivered", "failed"})


class DeliveryStatusService:
    def __init__(
        self, engine: Engine, follow_ups: FollowUps, failures: FailureTable, clock: Clock
    ) -> None:
        self._engine = engine
        self._follow_ups = follow_ups
        self._failures = failures
        self._clock = clock

    def record(
        self, reminder_id: int, message_sid: str, status: str, error_code: str | None
    ) -> str:
        """Apply one callback; returns what happened ("recorded", "stale", "unknown")."""
        status = status.strip().lower()
        if status not in PROGRESS:
            return "unknown"
        now = self._clock()
        with self._engine.begin() as conn:
            row = (
                conn.execute(select(reminders).where(reminders.c.id == reminder_id))
                .mappings()
                .first()
            )
            if row is None or not message_sid or row["provider_id"] != message_sid:
                return "unknown"  # not ours, or not this message: change nothing
            current = row["delivery_status"]
            if current is not None and PROGRESS[status] <= PROGRESS.get(current, 0):
                return "stale"
            conn.execute(
                update(reminders)
                .where(reminders.c.id == reminder_id)
                .values(
                    delivery_status=status,
                    delivery_error=error_code or None,
                    delivery_updated_at=now,
                )
            )
            reason = f"provider reports {status}" + (f" (error {error_code})" if error_code else "")
            bulk.insert_audit(
                conn, [_audit(row["appointment_id"], reminder_id, status, reason, now)]
            )
            if status in NOT_DELIVERED:
                self._not_delivered(conn, dict(row), reason, error_code, now)
        return "recorded"

    def _not_delivered(
        self, conn: Connection, row: dict[str, Any], reason: str, code: str | None, now: datetime
    ) -> None:
        if code:
            verdict = self._failures.classify(Failure("twilio", FailureKind.HTTP, code=code))
            if verdict.opt_out:
                phone = _phone_of(conn, row["appointment_id"])
                if phone:
                    record_opt_outs(conn, [phone], now, source=f"twilio error {code}")
        self._follow_ups.after_undeliverable(conn, [(row, reason)], now)


def _phone_of(conn: Connection, appointment_id: int) -> str | None:
    phone: str | None = conn.execute(
        select(patients.c.mobile)
        .join(appointments, appointments.c.patient_id == patients.c.id)
        .where(appointments.c.id == appointment_id)
    ).scalar()
    return phone


def _audit(
    appointment_id: int, reminder_id: int, status: str, reason: str, now: datetime
) -> dict[str, object]:
    return {
        "at": now,
        "appointment_id": appointment_id,
        "reminder_id": reminder_id,
        "event": f"delivery_{status}",
        "reason": reason,
        "detail": json.dumps({"delivery_status": status}),
    }
