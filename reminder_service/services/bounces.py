"""Bounces, as they arrive: an email the mail system accepted and later could not deliver.

A permanent failure (Action: failed, Status 5.x.x) marks the email `bounced`, and the step goes
on to the follow-ups like an SMS reported undelivered: staff are told when no channel of the
step reached the patient. A delay (4.x.x) is only noted in the audit log: the mail system is
still trying. Bounces for unknown or forged envelope addresses change nothing (see
channels/bounces.py), nor do repeats of one already recorded.

The same address takes unsubscribe emails: a patient's mail client sends one to the
List-Unsubscribe mailto (local+u<token>@...), and a token that verifies puts the address on
the email opt-out list at once (see channels/unsubscribe.py).
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from ..channels.bounces import BounceAddress, DeliveryReport, read_dsn
from ..channels.unsubscribe import UnsubscribeLinks
from ..clock import Clock
from ..domain.audit import AuditEvent, AuditRecord
from ..domain.planning import ReminderStatus
from ..domain.protocol import Channel
from ..domain.reminder import Reminder
from ..store import audit, deliveries
from ..store.reminders import reminder_row, stored_channel
from .email_opt_outs import UNSUBSCRIBE_EMAIL, EmailOptOuts, TokenCheck
from .follow_ups import FollowUps

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = logging.getLogger(__name__)

BOUNCED = "bounced"


class BounceService:
    def __init__(
        self,
        engine: Engine,
        follow_ups: FollowUps,
        address: BounceAddress,
        clock: Clock,
        *,
        unsubscribe: UnsubscribeLinks | None = None,
        opt_outs: EmailOptOuts | None = None,
    ) -> None:
        self._unsubscribe = unsubscribe
        self._opt_outs = opt_outs
        self._engine = engine
        self._follow_ups = follow_ups
        self._address = address
        self._clock = clock

    def receive(self, recipients: list[str], raw: bytes) -> str:
        """One message delivered to the bounce address: what became of it ("bounced",
        "delayed", "repeat", "not a bounce", "not ours"; "unsubscribed", "unsubscribe not
        ours" for an unsubscribe email)."""
        unsubscribed = self._unsubscribed(recipients)
        if unsubscribed is not None:
            return unsubscribed
        ids = {self._address.reminder_of(r) for r in recipients} - {None}
        if len(ids) != 1:
            return "not ours"  # no tag of ours, a forged one, or several at once
        reports = read_dsn(raw)
        if not reports:
            return "not a bounce"  # an auto-reply or anything else sent to the address
        (reminder_id,) = ids
        assert reminder_id is not None
        return self.record(reminder_id, reports)

    def _unsubscribed(self, recipients: list[str]) -> str | None:
        """What became of an unsubscribe email, or None when the message is not one."""
        if self._unsubscribe is None or self._opt_outs is None:
            return None
        tokens = [t for t in map(self._unsubscribe.token_in, recipients) if t is not None]
        if not tokens:
            return None
        # Whatever the message says: a mail client's unsubscribe email is the request itself.
        outcomes = {self._opt_outs.unsubscribe(token, UNSUBSCRIBE_EMAIL) for token in tokens}
        return "unsubscribed" if TokenCheck.VALID in outcomes else "unsubscribe not ours"

    def record(self, reminder_id: int, reports: list[DeliveryReport]) -> str:
        failed = next((r for r in reports if r.permanent), None)
        delayed = next((r for r in reports if r.action == "delayed"), None)
        if failed is None and delayed is None:
            return "not a failure"  # e.g. a "delivered" or "relayed" report
        now = self._clock()
        with self._engine.begin() as conn:
            found = deliveries.find(conn, reminder_id)
            if found is None or stored_channel(found.reminder) != Channel.EMAIL.value:
                return "not ours"  # a staff alert's bounce is not followed up either
            reminder = found.reminder
            if found.delivery_status == BOUNCED:
                return "repeat"
            if failed is None:
                assert delayed is not None
                reason = f"the mail system is still trying (status {delayed.status or 'none'})"
                audit.write(conn, [_audit(reminder, AuditEvent.DELIVERY_DELAYED, reason, now)])
                return "delayed"
            code = failed.status or "5.0.0"
            reason = f"bounced: {_meaning(code)} (status {code})"
            deliveries.record_status(conn, reminder_id, BOUNCED, code, now)
            audit.write(conn, [_audit(reminder, AuditEvent.DELIVERY_BOUNCED, reason, now)])
            if reminder.status is ReminderStatus.SENT:
                bounced = reminder_row(reminder)
                self._follow_ups.after_undeliverable(conn, [(bounced, reason)], now)
        log.info("reminder %s: email bounced (status %s)", reminder_id, code)
        return "bounced"


# RFC 3463 subjects and details that clinics meet; the rest by class.
_MEANINGS = {
    "5.1.1": "no such mailbox",
    "5.1.2": "no such mail domain",
    "5.1.10": "no such mailbox",
    "5.2.1": "the mailbox is disabled",
    "5.2.2": "the mailbox is full",
    "5.4.1": "the receiving server refused it",
    "5.7.1": "refused by the receiving server's policy",
}


def _meaning(code: str) -> str:
    return _MEANINGS.get(code, "the mail system could not deliver it")


def _audit(reminder: Reminder, event: AuditEvent, reason: str, now: datetime) -> AuditRecord:
    status = event.value.removeprefix("delivery_")
    return AuditRecord(
        now,
        event,
        reason,
        reminder.appointment_id,
        reminder.id,
        detail={"delivery_status": status},
    )
