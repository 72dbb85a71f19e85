"""In-memory stand-ins for the service's ports, for fast tests without a database."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from reminder_service.channels.base import OutgoingEmail, OutgoingSms, Receipt
from reminder_service.domain.planning import Recipient, ReminderStatus
from reminder_service.domain.reminder import Outcome, Reminder, StoredAppointment
from reminder_service.domain.sms_caps import PatientTexts
from reminder_service.store.reminders import Attempt

# -- the send path: reminders (ReminderStore) and channels ------------------------------------

_FIELDS = frozenset(Reminder.__dataclass_fields__)


@dataclass
class FakeReminderStore:
    """`store.reminders.ReminderStore` over dicts: claims with leases and claim tokens, results
    written only by the claim's holder, the attempts written down before a text goes out."""

    reminders: dict[int, Reminder] = field(default_factory=dict)
    stored: dict[int, StoredAppointment] = field(default_factory=dict)
    sms_opt_outs: set[str] = field(default_factory=set)
    email_opt_outs: set[str] = field(default_factory=set)  # as opt_out_key gives them
    provider_ids: dict[int, str] = field(default_factory=dict)
    lease_until: dict[int, datetime] = field(default_factory=dict)
    written_down: dict[int, Attempt] = field(default_factory=dict)
    recorded: list[Outcome] = field(default_factory=list)
    opted_out: set[str] = field(default_factory=set)  # numbers put on the list by outcomes
    undeliverable: list[Outcome] = field(default_factory=list)  # handed to follow-ups
    _claims: int = 0

    def add(self, reminder: Reminder, stored: StoredAppointment) -> None:
        self.reminders[reminder.id] = reminder
        self.stored[stored.id] = stored

    def claim(self, limit: int, now: datetime, lease: timedelta) -> list[Reminder]:
        due = sorted(
            (
                r
                for r in self.reminders.values()
                if (r.status is ReminderStatus.PENDING and r.due_at <= now)
                or (r.status is ReminderStatus.SENDING and self.lease_until[r.id] < now)
            ),
            key=lambda r: r.due_at,
        )[:limit]
        self._claims += 1
        token = f"claim-{self._claims}"
        claimed = []
        for reminder in due:
            taken = replace(
                reminder,
                status=ReminderStatus.SENDING,
                claim_token=token,
                attempts=reminder.attempts + 1,
            )
            self.reminders[reminder.id] = taken
            self.lease_until[reminder.id] = now + lease
            claimed.append(taken)
        return claimed

    def next_due(self) -> datetime | None:
        moments = [r.due_at for r in self.reminders.values() if r.status is ReminderStatus.PENDING]
        moments += [
            self.lease_until[r.id]
            for r in self.reminders.values()
            if r.status is ReminderStatus.SENDING
        ]
        return min(moments, default=None)

    def appointments(self, ids: set[int]) -> dict[int, StoredAppointment]:
        return {i: self.stored[i] for i in ids if i in self.stored}

    def sms_opted_out(self, numbers: set[str]) -> set[str]:
        return numbers & self.sms_opt_outs

    def email_opted_out(self, keys: set[str]) -> set[str]:
        return keys & self.email_opt_outs

    def patient_texts(self, patient_ids: set[int], now: datetime) -> PatientTexts:
        return PatientTexts({}, {})

    def pending_merges(
        self, appointment_ids: set[int]
    ) -> dict[tuple[int, Recipient], list[Reminder]]:
        merges: dict[tuple[int, Recipient], list[Reminder]] = defaultdict(list)
        for r in sorted(self.reminders.values(), key=lambda r: r.nominal_at):
            skipped = r.status is ReminderStatus.SKIPPED
            if r.appointment_id in appointment_ids and r.merge_into_next and skipped:
                merges[(r.appointment_id, r.recipient)].append(r)
        return merges

    def write_down(self, attempts: Sequence[Attempt], now: datetime) -> set[int]:
        held = set()
        for attempt in attempts:
            if self._holds(attempt.reminder):
                self.written_down[attempt.reminder.id] = attempt
                held.add(attempt.reminder.id)
        return held

    def record(self, outcomes: Sequence[Outcome], now: datetime) -> list[Outcome]:
        recorded = [o for o in outcomes if self._holds(o.reminder)]
        for outcome in recorded:
            changes = {k: v for k, v in outcome.changes.items() if k in _FIELDS}
            self.reminders[outcome.reminder.id] = replace(
                self.reminders[outcome.reminder.id],
                status=outcome.status,
                reason=outcome.reason,
                claim_token=None,
                **changes,
            )
            if outcome.changes.get("provider_id"):
                self.provider_ids[outcome.reminder.id] = outcome.changes["provider_id"]
            if not outcome.in_doubt:
                self.written_down.pop(outcome.reminder.id, None)
            if outcome.opt_out:
                self.opted_out.add(outcome.opt_out)
            if outcome.undeliverable:
                self.undeliverable.append(outcome)
        self.recorded.extend(recorded)
        return recorded

    def recorded_provider_ids(self, ids: Sequence[str]) -> set[str]:
        return set(ids) & set(self.provider_ids.values())

    def _holds(self, reminder: Reminder) -> bool:
        current = self.reminders.get(reminder.id)
        if current is None or reminder.claim_token is None:
            return False
        return current.claim_token == reminder.claim_token


class RecordingChannel:
    """An SMS and email channel that accepts everything and keeps what it was given."""

    def __init__(self) -> None:
        self.sent: list[OutgoingSms | OutgoingEmail] = []

    async def send_sms(self, message: OutgoingSms) -> Receipt:
        self.sent.append(message)
        return Receipt(f"fake-{message.reminder_id}")

    async def send_email(self, message: OutgoingEmail) -> Receipt:
        self.sent.append(message)
        return Receipt(f"fake-{message.reminder_id}")

    async def aclose(self) -> None:
        pass
