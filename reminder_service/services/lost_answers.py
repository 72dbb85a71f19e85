"""SMS attempts whose outcome is unknown: ask the provider before sending again.

A reminder claimed with an attempt still written down (the process died mid-send, or the
answer was lost) may have reached the provider. It is asked first, outside any transaction: a
message found, and not already recorded for another reminder, makes the reminder sent with that
message's id; none found, the caller sends it anew; the provider cannot be asked, it waits and
is asked again later.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from ..channels.base import AcceptedSms, ChannelError, SentQuery, SmsLookup
from ..clock import Clock
from ..domain.failure_rules import FailureTable
from ..domain.failures import Failure, FailureKind
from ..domain.planning import ReminderStatus
from ..domain.reminder import Outcome, Reminder
from ..domain.retries import Jitter, RetryPolicy, as_outcome, retry
from ..store.reminders import ReminderStore
from .delivery_status import NOT_DELIVERED, PROGRESS

log = logging.getLogger(__name__)

ADOPTED = "sent: the provider had accepted an earlier attempt, so it was not sent again"


class LostAnswers:
    def __init__(
        self,
        lookup: SmsLookup,
        store: ReminderStore,
        failures: FailureTable,
        clock: Clock,
        retries: RetryPolicy,
        jitter: Jitter,
        taken: set[str],
    ) -> None:
        """`taken`: message ids this process has had from the provider and may not have
        recorded yet (shared with the sender): a lookup must not give one of them to another
        reminder (same number, same body)."""
        self._lookup = lookup
        self._store = store
        self._failures = failures
        self._clock = clock
        self._retries = retries
        self._jitter = jitter
        self._taken = taken

    async def ask(self, reminder: Reminder) -> Outcome | None:
        """The reminder sent by its earlier attempt, or waiting to ask again; None when the
        provider has no such message (send it anew)."""
        try:
            found = await self._lookup.find_accepted(_query(reminder))
        except ChannelError as exc:
            return self._cannot_ask(reminder, exc.failure.describe())
        except Exception as exc:  # a bug: the same, never a blind second send
            log.exception("reminder %s: unexpected error while asking the provider", reminder.id)
            return self._cannot_ask(reminder, f"unexpected error: {type(exc).__name__}")
        accepted = await self._unrecorded(found)
        return None if accepted is None else self._adopted(reminder, accepted)

    async def _unrecorded(self, found: list[AcceptedSms]) -> AcceptedSms | None:
        """The oldest message found that is no other reminder's (the same text can go to one
        number for two patients: twins booked together)."""
        candidates = [m for m in found if m.provider_id not in self._taken]
        if not candidates:
            return None
        ids = [m.provider_id for m in candidates]
        recorded = await asyncio.to_thread(self._store.recorded_provider_ids, ids)
        for message in candidates:
            if message.provider_id not in recorded and message.provider_id not in self._taken:
                self._taken.add(message.provider_id)
                return message
        return None

    def _adopted(self, reminder: Reminder, accepted: AcceptedSms) -> Outcome:
        now = self._clock()
        changes: dict[str, Any] = {
            "sent_at": accepted.accepted_at or reminder.attempt_started_at,
            "provider_id": accepted.provider_id,
        }
        if accepted.status in PROGRESS:
            changes |= {
                "delivery_status": accepted.status,
                "delivery_error": accepted.error_code,
                "delivery_updated_at": now,
            }
        detail = {"adopted": accepted.provider_id, "delivery_status": accepted.status}
        outcome = Outcome(reminder, ReminderStatus.SENT, ADOPTED, changes, detail)
        if accepted.status in NOT_DELIVERED:  # as its status callback would have said
            outcome.undeliverable = True
            outcome.reason = f"{ADOPTED}; provider reports {accepted.status}"
            if accepted.error_code:
                failure = Failure(accepted.provider, FailureKind.HTTP, code=accepted.error_code)
                if self._failures.classify(failure).opt_out:
                    outcome.opt_out = reminder.attempt_to
        return outcome

    def _cannot_ask(self, reminder: Reminder, why: str) -> Outcome:
        """The provider could not say whether the attempt was accepted: nothing is sent; ask
        again later (the attempt stays written down)."""
        reason = f"not sent: could not ask the provider about an earlier attempt ({why})"
        now: datetime = self._clock()
        next_step = retry(
            reminder.attempts, reminder.not_after, now, reason, self._retries, self._jitter,
            self._retries.base,
        )  # fmt: skip
        return as_outcome(reminder, next_step, now, in_doubt=True)


def _query(reminder: Reminder) -> SentQuery:
    """The attempt written down, as a question to the provider."""
    assert reminder.attempt_to is not None and reminder.attempt_sha256 is not None
    assert reminder.attempt_started_at is not None
    return SentQuery(reminder.attempt_to, reminder.attempt_sha256, reminder.attempt_started_at)
