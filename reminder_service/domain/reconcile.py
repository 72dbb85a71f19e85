"""Reconcile: what to keep, cancel and create when an appointment's plan changes.

A reminder is identified by (step, channel, nominal moment, recipient). Sent, sending and failed
reminders are history and never touched; a new plan that still wants the same message at the same
nominal moment does not get it twice. Open reminders (pending or skipped) that the new plan no
longer wants, or wants differently, are cancelled with the caller's reason.

A reminder the dispatcher skipped when its time came (over the SMS caps, opted out, its deadline
passed) was decided then, like a sent one: a plan that still wants that message at that moment
keeps the row as it is. Planning cannot know those reasons, so comparing statuses would turn the
skip back into a pending message and send it after all.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from .planning import PlannedReminder, Recipient, ReminderStatus
from .protocol import Channel

OPEN = frozenset({ReminderStatus.PENDING, ReminderStatus.SKIPPED})
DONE = frozenset({ReminderStatus.SENDING, ReminderStatus.SENT, ReminderStatus.FAILED})


@dataclass(frozen=True, slots=True)
class ExistingReminder:
    id: int
    step_id: str
    channel: Channel
    nominal_at: datetime
    status: ReminderStatus
    recipient: Recipient = Recipient.PATIENT
    dispatched: bool = False  # the dispatcher has taken it up at least once (attempts > 0)


@dataclass(frozen=True, slots=True)
class Reconciliation:
    create: list[PlannedReminder]
    cancel: list[int]
    keep: list[int]


def reconcile(
    existing: Sequence[ExistingReminder], planned: Sequence[PlannedReminder]
) -> Reconciliation:
    wanted = {(p.step_id, p.channel, p.nominal_at, p.recipient): p for p in planned}
    create_keys = set(wanted)
    cancel: list[int] = []
    keep: list[int] = []
    for row in existing:
        key = (row.step_id, row.channel, row.nominal_at, row.recipient)
        plan = wanted.get(key)
        if row.status in DONE:
            create_keys.discard(key)  # already went out (or is going out) for this very moment
        elif row.status is ReminderStatus.SKIPPED and row.dispatched and key in create_keys:
            keep.append(row.id)  # decided when its time came: the skip stands
            create_keys.discard(key)
        elif row.status in OPEN:
            if plan is not None and plan.status is row.status and key in create_keys:
                keep.append(row.id)
                create_keys.discard(key)
            else:
                cancel.append(row.id)
    create = [
        p for p in planned if (p.step_id, p.channel, p.nominal_at, p.recipient) in create_keys
    ]
    return Reconciliation(create=create, cancel=cancel, keep=keep)
