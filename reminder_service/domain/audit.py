"""The audit trail's vocabulary: every event the service records, and one entry as a type.

Entries hold decisions and facts (an outcome, a reason, a body's hash), never a message body or
a patient's contact details.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class AuditEvent(StrEnum):
    # An appointment's import (the outcome of its change) and its plan.
    IMPORTED = "imported"
    RESCHEDULED = "rescheduled"
    UPDATED = "updated"
    CANCELLED = "cancelled"  # also: a reminder stopped because its appointment was cancelled
    UNCHANGED = "unchanged"
    NOT_SERVED = "not_served"
    CANCEL_NOT_FOUND = "cancel_not_found"  # a cancellation for an appointment not known here
    OUT_OF_ORDER = "out_of_order"  # older than the change already applied
    IN_THE_PAST = "in_the_past"  # booked to start before the import that brought it
    PLANNED = "planned"  # reminders planned when the planning horizon reached them
    REPLANNED = "replanned"  # planned anew after the protocols or clinic settings changed
    # A reminder's send.
    SENT = "sent"
    FAILED = "failed"
    SKIPPED = "skipped"
    DEFERRED = "deferred"  # back to pending: a retry, or the send window
    MERGED = "merged"  # its line went with another text
    LOST_ANSWER_ACCEPTED = "lost_answer_accepted"
    LOST_ANSWER_DUPLICATE = "lost_answer_duplicate"
    # What the provider reports after the send.
    DELIVERY_ACCEPTED = "delivery_accepted"
    DELIVERY_SCHEDULED = "delivery_scheduled"
    DELIVERY_QUEUED = "delivery_queued"
    DELIVERY_SENDING = "delivery_sending"
    DELIVERY_SENT = "delivery_sent"
    DELIVERY_DELIVERED = "delivery_delivered"
    DELIVERY_UNDELIVERED = "delivery_undelivered"
    DELIVERY_FAILED = "delivery_failed"
    DELIVERY_READ = "delivery_read"
    DELIVERY_BOUNCED = "delivery_bounced"
    DELIVERY_DELAYED = "delivery_delayed"
    # The patient and the staff.
    CONFIRMED = "confirmed"
    OPTED_OUT = "opted_out"
    OPTED_IN = "opted_in"
    REPLY = "reply"
    REPLY_HANDLED = "reply_handled"
    STAFF_ALERT = "staff_alert"

    @classmethod
    def delivery(cls, status: str) -> AuditEvent:
        """The event for a delivery status the provider reported ("delivered", ...)."""
        return cls(f"delivery_{status}")


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """One entry to write. `detail` is JSON-able facts (ids, hashes, counts), no text; or that
    JSON already encoded (the import's bulk path encodes each plan's detail once)."""

    at: datetime
    event: AuditEvent
    reason: str
    appointment_id: int | None = None
    reminder_id: int | None = None
    detail: dict[str, Any] | str | None = None

    def as_row(self) -> dict[str, Any]:
        """The audit_log row it is stored as."""
        return {
            "at": self.at,
            "appointment_id": self.appointment_id,
            "reminder_id": self.reminder_id,
            "event": self.event.value,
            "reason": self.reason,
            "detail": self.detail
            if self.detail is None or isinstance(self.detail, str)
            else json.dumps(self.detail, default=str),
        }
