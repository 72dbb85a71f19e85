"""Delivery status: what the provider reports after accepting a message.

Twilio calls back as a message moves through queued, sending, sent, and finally delivered,
undelivered or failed. Callbacks can arrive out of order, so a status never replaces a later one.
An SMS reported undelivered or failed goes on to the follow-ups: the step by email, or staff.

A send whose answer was lost (a read timeout, a dropped connection, a 5xx) may still have been
accepted; the dispatcher then marks the reminder `maybe_accepted_at` and waits before asking
Twilio and trying again. A process that died mid-send leaves its attempt written down
(`attempt_started_at`). A callback naming such a reminder with a MessageSid we never saw is that
attempt: a reminder still waiting (to retry, or for its lease to run out) becomes sent and is not
sent again; one that has moved on (retried, or failed over to email) gets an audit note that the
patient may have had it twice. One that a dispatcher holds right now is left to it: it is asking
Twilio about that very attempt.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING

from ..clock import Clock
from ..domain.audit import AuditEvent, AuditRecord
from ..domain.failure_rules import FailureTable
from ..domain.failures import Failure, FailureKind
from ..domain.planning import ReminderStatus
from ..domain.protocol import Channel
from ..domain.reminder import Reminder
from ..store import audit, deliveries, opt_outs
from ..store.deliveries import Delivery
from ..store.reminders import reminder_row, stored_channel
from .follow_ups import FollowUps

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

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
        """Apply one callback; returns what happened: "recorded", "stale", "unknown", or
        "duplicate" (an attempt whose answer was lost, after the reminder moved on)."""
        status = status.strip().lower()
        if status not in PROGRESS:
            return "unknown"
        now = self._clock()
        with self._engine.begin() as conn:
            found = deliveries.find(conn, reminder_id)
            if found is None or not message_sid:
                return "unknown"
            reminder = found.reminder
            if found.provider_id != message_sid:
                in_doubt = found.maybe_accepted_at or reminder.attempt_started_at
                if in_doubt is None or stored_channel(reminder) != Channel.SMS.value:
                    return "unknown"  # not ours, or not this message: change nothing
                if _held(found, now):
                    return "unknown"  # its later callbacks find it settled by the dispatcher
                if not self._adopt(conn, found, message_sid, now):
                    return "duplicate"
                found = replace(found, provider_id=message_sid, delivery_status=None)
            current = found.delivery_status
            if current is not None and PROGRESS[status] <= PROGRESS.get(current, 0):
                return "stale"
            deliveries.record_status(conn, reminder_id, status, error_code or None, now)
            reason = f"provider reports {status}" + (f" (error {error_code})" if error_code else "")
            audit.write(conn, [_audit(reminder.appointment_id, reminder_id, status, reason, now)])
            if status in NOT_DELIVERED:
                self._not_delivered(conn, reminder, reason, error_code, now)
        return "recorded"

    def _adopt(self, conn: Connection, found: Delivery, sid: str, now: datetime) -> bool:
        """A callback for an attempt whose answer was lost: Twilio did accept it. A reminder still
        waiting to retry becomes sent (no second copy); otherwise the patient may already have
        two, or a fallback went instead, and the audit log says so for staff."""
        row = found.reminder
        sent_at = found.maybe_accepted_at or row.attempt_started_at
        adopted = deliveries.adopt(conn, row.id, sid, sent_at, now)
        if adopted:
            event = AuditEvent.LOST_ANSWER_ACCEPTED
            reason = "Twilio accepted an attempt whose answer was lost: sent, not sent again"
        else:
            event = AuditEvent.LOST_ANSWER_DUPLICATE
            reason = (
                "Twilio accepted an attempt whose answer was lost, after the reminder had moved "
                f"on ({row.status.value}): the patient has this text as well as what came after it "
                "(a second copy, a fallback, or a replacement)"
            )
        if not adopted and audit.noted(conn, row.appointment_id, row.id, event):
            return False  # Twilio calls back at each status; one note for staff is enough
        entry = AuditRecord(
            now, event, reason, row.appointment_id, row.id, detail={"message_sid": sid}
        )
        audit.write(conn, [entry])
        return adopted

    def _not_delivered(
        self, conn: Connection, reminder: Reminder, reason: str, code: str | None, now: datetime
    ) -> None:
        if code:
            verdict = self._failures.classify(Failure("twilio", FailureKind.HTTP, code=code))
            if verdict.opt_out:
                # The caregiver's number for a copy: a caregiver who unsubscribed must not
                # silence the patient, nor the other way round.
                phone = deliveries.number_texted(conn, reminder)
                if phone:
                    opt_outs.record_sms(conn, [phone], now, source=f"twilio error {code}")
        self._follow_ups.after_undeliverable(conn, [(reminder_row(reminder), reason)], now)


def _held(found: Delivery, now: datetime) -> bool:
    """A dispatcher holds the reminder (claimed, lease still running)."""
    lease = found.lease_until
    return found.reminder.status is ReminderStatus.SENDING and lease is not None and lease >= now


def _audit(
    appointment_id: int, reminder_id: int, status: str, reason: str, now: datetime
) -> AuditRecord:
    return AuditRecord(
        now,
        AuditEvent.delivery(status),
        reason,
        appointment_id,
        reminder_id,
        detail={"delivery_status": status},
    )
