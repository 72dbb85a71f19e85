"""After a send fails: try again later (backoff with jitter, within the deadline), or give up.

Pure: the time and the jitter are passed in. How a failure is treated (permanent or not, an
opt-out) comes from the failure table's verdict, never from the channel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from .failure_rules import Verdict
from .failures import Failure
from .planning import ReminderStatus
from .reminder import Outcome, Reminder

JITTER = (0.5, 1.5)  # the range of the factor a delay is multiplied by: retries spread out

Jitter = Callable[[], float]  # a factor within JITTER


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = 20  # a backstop: retries normally end at the step's deadline
    base: timedelta = timedelta(seconds=30)  # doubled after each attempt
    cap: timedelta = timedelta(hours=1)
    # After an SMS whose answer was lost (it may have been accepted), wait at least this long
    # before asking the provider and sending it again: the provider's list shows the message by
    # then, and Twilio's status callback for the lost attempt normally arrives within seconds.
    settle: timedelta = timedelta(minutes=3)


@dataclass(frozen=True, slots=True)
class Retry:
    at: datetime
    reason: str
    error: str  # the failure, kept as the reminder's last error
    maybe_accepted: bool = False  # the text may be on its way: ask before sending it again


@dataclass(frozen=True, slots=True)
class GiveUp:
    reason: str
    error: str
    failure: str = ""  # the provider's failure, for the audit entry (a permanent one)
    opt_out: bool = False  # the number must get no more SMS
    maybe_accepted: bool = False


def retry(
    attempts: int,
    not_after: datetime | None,
    now: datetime,
    reason: str,
    policy: RetryPolicy,
    jitter: Jitter,
    at_least: timedelta = timedelta(0),
) -> Retry | GiveUp:
    """Try again after the backoff for `attempts` so far (but not before `at_least` from now),
    unless attempts are used up or the retry would come after the deadline."""
    delay = min(policy.base * 2 ** (attempts - 1), policy.cap)
    retry_at = now + max(delay * jitter(), at_least)
    if attempts >= policy.max_attempts or (not_after is not None and retry_at > not_after):
        return GiveUp(f"{reason}; no retry left before the deadline", reason)
    return Retry(retry_at, f"{reason}; retry {attempts + 1}", reason)


def after_failure(
    failure: Failure,
    verdict: Verdict,
    attempts: int,
    not_after: datetime | None,
    now: datetime,
    policy: RetryPolicy,
    jitter: Jitter,
    *,
    sms: bool,
    answer_awaited: bool,
) -> Retry | GiveUp:
    """What follows a failed send. `answer_awaited`: a lost SMS answer will be learned (a status
    callback, or a provider that can be asked), so a retry waits for it to settle first."""
    described = failure.describe()
    if verdict.meaning and verdict.meaning not in described:
        described = f"{described} ({verdict.meaning})"
    if verdict.permanent:
        return GiveUp(
            f"permanent failure: {described}",
            described,
            failure.describe(),
            opt_out=verdict.opt_out and sms,
        )
    reason = f"temporary failure: {described}"
    if not (failure.maybe_accepted and sms):
        return retry(attempts, not_after, now, reason, policy, jitter)
    # The text may be on its way. Give the provider time to show it (its status callback, its
    # list) before asking, or before a second copy from a channel that cannot be asked.
    settle = policy.settle if answer_awaited else timedelta(0)
    reason = f"{reason}; it may have been accepted"
    outcome = retry(attempts, not_after, now, reason, policy, jitter, settle)
    return replace(outcome, maybe_accepted=True)


def as_outcome(
    reminder: Reminder,
    next_step: Retry | GiveUp,
    now: datetime,
    *,
    in_doubt: bool = False,
    number: str | None = None,
) -> Outcome:
    """The outcome to record. `in_doubt`: the request may have gone out, so the attempt stays
    written down (to be asked about); `number`: the text's, put on the opt-out list if the
    verdict says so."""
    if isinstance(next_step, Retry):
        changes: dict[str, Any] = {"due_at": next_step.at, "last_error": next_step.error}
        outcome = Outcome(reminder, ReminderStatus.PENDING, next_step.reason, changes)
    else:
        detail = {"failure": next_step.failure} if next_step.failure else {}
        outcome = Outcome(
            reminder,
            ReminderStatus.FAILED,
            next_step.reason,
            {"last_error": next_step.error},
            detail,
            opt_out=number if next_step.opt_out else None,
            undeliverable=True,
        )
    if next_step.maybe_accepted:
        outcome.changes["maybe_accepted_at"] = now
    outcome.in_doubt = in_doubt or next_step.maybe_accepted
    return outcome
