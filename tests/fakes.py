"""Stand-ins shared by the tests, each section for one kind of collaborator. Tests import them
from here; a fake used by one test file only may stay in that file."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from reminder_service.channels.base import ChannelError, OutgoingEmail, OutgoingSms, Receipt
from reminder_service.domain.failures import Failure
from reminder_service.services.confirmations import CheckReport
from reminder_service.services.dispatching import DispatchReport
from reminder_service.services.materializing import MaterializeReport

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
