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

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, and_, or_, select, update

from ..clock import Clock
from ..domain.audit import AuditEvent, AuditRecord
from ..domain.failure_rules import FailureTable
from ..domain.failures import Failure, FailureKind
from ..domain.planning import Recipient, ReminderStatus
from ..domain.protocol import Channel
from ..store import audit, opt_outs
from ..store.tables import appointments, patients, reminders
from .follow_ups import FollowUps

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
            found = (
                conn.execute(select(reminders).where(reminders.c.id == reminder_id))
                .mappings()
                .first()
            )
            row = dict(found) if found is not None else None
            if row is None or not message_sid:
                return "unknown"
            if row["provider_id"] != message_sid:
                in_doubt = row["maybe_accepted_at"] or row["attempt_started_at"]
                if in_doubt is None or row["channel"] != Channel.SMS.value:
                    return "unknown"  # not ours, or not this message: change nothing
                if _held(row, now):
                    return "unknown"  # its later callbacks find it settled by the dispatcher
                if not self._adopt(conn, row, message_sid, now):
                    return "duplicate"
                row = {**row, "provider_id": message_sid, "delivery_status": None}
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
            audit.write(conn, [_audit(row["appointment_id"], reminder_id, status, reason, now)])
            if status in NOT_DELIVERED:
                self._not_delivered(conn, dict(row), reason, error_code, now)
        return "recorded"

    def _adopt(self, conn: Connection, row: dict[str, Any], sid: str, now: datetime) -> bool:
        """A callback for an attempt whose answer was lost: Twilio did accept it. A reminder still
        waiting to retry becomes sent (no second copy); otherwise the patient may already have
        two, or a fallback went instead, and the audit log says so for staff."""
        waiting = or_(
            reminders.c.status == ReminderStatus.PENDING,
            and_(reminders.c.status == ReminderStatus.SENDING, reminders.c.lease_until < now),
        )
        adopted = conn.execute(
            update(reminders)
            .where(reminders.c.id == row["id"])
            .where(waiting)
            .where(reminders.c.provider_id.is_(None))
            .values(
                status=ReminderStatus.SENT,
                reason="sent: Twilio accepted the attempt whose answer was lost",
                provider_id=sid,
                sent_at=row["maybe_accepted_at"] or row["attempt_started_at"],
                updated_at=now,
                lease_until=None,
                claim_token=None,
                attempt_started_at=None,
                attempt_to=None,
                attempt_sha256=None,
            )
        ).rowcount
        if adopted:
            event = AuditEvent.LOST_ANSWER_ACCEPTED
            reason = "Twilio accepted an attempt whose answer was lost: sent, not sent again"
        else:
            event = AuditEvent.LOST_ANSWER_DUPLICATE
            reason = (
                "Twilio accepted an attempt whose answer was lost, after the reminder had moved "
                f"on ({row['status']}): the patient has this text as well as what came after it "
                "(a second copy, a fallback, or a replacement)"
            )
        if not adopted and audit.noted(conn, row["appointment_id"], row["id"], event):
            return False  # Twilio calls back at each status; one note for staff is enough
        entry = AuditRecord(
            now, event, reason, row["appointment_id"], row["id"], detail={"message_sid": sid}
        )
        audit.write(conn, [entry])
        return bool(adopted)

    def _not_delivered(
        self, conn: Connection, row: dict[str, Any], reason: str, code: str | None, now: datetime
    ) -> None:
        if code:
            verdict = self._failures.classify(Failure("twilio", FailureKind.HTTP, code=code))
            if verdict.opt_out:
                phone = _phone_of(conn, row)
                if phone:
                    opt_outs.record_sms(conn, [phone], now, source=f"twilio error {code}")
        self._follow_ups.after_undeliverable(conn, [(row, reason)], now)


def _held(row: dict[str, Any], now: datetime) -> bool:
    """A dispatcher holds the reminder (claimed, lease still running)."""
    lease = row["lease_until"]
    return row["status"] == ReminderStatus.SENDING and lease is not None and lease >= now


def _phone_of(conn: Connection, row: dict[str, Any]) -> str | None:
    """The number the reminder went to: the patient's, or their caregiver's for a copy (a
    caregiver who unsubscribed must not silence the patient, nor the other way round)."""
    copy = row["recipient"] == Recipient.CAREGIVER.value
    column = patients.c.caregiver_mobile if copy else patients.c.mobile
    phone: str | None = conn.execute(
        select(column)
        .join(appointments, appointments.c.patient_id == patients.c.id)
        .where(appointments.c.id == row["appointment_id"])
    ).scalar()
    return phone


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
