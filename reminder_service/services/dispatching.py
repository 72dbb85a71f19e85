"""Dispatching: claim due reminders, commit, then render and send them, many at once.

No transaction is held across a send. A claim is a lease: if this process dies mid-send, the row
returns to the pool when the lease expires. Results are written only by the holder of the claim
token, so a worker whose lease ran out cannot overwrite a newer attempt.

Sends are coroutines on one event loop: up to `max_in_flight` reminders are claimed and in
flight at once, each send finishes on its own (a slow one holds up no other), and results are
written in small batches as they come. How a failure is treated (retry or not, opt-out) comes
from the failure table in config, never from the channel.

Exactly once through crashes and lost answers. Before an SMS goes out, the attempt is written
down (when it began, the number, the body's SHA-256) in the same commit-before-send order as the
claim; it is cleared once the outcome is known. A reminder claimed again with an attempt still
written down (the process died mid-send and the lease ran out; or the answer was lost: a read
timeout, a dropped connection, a 5xx) is not simply sent again: the provider is asked first
(`SmsLookup`), outside any transaction. A message found, and not already recorded for another
reminder, makes the reminder sent with that message's id; none found, it is sent; the provider
cannot be asked, it waits and is asked again later. A crash can leave at most `max_in_flight`
such attempts to ask about. Channels that cannot be asked (the file outbox, which never writes a
reminder twice) send again as before.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from ..catalog import Catalog
from ..channels.base import (
    ChannelError,
    EmailChannel,
    OutgoingEmail,
    OutgoingSms,
    Receipt,
    SmsChannel,
    SmsLookup,
    body_sha256,
)
from ..channels.unsubscribe import UnsubscribeLinks
from ..clock import Clock
from ..domain.failure_rules import FailureTable
from ..domain.planning import ReminderStatus
from ..domain.reminder import Outcome, Reminder
from ..domain.retries import JITTER, Jitter, RetryPolicy, after_failure, as_outcome, retry
from ..domain.sms_caps import PatientTexts
from ..rendering.renderer import Renderer
from ..store import opt_outs
from ..store.records import RowData
from ..store.reminders import Attempt, ReminderStore, SqlReminderStore, reminder_row, stored_channel
from . import patient_texts
from .async_runner import LoopThread
from .follow_ups import FollowUps
from .lost_answers import LostAnswers
from .outgoing import Job, Messages
from .preparing import Preparation

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

log = logging.getLogger(__name__)

FLUSH_EVERY = 0.05  # seconds: results are written at least this often while sends go on
FLUSH_SIZE = 200


@dataclass
class DispatchReport:
    claimed: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    def count(self, status: str) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1


_RETRIES = RetryPolicy()


@dataclass(frozen=True)
class DispatchPolicy:
    lease: timedelta = timedelta(seconds=60)
    batch: int = 100  # reminders claimed per query
    max_in_flight: int = 400  # claimed and not yet recorded; keep sendable well within the lease
    # Retries: the defaults, and what each means, are RetryPolicy's (domain/retries.py).
    max_attempts: int = _RETRIES.max_attempts
    retry_base: timedelta = _RETRIES.base
    retry_cap: timedelta = _RETRIES.cap
    settle: timedelta = _RETRIES.settle

    @property
    def retries(self) -> RetryPolicy:
        return RetryPolicy(self.max_attempts, self.retry_base, self.retry_cap, self.settle)


class _Held:
    """One dispatch round's reminders claimed here and not yet recorded: in flight, done and
    waiting to be written, being written. At most `limit` at once (after a crash, at most that
    many outcomes are unknown)."""

    def __init__(self, limit: int, claim_from: int) -> None:
        self.limit = limit
        self.claim_from = claim_from  # room worth a claim
        self.in_flight: set[asyncio.Task[Outcome]] = set()
        self.done: list[Outcome] = []
        self.recording = 0
        self.broken: list[asyncio.Task[Outcome]] = []  # a send that raised: raised by the claims
        self.exhausted = False  # nothing left to claim
        self.claiming_over = False
        self.room_made = asyncio.Event()  # wakes the claims
        self.outcomes_waiting = asyncio.Event()  # wakes the writes

    @property
    def settled(self) -> bool:
        """Nothing in flight, nothing waiting to be written or being written."""
        return not self.in_flight and not self.done and not self.recording

    @property
    def room(self) -> int:
        return self.limit - len(self.in_flight) - len(self.done) - self.recording

    def finished(self, task: asyncio.Task[Outcome]) -> None:
        """A send's own callback: its outcome joins `done`; the claims and the writes are woken
        only when there is something for them to do (O(1) a send)."""
        self.in_flight.discard(task)
        if task.cancelled() or task.exception() is not None:
            self.broken.append(task)
        else:
            self.done.append(task.result())
        if len(self.done) in (1, FLUSH_SIZE) or not self.in_flight:
            self.outcomes_waiting.set()
        if (
            self.broken
            or not self.in_flight
            or (not self.exhausted and self.room >= self.claim_from)
        ):
            self.room_made.set()


def uniform_jitter() -> float:
    return random.uniform(*JITTER)  # noqa: S311 - jitter, not security


class DispatchService:
    def __init__(
        self,
        engine: Engine | None,
        catalog: Catalog,
        renderer: Renderer,
        sms: SmsChannel,
        email: EmailChannel,
        clock: Clock,
        policy: DispatchPolicy = DispatchPolicy(),
        failures: FailureTable | None = None,
        public_url: str = "",
        email_from: str = "reminders@localhost",
        sms_lookup: SmsLookup | None = None,
        unsubscribe: UnsubscribeLinks | None = None,
        *,
        store: ReminderStore | None = None,
        jitter: Jitter = uniform_jitter,
    ) -> None:
        """`email_from` is the service-wide From address (a clinic's own `email_from` wins);
        `unsubscribe` makes the List-Unsubscribe links of patient emails. `store` stands in for
        the SQL store on `engine`."""
        self._sms = sms
        self._email = email
        self._clock = clock
        self._policy = policy
        self._failures = failures or FailureTable(())
        self._retries = policy.retries
        self._jitter = jitter
        if store is None:
            assert engine is not None
            texts = partial(_load_texts, catalog=catalog)
            store = SqlReminderStore(engine, texts, self._after_recording)
        self._store = store
        messages = Messages(catalog, renderer, public_url, email_from, unsubscribe)
        self._preparation = Preparation(
            store, catalog, renderer, messages, clock, policy.max_attempts, self._retry
        )
        self._follow_ups = FollowUps(catalog)
        self._loop = LoopThread()
        self._preparing: asyncio.Lock | None = None  # one batch at a time (its merges, caps)
        # Reminders whose lookup found nothing, waiting to be prepared together (_prepare_one).
        self._waiting: list[tuple[Reminder, asyncio.Future[Outcome | Job]]] = []
        self._batches: set[asyncio.Task[None]] = set()
        # Reminders claimed here and not recorded yet: one claimed again here (its lease ran out
        # while it waited its turn) is left alone, never handled twice at once.
        self._active: set[int] = set()
        # Message ids this process has had from the provider and may not have recorded yet.
        self._taken: set[str] = set()
        self._lost = None
        if sms_lookup is not None:
            self._lost = LostAnswers(
                sms_lookup, store, self._failures, clock, self._retries, jitter, self._taken
            )
        self._answer_awaited = sms_lookup is not None

    def dispatch_due(self) -> DispatchReport:
        """Send everything due now, until nothing claimable is left and nothing is in flight."""
        return self._loop.run(self._dispatch_due())

    def close(self) -> None:
        """Close the channels' connections (in-flight sends have finished: dispatch_due waits)."""
        try:
            self._loop.run(self._close_channels())
        finally:
            self._loop.stop()

    async def _close_channels(self) -> None:
        await self._sms.aclose()
        await self._email.aclose()

    def next_due(self) -> datetime | None:
        """The earliest moment a row becomes claimable: a pending due time or a lease expiry."""
        return self._store.next_due()

    # -- the loop ---------------------------------------------------------------------------

    async def _dispatch_due(self) -> DispatchReport:
        """Two coroutines share the round: one claims, prepares and starts sends while there is
        room; the other writes the outcomes as they come. Neither waits for the other, so a
        write in progress never holds up the next claim (nor a claim the writes)."""
        self._preparing = asyncio.Lock()  # made on this loop (the loop thread may be a new one)
        report = DispatchReport()
        held = _Held(
            self._policy.max_in_flight, min(self._policy.batch, self._policy.max_in_flight // 2)
        )
        recorder = asyncio.create_task(self._record_as_they_come(held, report))
        try:
            await self._claim_while_room(held, report, recorder)
        finally:
            held.claiming_over = True
            held.outcomes_waiting.set()
        await recorder  # the last outcomes (or the error that stopped the claims' partner)
        return report

    async def _claim_while_room(
        self, held: _Held, report: DispatchReport, recorder: asyncio.Task[None]
    ) -> None:
        """Claim while there is room, until a claim made with everything recorded finds nothing
        (recording can add rows due now: a staff alert for a text that will not go)."""
        while True:
            if recorder.done():
                recorder.result()  # a failed write stops the round, as it always has
                raise RuntimeError("outcomes stopped being recorded")
            if held.broken:
                held.broken[0].result()
            settled = held.settled
            if held.room >= held.claim_from and (not held.exhausted or settled):
                limit = min(held.room, self._policy.batch)
                started = await self._claim_and_start(limit, held.done)
                if started is None:
                    if settled:
                        return
                    held.exhausted = True
                else:
                    held.exhausted = False
                    report.claimed += started[0]
                    for task in started[1]:
                        held.in_flight.add(task)
                        task.add_done_callback(held.finished)
                if held.done:  # outcomes of the batch that go no further
                    held.outcomes_waiting.set()
                continue
            held.room_made.clear()
            await held.room_made.wait()

    async def _record_as_they_come(self, held: _Held, report: DispatchReport) -> None:
        """Write outcomes in batches: FLUSH_SIZE at a time, or what came within FLUSH_EVERY of
        the first one waiting, or at once when nothing more is in flight."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                if not held.done:
                    if held.claiming_over:
                        return
                    held.outcomes_waiting.clear()
                    await held.outcomes_waiting.wait()
                    continue
                if len(held.done) < FLUSH_SIZE and held.in_flight and not held.claiming_over:
                    held.outcomes_waiting.clear()
                    timer = loop.call_later(FLUSH_EVERY, held.outcomes_waiting.set)
                    await held.outcomes_waiting.wait()
                    timer.cancel()
                batch, held.done[:] = list(held.done), []
                held.recording = len(batch)
                try:
                    await self._flush(batch, report)
                finally:
                    held.recording = 0
                    held.room_made.set()
        finally:
            held.room_made.set()  # the claims see this task end, however it ended

    async def _claim_and_start(
        self, limit: int, done: list[Outcome]
    ) -> tuple[int, list[asyncio.Task[Outcome]]] | None:
        claimed = await asyncio.to_thread(self._claim, limit)
        if not claimed:
            return None
        tasks: list[asyncio.Task[Outcome]] = []
        fresh = []
        for reminder in claimed:
            if reminder.id in self._active:
                log.warning("reminder %s: lease ran out while still in flight here", reminder.id)
                continue  # its next claim settles it (asking the provider first)
            self._active.add(reminder.id)
            if self._lost is not None and reminder.attempt_started_at is not None:
                tasks.append(asyncio.create_task(self._ask_then_send(reminder, self._lost)))
            else:
                fresh.append(reminder)
        for item in await self._prepare_many(fresh):
            if isinstance(item, Outcome):
                done.append(item)
            else:
                tasks.append(asyncio.create_task(self._send(item)))
        return len(claimed), tasks

    async def _prepare_many(self, claimed: list[Reminder]) -> list[Outcome | Job]:
        if not claimed:
            return []
        assert self._preparing is not None
        async with self._preparing:
            return await asyncio.to_thread(self._prepare_and_write_down, claimed)

    async def _prepare_one(self, reminder: Reminder) -> Outcome | Job:
        """Prepare a reminder together with those that come while a preparation runs: one set
        of queries for them all, not one each."""
        future: asyncio.Future[Outcome | Job] = asyncio.get_running_loop().create_future()
        self._waiting.append((reminder, future))
        if len(self._waiting) == 1:
            batch = asyncio.create_task(self._prepare_waiting())
            self._batches.add(batch)
            batch.add_done_callback(self._batches.discard)
        return await future

    async def _prepare_waiting(self) -> None:
        assert self._preparing is not None
        async with self._preparing:
            waiting, self._waiting = self._waiting, []
            try:
                claimed = [reminder for reminder, _ in waiting]
                items = await asyncio.to_thread(self._prepare_and_write_down, claimed)
            except Exception as exc:  # e.g. the database: each waiting send fails with it
                for _, future in waiting:
                    future.set_exception(exc)
                return
            for (_, future), item in zip(waiting, items, strict=True):
                future.set_result(item)

    async def _flush(self, batch: list[Outcome], report: DispatchReport) -> None:
        try:
            await asyncio.to_thread(self._record_many, batch, self._clock())
            for outcome in batch:
                report.count(outcome.status.value)
        finally:
            # Written or not, they are not held here any more. Unwritten (the database
            # failed), each is claimed again when its lease runs out, and the provider is asked
            # about its attempt: its message id must not count as another reminder's then.
            for outcome in batch:
                self._active.discard(outcome.reminder.id)
                provider_id = outcome.changes.get("provider_id")
                if provider_id:
                    self._taken.discard(provider_id)  # in the database now, or not ours to write

    async def _ask_then_send(self, reminder: Reminder, lost: LostAnswers) -> Outcome:
        """Ask the provider whether the attempt written down was accepted; send only if not."""
        outcome = await lost.ask(reminder)
        if outcome is not None:
            return outcome
        item = await self._prepare_one(reminder)  # not accepted: a new attempt, checked anew
        if isinstance(item, Outcome):
            return item
        outcome = await self._send(item)
        # Should the earlier attempt show up after all (a list that lagged), its status callback
        # finds the reminder marked and notes the second copy for staff (delivery_status.py).
        outcome.changes.setdefault("maybe_accepted_at", reminder.attempt_started_at)
        return outcome

    # -- claiming and preparing (synchronous: database and templates) -----------------------

    def _claim(self, limit: int | None = None) -> list[Reminder]:
        return self._store.claim(limit or self._policy.batch, self._clock(), self._policy.lease)

    def _prepare_and_write_down(self, claimed: list[Reminder]) -> list[Outcome | Job]:
        """Prepare the claimed reminders, then write down each SMS about to be sent (committed
        before any of them goes out), so an unknown outcome can be asked about later."""
        prepared = self._preparation.prepare_all(claimed)
        texts = [
            Attempt(item.reminder, item.message.to, body_sha256(item.message.body))
            for item in prepared
            if isinstance(item, Job) and isinstance(item.message, OutgoingSms)
        ]
        if self._lost is None or not texts:
            return prepared
        lost = {a.reminder.id for a in texts} - self._store.write_down(texts, self._clock())
        if not lost:
            return prepared
        # Another worker has these now. The outcome is never written (recording needs the
        # claim token); it only keeps the text from being sent.
        return [
            Outcome(item.reminder, ReminderStatus.PENDING, "claim lost before sending")
            if isinstance(item, Job) and item.reminder.id in lost
            else item
            for item in prepared
        ]

    # -- sending (on the loop) --------------------------------------------------------------

    async def _send(self, job: Job) -> Outcome:
        reminder = job.reminder
        try:
            receipt = await self._deliver(job.message)
        except ChannelError as exc:
            return self._failed(job, exc)
        except Exception as exc:  # a bug or an unexpected provider fault: retry, never lose it
            log.exception("reminder %s: unexpected error while sending", reminder.id)
            reason = f"unexpected error: {type(exc).__name__}"
            # The request may have gone out: ask before sending again.
            return self._retry(reminder, self._clock(), reason, in_doubt=True)
        self._taken.add(receipt.provider_id)
        now = self._clock()
        changes = {"sent_at": now, "provider_id": receipt.provider_id, "language": job.language}
        detail: dict[str, object] = {"language": job.language, "body_sha256": job.digest}
        if job.merged:
            detail["merged"] = list(job.merged)
        if job.requested and job.requested.split("-")[0] != job.language.split("-")[0]:
            detail["language_fallback"] = f"no {job.requested} template: sent in {job.language}"
        return Outcome(reminder, ReminderStatus.SENT, job.note or "sent", changes, dict(detail))

    async def _deliver(self, message: OutgoingSms | OutgoingEmail) -> Receipt:
        if isinstance(message, OutgoingSms):
            return await self._sms.send_sms(message)
        return await self._email.send_email(message)

    def _failed(self, job: Job, exc: ChannelError) -> Outcome:
        reminder, message = job.reminder, job.message
        now = self._clock()
        verdict = self._failures.classify(exc.failure)
        sms = isinstance(message, OutgoingSms)
        # A lost answer is learned in time (its status callback, or asking the provider).
        awaited = isinstance(message, OutgoingSms) and bool(
            message.status_callback or self._answer_awaited
        )
        next_step = after_failure(
            exc.failure, verdict, reminder.attempts, reminder.not_after, now, self._retries,
            self._jitter, sms=sms, answer_awaited=awaited,
        )  # fmt: skip
        return as_outcome(reminder, next_step, now, number=message.to if sms else None)

    def _retry(
        self, reminder: Reminder, now: datetime, reason: str, *, in_doubt: bool = False
    ) -> Outcome:
        next_step = retry(
            reminder.attempts, reminder.not_after, now, reason, self._retries, self._jitter
        )
        return as_outcome(reminder, next_step, now, in_doubt=in_doubt)

    # -- recording ----------------------------------------------------------------------------

    def _record(
        self,
        reminder: Reminder,
        status: ReminderStatus,
        reason: str,
        changes: dict[str, object],
        now: datetime,
    ) -> None:
        """Record one outcome (kept for callers outside the loop)."""
        self._record_many([Outcome(reminder, status, reason, dict(changes))], now)

    def _record_many(self, outcomes: list[Outcome], now: datetime) -> None:
        for outcome in self._store.record(outcomes, now):
            log.info(
                "reminder %s (%s/%s): %s: %s",
                outcome.reminder.id,
                outcome.reminder.step_id,
                stored_channel(outcome.reminder),
                outcome.status.value,
                outcome.reason,
            )

    def _after_recording(self, conn: Connection, recorded: list[Outcome], now: datetime) -> None:
        """Committed with the outcomes: numbers that opted out, and the follow-ups (another
        channel, or staff told) of what will not be delivered."""
        opted_out = {o.opt_out for o in recorded if o.opt_out}
        opt_outs.record_sms(conn, opted_out, now, source="provider: recipient unsubscribed")
        failed: list[tuple[RowData, str]] = [
            (reminder_row(o.reminder), o.reason) for o in recorded if o.undeliverable
        ]
        self._follow_ups.after_undeliverable(conn, failed, now)


def _load_texts(
    conn: Connection, patient_ids: set[int], now: datetime, *, catalog: Catalog
) -> PatientTexts:
    return patient_texts.load(conn, patient_ids, catalog, now)
