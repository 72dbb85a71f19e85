"""Stand-ins shared by the tests, each section for one kind of collaborator. Tests import them
from here; a fake used by one test file only may stay in that file."""

from __future__ import annotations

import asyncio
import os
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from reminder_service.channels.base import ChannelError, OutgoingEmail, OutgoingSms, Receipt
from reminder_service.domain.failures import Failure
from reminder_service.domain.planning import Recipient, ReminderStatus
from reminder_service.domain.reminder import Outcome, Reminder, StoredAppointment
from reminder_service.domain.sms_caps import PatientTexts
from reminder_service.services.confirmations import CheckReport
from reminder_service.services.dispatching import DispatchReport
from reminder_service.services.materializing import MaterializeReport
from reminder_service.store.reminders import Attempt

# --- clocks ------------------------------------------------------------------------------------


class FakeClock:
    """A clock that stands still until a test sets or advances it."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def wall() -> datetime:
    """The real time, for fakes run by a real timer."""
    return datetime.now(UTC)


# --- channels ----------------------------------------------------------------------------------

Script = Callable[[OutgoingSms | OutgoingEmail], Any]


class ScriptedChannel:
    """SMS and email that answer each send by a script: return a Receipt, or raise ChannelError
    for a Failure the script returns (a coroutine's result is awaited first)."""

    def __init__(self, script: Script, clock: Callable[[], datetime]) -> None:
        self.script = script
        self.clock = clock
        self.attempts: list[tuple[str, str, datetime]] = []  # (step, channel, when)

    async def send_sms(self, message: OutgoingSms) -> Receipt:
        return await self._answer(message, "sms")

    async def send_email(self, message: OutgoingEmail) -> Receipt:
        return await self._answer(message, "email")

    async def aclose(self) -> None:
        pass

    async def _answer(self, message: OutgoingSms | OutgoingEmail, channel: str) -> Receipt:
        self.attempts.append((message.step, channel, self.clock()))
        outcome = self.script(message)
        if asyncio.iscoroutine(outcome):
            outcome = await outcome
        if isinstance(outcome, Failure):
            raise ChannelError(outcome)
        return Receipt(f"fake-{message.reminder_id}")


class LoggingChannel:
    """Appends one line per send to a shared file (O_APPEND), so duplicates cannot hide, even
    across processes. Each send takes 5 ms, like a (fast) provider, so senders overlap."""

    def __init__(self, log: Path) -> None:
        self._log = log

    async def send_sms(self, message: OutgoingSms) -> Receipt:
        return await self._write(message.reminder_id)

    async def send_email(self, message: OutgoingEmail) -> Receipt:
        return await self._write(message.reminder_id)

    async def aclose(self) -> None:
        pass

    async def _write(self, reminder_id: int) -> Receipt:
        await asyncio.sleep(0.005)  # a provider's answer time (not a test waiting for a clock)
        with self._log.open("a") as handle:
            handle.write(f"{os.getpid()} {reminder_id}\n")
        return Receipt(f"log:{reminder_id}")


# --- what the dispatch timer drives ------------------------------------------------------------


class FakeDispatcher:
    """Reports a next due time; records when it was asked to dispatch."""

    def __init__(self, due: datetime | None) -> None:
        self.due = due
        self.calls: list[datetime] = []
        self.called = threading.Event()

    def dispatch_due(self) -> DispatchReport:
        self.calls.append(datetime.now(UTC))
        if len(self.calls) > 1:  # the first run happens at start
            self.called.set()
        if self.due is not None and self.due <= datetime.now(UTC):
            self.due = None
        return DispatchReport()

    def next_due(self) -> datetime | None:
        return self.due


class FakeMaterializer:
    """Adds a reminder due shortly when first run, as materializing a horizon does."""

    def __init__(self, dispatcher: FakeDispatcher) -> None:
        self.dispatcher = dispatcher
        self.runs = 0
        self.added_due: datetime | None = None

    def materialize(self) -> MaterializeReport:
        self.runs += 1
        if self.runs == 1:
            self.added_due = self.dispatcher.due = wall() + timedelta(milliseconds=300)
            return MaterializeReport(appointments=1, reminders=1)
        return MaterializeReport()


class FakeConfirmations:
    """Plans one staff alert, due now, at its first check; fails at its second."""

    def __init__(self, dispatcher: FakeDispatcher) -> None:
        self.dispatcher = dispatcher
        self.runs = 0

    def check(self) -> CheckReport:
        self.runs += 1
        if self.runs == 2:
            raise RuntimeError("database went away")
        if self.runs == 1:
            self.dispatcher.due = wall()
            return CheckReport(appointments=3, alerts=1)
        return CheckReport()


# --- the send path: reminders (ReminderStore) and a recording channel ----------------------------

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
