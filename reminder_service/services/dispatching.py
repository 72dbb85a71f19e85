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
import hashlib
import json
import logging
import random
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, and_, bindparam, func, or_, select, update

from ..catalog import Catalog
from ..channels.base import (
    AcceptedSms,
    CalendarEvent,
    ChannelError,
    EmailChannel,
    ListUnsubscribe,
    OutgoingEmail,
    OutgoingSms,
    Receipt,
    SentQuery,
    SmsChannel,
    SmsLookup,
    SmsSender,
    body_sha256,
)
from ..channels.unsubscribe import UnsubscribeLinks, opt_out_key
from ..clock import Clock
from ..domain.appointment import Appointment, AppointmentStatus, caregiver_copy, masked_patient
from ..domain.clinic import Clinic
from ..domain.failure_rules import FailureTable
from ..domain.failures import Failure, FailureKind
from ..domain.planning import NO_SMS_CONSENT, Recipient, ReminderStatus, caregiver_skip
from ..domain.protocol import Channel
from ..domain.sms_decision import SEND, SmsDecision, SmsOutcome, decide
from ..domain.timing import zone
from ..rendering.renderer import RenderedMessage, Renderer, RenderError
from ..store import bulk, records
from ..store.engine import reading
from ..store.records import RowData
from ..store.tables import STAFF_CHANNEL, appointments, reminders, sms_opt_outs
from . import patient_texts
from .async_runner import LoopThread
from .delivery_status import NOT_DELIVERED, PROGRESS
from .email_opt_outs import opted_out_emails
from .follow_ups import FollowUps, record_opt_outs, staff_time
from .importing import CALENDAR_CANCEL
from .patient_texts import PatientTexts

log = logging.getLogger(__name__)

FLUSH_EVERY = 0.05  # seconds: results are written at least this often while sends go on
FLUSH_SIZE = 200
# A recorded result settles the attempt written down before the send (see the module docstring).
SETTLED = {"attempt_started_at": None, "attempt_to": None, "attempt_sha256": None}


@dataclass
class DispatchReport:
    claimed: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    def count(self, status: str) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1


@dataclass(frozen=True)
class DispatchPolicy:
    lease: timedelta = timedelta(seconds=60)
    batch: int = 100  # reminders claimed per query
    max_in_flight: int = 400  # claimed and not yet recorded; keep sendable well within the lease
    max_attempts: int = 20  # a backstop: retries normally end at the step's deadline
    retry_base: timedelta = timedelta(seconds=30)
    retry_cap: timedelta = timedelta(hours=1)
    # After an SMS whose answer was lost (it may have been accepted), wait at least this long
    # before asking the provider and sending it again: the provider's list shows the message by
    # then, and Twilio's status callback for the lost attempt normally arrives within seconds
    # and settles the reminder as sent before that (see delivery_status.py).
    settle: timedelta = timedelta(minutes=3)


@dataclass
class Result:
    """One reminder's outcome, to be recorded."""

    reminder: RowData
    status: ReminderStatus
    reason: str
    changes: dict[str, Any] = field(default_factory=dict)  # columns to set besides the status
    detail: dict[str, Any] = field(default_factory=dict)  # for the audit entry
    opt_out: str | None = None  # a number that must get no more SMS
    undeliverable: bool = False  # this channel will not deliver it: try another, or tell staff
    in_doubt: bool = False  # the attempt may have reached the provider: keep it written down


@dataclass(frozen=True)
class _Job:
    reminder: RowData
    message: OutgoingSms | OutgoingEmail
    language: str
    digest: str
    requested: str = ""  # the patient's language, when the message is in another
    merged: tuple[int, ...] = ()  # skipped texts whose lines ride on this one
    note: str = ""  # why it went though the caps were full (a critical text), for its row


class DispatchService:
    def __init__(
        self,
        engine: Engine,
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
    ) -> None:
        """`email_from` is the service-wide From address (a clinic's own `email_from` wins);
        `unsubscribe` makes the List-Unsubscribe links of patient emails."""
        self._engine = engine
        self._catalog = catalog
        self._renderer = renderer
        self._sms = sms
        self._email = email
        self._clock = clock
        self._policy = policy
        self._failures = failures or FailureTable(())
        self._public_url = public_url.rstrip("/")
        self._email_from = email_from
        self._unsubscribe = unsubscribe
        # The clinics' own SMS senders; the others send from the channel's configured one.
        self._sms_senders = {
            c.id: SmsSender(c.sms_from, c.messaging_service_sid)
            for c in catalog.clinics.by_id.values()
            if c.sms_from or c.messaging_service_sid
        }
        self._follow_ups = FollowUps(catalog)
        self._loop = LoopThread()
        self._merges: dict[tuple[int, str], list[RowData]] = {}  # per batch: see _pending_merges
        self._emails_opted_out: set[str] = set()  # per batch: addresses that unsubscribed
        self._lookup = sms_lookup
        self._preparing: asyncio.Lock | None = None  # one preparation at a time (_merges)
        # Rows whose lookup found nothing, waiting to be prepared together (_prepare_one).
        self._waiting: list[tuple[RowData, asyncio.Future[Result | _Job]]] = []
        self._batches: set[asyncio.Task[None]] = set()
        # Reminders claimed here and not recorded yet: one claimed again here (its lease ran out
        # while it waited its turn) is left alone, never handled twice at once.
        self._active: set[int] = set()
        # Message ids this process has had from the provider and may not have recorded yet: a
        # lookup must not give one of them to another reminder (same number, same body).
        self._taken: set[str] = set()

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
        with reading(self._engine) as conn:
            pending = conn.execute(
                select(func.min(reminders.c.due_at)).where(
                    reminders.c.status == ReminderStatus.PENDING.value
                )
            ).scalar()
            lease = conn.execute(
                select(func.min(reminders.c.lease_until)).where(
                    reminders.c.status == ReminderStatus.SENDING.value
                )
            ).scalar()
        moments = [m for m in (pending, lease) if m is not None]
        return min(moments) if moments else None

    # -- the loop ---------------------------------------------------------------------------

    async def _dispatch_due(self) -> DispatchReport:
        self._preparing = asyncio.Lock()  # made on this loop (the loop thread may be a new one)
        report = DispatchReport()
        in_flight: set[asyncio.Task[Result]] = set()
        done: list[Result] = []
        exhausted = False
        last_flush = time.monotonic()
        while True:
            room = self._policy.max_in_flight - len(in_flight) - len(done)
            if not exhausted and room >= min(self._policy.batch, self._policy.max_in_flight // 2):
                started = await self._claim_and_start(min(room, self._policy.batch), done)
                if started is None:
                    exhausted = True
                else:
                    report.claimed += started[0]
                    in_flight |= started[1]
            if not in_flight:
                if done:
                    await self._flush(done, report)
                if exhausted:
                    return report
                continue
            finished, in_flight = await asyncio.wait(
                in_flight, timeout=FLUSH_EVERY, return_when=asyncio.FIRST_COMPLETED
            )
            done.extend(task.result() for task in finished)
            if len(done) >= FLUSH_SIZE or time.monotonic() - last_flush >= FLUSH_EVERY:
                await self._flush(done, report)
                last_flush = time.monotonic()

    async def _claim_and_start(
        self, limit: int, done: list[Result]
    ) -> tuple[int, set[asyncio.Task[Result]]] | None:
        claimed = await asyncio.to_thread(self._claim, limit)
        if not claimed:
            return None
        tasks: set[asyncio.Task[Result]] = set()
        fresh = []
        for row in claimed:
            if row["id"] in self._active:
                log.warning("reminder %s: lease ran out while still in flight here", row["id"])
                continue  # its next claim settles it (asking the provider first)
            self._active.add(row["id"])
            if self._lookup is not None and row["attempt_started_at"] is not None:
                tasks.add(asyncio.create_task(self._ask_then_send(row, self._lookup)))
            else:
                fresh.append(row)
        for item in await self._prepare_rows(fresh):
            if isinstance(item, Result):
                done.append(item)
            else:
                tasks.add(asyncio.create_task(self._send(item)))
        return len(claimed), tasks

    async def _prepare_rows(self, rows: list[RowData]) -> list[Result | _Job]:
        if not rows:
            return []
        assert self._preparing is not None
        async with self._preparing:
            return await asyncio.to_thread(self._prepare_and_write_down, rows)

    async def _prepare_one(self, row: RowData) -> Result | _Job:
        """Prepare a row together with those that come while a preparation runs: one set of
        queries for them all, not one each."""
        future: asyncio.Future[Result | _Job] = asyncio.get_running_loop().create_future()
        self._waiting.append((row, future))
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
                rows = [row for row, _ in waiting]
                items = await asyncio.to_thread(self._prepare_and_write_down, rows)
            except Exception as exc:  # e.g. the database: each waiting send fails with it
                for _, future in waiting:
                    future.set_exception(exc)
                return
            for (_, future), item in zip(waiting, items, strict=True):
                future.set_result(item)

    async def _flush(self, done: list[Result], report: DispatchReport) -> None:
        batch, done[:] = list(done), []
        await asyncio.to_thread(self._record_many, batch, self._clock())
        for result in batch:
            report.count(result.status.value)
            self._active.discard(result.reminder["id"])
            provider_id = result.changes.get("provider_id")
            if provider_id:
                self._taken.discard(provider_id)  # in the database now, or not ours to write

    # -- attempts whose outcome is unknown -------------------------------------------------

    async def _ask_then_send(self, row: RowData, lookup: SmsLookup) -> Result:
        """Ask the provider whether the attempt written down was accepted; send only if not."""
        query = SentQuery(row["attempt_to"], row["attempt_sha256"], row["attempt_started_at"])
        try:
            found = await lookup.find_accepted(query)
        except ChannelError as exc:
            return self._cannot_ask(row, exc.failure.describe())
        except Exception as exc:  # a bug: the same, never a blind second send
            log.exception("reminder %s: unexpected error while asking the provider", row["id"])
            return self._cannot_ask(row, f"unexpected error: {type(exc).__name__}")
        accepted = await self._unrecorded(found)
        if accepted is not None:
            return self._adopted(row, accepted)
        item = await self._prepare_one(row)  # not accepted: a new attempt, checked anew
        if isinstance(item, Result):
            return item
        result = await self._send(item)
        # Should the earlier attempt show up after all (a list that lagged), its status callback
        # finds the reminder marked and notes the second copy for staff (delivery_status.py).
        result.changes.setdefault("maybe_accepted_at", row["attempt_started_at"])
        return result

    async def _unrecorded(self, found: list[AcceptedSms]) -> AcceptedSms | None:
        """The oldest message found that is no other reminder's (the same text can go to one
        number for two patients: twins booked together)."""
        candidates = [m for m in found if m.provider_id not in self._taken]
        if not candidates:
            return None
        ids = [m.provider_id for m in candidates]
        recorded = await asyncio.to_thread(self._recorded_provider_ids, ids)
        for message in candidates:
            if message.provider_id not in recorded and message.provider_id not in self._taken:
                self._taken.add(message.provider_id)
                return message
        return None

    def _recorded_provider_ids(self, ids: list[str]) -> set[str]:
        with reading(self._engine) as conn:
            query = select(reminders.c.provider_id).where(reminders.c.provider_id.in_(ids))
            return set(conn.execute(query).scalars())

    def _adopted(self, row: RowData, accepted: AcceptedSms) -> Result:
        now = self._clock()
        changes: dict[str, Any] = {
            "sent_at": accepted.accepted_at or row["attempt_started_at"],
            "provider_id": accepted.provider_id,
        }
        if accepted.status in PROGRESS:
            changes |= {
                "delivery_status": accepted.status,
                "delivery_error": accepted.error_code,
                "delivery_updated_at": now,
            }
        reason = "sent: the provider had accepted an earlier attempt, so it was not sent again"
        detail = {"adopted": accepted.provider_id, "delivery_status": accepted.status}
        result = Result(row, ReminderStatus.SENT, reason, changes, detail)
        if accepted.status in NOT_DELIVERED:  # as its status callback would have said
            result.undeliverable = True
            result.reason = f"{reason}; provider reports {accepted.status}"
            if accepted.error_code:
                failure = Failure(accepted.provider, FailureKind.HTTP, code=accepted.error_code)
                if self._failures.classify(failure).opt_out:
                    result.opt_out = row["attempt_to"]
        return result

    def _cannot_ask(self, row: RowData, why: str) -> Result:
        """The provider could not say whether the attempt was accepted: nothing is sent; ask
        again later (the attempt stays written down)."""
        reason = f"not sent: could not ask the provider about an earlier attempt ({why})"
        result = self._retry(row, self._clock(), reason, self._policy.retry_base)
        result.in_doubt = True
        return result

    # -- claiming and preparing (synchronous: database and templates) -----------------------

    def _claim(self, limit: int | None = None) -> list[RowData]:
        now = self._clock()
        token = uuid.uuid4().hex
        due = or_(
            and_(reminders.c.status == ReminderStatus.PENDING.value, reminders.c.due_at <= now),
            and_(reminders.c.status == ReminderStatus.SENDING.value, reminders.c.lease_until < now),
        )
        candidates = select(reminders.c.id).where(due).order_by(reminders.c.due_at)
        candidates = candidates.limit(limit or self._policy.batch)
        if self._engine.dialect.name == "postgresql":
            candidates = candidates.with_for_update(skip_locked=True)
        with self._engine.begin() as conn:
            return list(
                conn.execute(
                    update(reminders)
                    .where(reminders.c.id.in_(candidates.scalar_subquery()))
                    .values(
                        status=ReminderStatus.SENDING.value,
                        lease_until=now + self._policy.lease,
                        claim_token=token,
                        attempts=reminders.c.attempts + 1,
                        updated_at=now,
                    )
                    .returning(*reminders.c)
                ).mappings()
            )

    def _prepare_and_write_down(self, claimed: list[RowData]) -> list[Result | _Job]:
        """Prepare the claimed rows, then write down each SMS about to be sent (committed before
        any of them goes out), so an unknown outcome can be asked about later."""
        prepared = self._prepare_all(claimed)
        texts = [
            item
            for item in prepared
            if isinstance(item, _Job) and isinstance(item.message, OutgoingSms)
        ]
        if self._lookup is None or not texts:
            return prepared
        lost = {job.reminder["id"] for job in texts} - self._write_down(texts, self._clock())
        if not lost:
            return prepared
        # Another worker has these now. The Result is never written (_update_rows needs the
        # claim token); it only keeps the text from being sent.
        return [
            Result(item.reminder, ReminderStatus.PENDING, "claim lost before sending")
            if isinstance(item, _Job) and item.reminder["id"] in lost
            else item
            for item in prepared
        ]

    def _write_down(self, jobs: list[_Job], now: datetime) -> set[int]:
        """Record the attempts about to go out; returns the reminders whose claim still holds."""
        statement = (
            update(reminders)
            .where(reminders.c.id == bindparam("rid"))
            .where(reminders.c.claim_token == bindparam("token"))
            .values(
                # The first unsettled attempt's start: a lookup reaches back to it.
                attempt_started_at=func.coalesce(
                    reminders.c.attempt_started_at,
                    bindparam("started", type_=reminders.c.attempt_started_at.type),
                ),
                attempt_to=bindparam("to"),
                attempt_sha256=bindparam("sha"),
            )
        )
        params = []
        for job in jobs:
            assert isinstance(job.message, OutgoingSms)
            params.append(
                {
                    "rid": job.reminder["id"],
                    "token": job.reminder["claim_token"],
                    "started": now,
                    "to": job.message.to,
                    "sha": body_sha256(job.message.body),
                }
            )
        with self._engine.begin() as conn:
            if conn.execute(statement, params).rowcount == len(params):
                return {job.reminder["id"] for job in jobs}
            written = set()
            for job, one in zip(jobs, params, strict=True):  # rare: find the lost claims
                if conn.execute(statement, [one]).rowcount == 1:
                    written.add(job.reminder["id"])
                else:
                    log.warning("reminder %s: lease lost before sending", job.reminder["id"])
            return written

    def _prepare_all(self, claimed: list[RowData]) -> list[Result | _Job]:
        context = self._load_appointments({row["appointment_id"] for row in claimed})
        opted_out = self._opted_out({n for a, _ in context.values() for n in _numbers(a) if n})
        now = self._clock()
        texts = self._patient_texts({s["patient_id"] for _, s in context.values()}, now)
        self._merges = self._pending_merges(set(context))
        self._emails_opted_out = self._opted_out_emails(
            {a.patient.email for a, _ in context.values()}
        )
        prepared: list[Result | _Job] = []
        for row in claimed:
            appointment, stored = context[row["appointment_id"]]
            try:
                prepared.append(self._prepare(row, appointment, stored, opted_out, now, texts))
            except Exception as exc:  # a bug: retry later, never lose the reminder
                log.exception("reminder %s: unexpected error while preparing", row["id"])
                prepared.append(self._retry(row, now, f"unexpected error: {type(exc).__name__}"))
        return prepared

    def _load_appointments(self, ids: set[int]) -> dict[int, tuple[Appointment, RowData]]:
        query = records.select_with_patients().where(appointments.c.id.in_(ids))
        with reading(self._engine) as conn:
            rows = conn.execute(query).mappings().all()
        loaded: dict[int, tuple[Appointment, RowData]] = {}
        for row in rows:
            patient = records.patient_of(row)
            loaded[row["id"]] = (records.appointment_from_row(row, patient), row)
        return loaded

    def _patient_texts(self, patient_ids: set[int], now: datetime) -> PatientTexts:
        with reading(self._engine) as conn:
            return PatientTexts.load(conn, patient_ids, self._catalog, now)

    def _caps_decision(
        self,
        reminder: RowData,
        appointment: Appointment,
        stored: RowData,
        clinic: Clinic,
        texts: PatientTexts,
        now: datetime,
    ) -> SmsDecision:
        """What the SMS caps make of this text: sent, merged, by email, or nobody's (staff are
        told). Decided as preview decides, over what this patient was sent and the texts still
        to come of every appointment they have booked."""
        protocol = self._catalog.protocol_or_none(stored["protocol_id"])
        if protocol is None or not (clinic.sms_caps.per_day or clinic.sms_caps.per_week):
            return SEND
        step = protocol.step_or_none(reminder["step_id"])
        this = patient_texts.text_of(step, stored, reminder["step_id"], reminder["nominal_at"], now)
        patient = stored["patient_id"]
        others = [text for text in texts.of(patient) if text.key != this.key]
        email = appointment.patient.email
        routes = patient_texts.fallbacks(
            step, appointment, stored, self._renderer, clinic.default_language,
            email_opted_out=opt_out_key(email or "") in self._emails_opted_out,
        )  # fmt: skip
        tz = zone(appointment.patient.timezone)
        decision = decide([*others, this], clinic.sms_caps, tz, {this.key: routes})[this.key]
        if decision.outcome is SmsOutcome.SEND:
            texts.went(patient, this.key, now)  # counts for the next text to this patient
        else:
            texts.turned_away(patient, this.key)
        return decision

    def _step_is_critical(self, stored: RowData, reminder: RowData) -> bool:
        protocol = self._catalog.protocol_or_none(stored["protocol_id"])
        step = protocol.step_or_none(reminder["step_id"]) if protocol else None
        return step is not None and step.critical

    def _step_says(self, stored: RowData, reminder: RowData, setting: str) -> bool:
        """Whether the reminder's step says "merge" for `setting` (over_cap, too_late)."""
        protocol = self._catalog.protocol_or_none(stored["protocol_id"])
        step = protocol.step_or_none(reminder["step_id"]) if protocol else None
        return step is not None and getattr(step, setting) == "merge"

    def _pending_merges(self, appointment_ids: set[int]) -> dict[tuple[int, str], list[RowData]]:
        """Skipped texts waiting to ride on the next text of their appointment to the same
        recipient (the patient, or the caregiver getting copies)."""
        query = (
            select(reminders)
            .where(reminders.c.appointment_id.in_(appointment_ids))
            .where(reminders.c.merge_into_next.is_(True), reminders.c.merged_into.is_(None))
            .where(reminders.c.status == ReminderStatus.SKIPPED.value)
            .order_by(reminders.c.nominal_at)
        )
        merges: dict[tuple[int, str], list[RowData]] = defaultdict(list)
        with reading(self._engine) as conn:
            for row in conn.execute(query).mappings():
                merges[(row["appointment_id"], row["recipient"])].append(row)
        return merges

    def _opted_out_emails(self, addresses: set[str | None]) -> set[str]:
        wanted = {a for a in addresses if a}
        if not wanted:
            return set()
        with reading(self._engine) as conn:
            return opted_out_emails(conn, wanted)

    def _opted_out(self, numbers: set[str]) -> set[str]:
        if not numbers:
            return set()
        with reading(self._engine) as conn:
            found = conn.execute(
                select(sms_opt_outs.c.phone).where(sms_opt_outs.c.phone.in_(numbers))
            ).scalars()
            return set(found)

    def _prepare(
        self,
        reminder: RowData,
        appointment: Appointment,
        stored: RowData,
        opted_out: set[str],
        now: datetime,
        texts: PatientTexts | None = None,
    ) -> Result | _Job:
        """The send-time checks, then the message; or the outcome when it must not be sent."""
        clinic = self._catalog.clinics.get(appointment.clinic_id)
        not_after = reminder["not_after"]
        if clinic is None:
            return Result(
                reminder, ReminderStatus.FAILED, f"unknown clinic {appointment.clinic_id!r}"
            )
        if reminder["channel"] == STAFF_CHANNEL:
            return self._prepare_staff_alert(reminder, appointment, clinic, now)
        if (
            appointment.status is AppointmentStatus.CANCELLED
            and reminder["template"] != "cancelled"
        ):
            return Result(reminder, ReminderStatus.CANCELLED, "appointment cancelled")
        if appointment.patient.suppressed:
            return Result(reminder, ReminderStatus.SKIPPED, appointment.patient.suppressed)
        if reminder["attempts"] > self._policy.max_attempts:
            reason = f"gave up after {self._policy.max_attempts} attempts"
            return Result(reminder, ReminderStatus.FAILED, reason, undeliverable=True)
        if not_after is not None and now > not_after:
            # A critical message that missed its moment needs a person: follow-ups tell staff.
            reason = "deadline passed before it could be sent"
            critical = self._step_is_critical(stored, reminder)
            return Result(reminder, ReminderStatus.SKIPPED, reason, undeliverable=critical)
        opens = clinic.send_window.next_allowed(now, zone(appointment.patient.timezone))
        if opens > now:
            if not_after is not None and opens > not_after:
                reason = "deadline passes before the send window opens"
                if reminder["channel"] == Channel.SMS.value and self._step_says(
                    stored, reminder, "too_late"
                ):
                    return _merge_later(reminder, f"{reason}: merged into the next text")
                return Result(reminder, ReminderStatus.SKIPPED, reason)
            # Not an attempt: the message was never tried.
            changes = {"due_at": opens, "attempts": reminder["attempts"] - 1}
            return Result(reminder, ReminderStatus.PENDING, "deferred to the send window", changes)
        channel = Channel(reminder["channel"])
        copy = reminder["recipient"] == _CAREGIVER
        if copy:
            # The caregiver's copy: both consents are checked again now (an import may have
            # changed them since planning), and the caps stay the patient's own.
            why = caregiver_skip(appointment)
            if why:
                return Result(reminder, ReminderStatus.SKIPPED, why)
            to = appointment.patient.caregiver_copy_to
        else:
            to = appointment.patient.mobile if channel is Channel.SMS else appointment.patient.email
        if not to:
            missing = "mobile number" if channel is Channel.SMS else "email address"
            return Result(reminder, ReminderStatus.SKIPPED, f"no {missing}")
        if channel is Channel.SMS and not copy and not appointment.patient.sms_consent:
            return Result(reminder, ReminderStatus.SKIPPED, NO_SMS_CONSENT, undeliverable=True)
        if channel is Channel.SMS and to in opted_out:
            reason = "the number has opted out of SMS"
            return Result(reminder, ReminderStatus.SKIPPED, reason, undeliverable=True)
        if channel is Channel.EMAIL and opt_out_key(to) in self._emails_opted_out:
            reason = "the address has unsubscribed from email"
            return Result(reminder, ReminderStatus.SKIPPED, reason, undeliverable=True)
        decision = SEND
        if channel is Channel.SMS and texts is not None and not copy:
            decision = self._caps_decision(reminder, appointment, stored, clinic, texts, now)
            if decision.outcome is SmsOutcome.MERGE:
                # A text of the appointment prepared later in this batch may carry it today.
                key = (reminder["appointment_id"], reminder["recipient"])
                self._merges.setdefault(key, []).append(reminder)
                return _merge_later(reminder, decision.reason)
            if decision.outcome is not SmsOutcome.SEND:  # by email, or staff are told
                reason = decision.reason
                return Result(reminder, ReminderStatus.SKIPPED, reason, undeliverable=True)
        try:
            message = self._render(reminder, appointment, stored, clinic, channel)
        except RenderError as exc:
            return Result(reminder, ReminderStatus.FAILED, f"template error: {exc}")
        job = self._job(reminder, appointment, stored, clinic, message, to, now)
        return replace(job, note=decision.reason) if decision.reason else job

    def _render(
        self,
        reminder: RowData,
        appointment: Appointment,
        stored: RowData,
        clinic: Clinic,
        channel: Channel,
    ) -> RenderedMessage:
        rescheduled = stored["scheduled_at"] != stored["booked_at"]
        return self._renderer.render_for(
            stored["protocol_id"], reminder["template"], channel, appointment, clinic, rescheduled
        )

    def _job(
        self,
        reminder: RowData,
        appointment: Appointment,
        stored: RowData,
        clinic: Clinic,
        message: RenderedMessage,
        to: str,
        now: datetime,
    ) -> _Job:
        outgoing: OutgoingSms | OutgoingEmail
        merged: tuple[int, ...] = ()
        if message.channel is Channel.SMS:
            assert message.sms is not None
            body, merged = self._with_merges(message.sms, reminder, appointment, stored, clinic)
            if reminder["recipient"] == _CAREGIVER:
                body = caregiver_copy(body, appointment.patient)
            callback = None
            if self._public_url:
                callback = f"{self._public_url}/webhooks/twilio/status?reminder={reminder['id']}"
            outgoing = OutgoingSms(
                reminder["id"],
                appointment.external_id,
                reminder["step_id"],
                to,
                body,
                now,
                status_callback=callback,
                sender=self._sms_senders.get(clinic.id),
            )
        else:
            assert message.subject is not None and message.text is not None
            assert message.html is not None
            outgoing = OutgoingEmail(
                reminder["id"],
                appointment.external_id,
                reminder["step_id"],
                to,
                clinic.name,
                message.subject,
                message.text,
                message.html,
                f"<reminder-{reminder['id']}.v{stored['version']}@reminder-service>",
                now,
                calendar=self._calendar(reminder, appointment, stored, clinic),
                from_address=self._from_address(clinic),
                unsubscribe=self._list_unsubscribe(stored["patient_id"], to, clinic),
            )
        requested = appointment.patient.language
        return _Job(reminder, outgoing, message.language, _digest(message), requested, merged)

    def _with_merges(
        self,
        body: str,
        reminder: RowData,
        appointment: Appointment,
        stored: RowData,
        clinic: Clinic,
    ) -> tuple[str, tuple[int, ...]]:
        """This text, with the lines of skipped texts its step chain said to merge into it."""
        waiting = self._merges.pop((reminder["appointment_id"], reminder["recipient"]), [])
        lines, merged = [], []
        rescheduled = stored["scheduled_at"] != stored["booked_at"]
        for row in waiting:
            try:
                lines.append(
                    self._renderer.merge_line_for(
                        stored["protocol_id"], row["template"], appointment, clinic, rescheduled
                    )
                )
            except RenderError:
                log.exception("reminder %s: its merge line cannot be rendered", row["id"])
                continue
            merged.append(row["id"])
        return "\n".join([body, *lines]), tuple(merged)

    def _calendar(
        self, reminder: RowData, appointment: Appointment, stored: RowData, clinic: Clinic
    ) -> CalendarEvent | None:
        cancelled = reminder["template"] == CALENDAR_CANCEL
        protocol = self._catalog.protocol_or_none(stored["protocol_id"])
        step = protocol.step_or_none(reminder["step_id"]) if protocol else None
        if not cancelled and (step is None or not step.calendar):
            return None
        return calendar_event(
            appointment, stored["version"], clinic, self._from_address(clinic), cancelled
        )

    def _list_unsubscribe(self, patient_id: int, to: str, clinic: Clinic) -> ListUnsubscribe | None:
        if self._unsubscribe is None:
            return None
        return self._unsubscribe.for_patient(patient_id, to, self._from_address(clinic))

    def _from_address(self, clinic: Clinic) -> str:
        return clinic.email_from or self._email_from

    def _prepare_staff_alert(
        self, reminder: RowData, appointment: Appointment, clinic: Clinic, now: datetime
    ) -> Result | _Job:
        if not clinic.staff_email:
            return Result(reminder, ReminderStatus.FAILED, "the clinic has no staff_email")
        report = reminder["alert"] or reminder["reason"]
        context = {
            "clinic_name": clinic.name,
            "appointment_id": appointment.external_id,
            "appointment_time": staff_time(appointment.start, clinic),
            "patient": masked_patient(appointment.patient),
            "step": reminder["step_id"],
            "reason": report,
            "lines": report.splitlines(),  # an alert listing several appointments, one a line
        }
        try:
            message = self._renderer.render(
                "_staff", reminder["template"], Channel.EMAIL, clinic.default_language,
                clinic.default_language, context,
            )  # fmt: skip
        except RenderError as exc:
            return Result(reminder, ReminderStatus.FAILED, f"template error: {exc}")
        assert message.subject is not None and message.text is not None
        assert message.html is not None
        outgoing = OutgoingEmail(
            reminder["id"],
            appointment.external_id,
            reminder["step_id"],
            clinic.staff_email,
            clinic.name,
            message.subject,
            message.text,
            message.html,
            f"<staff-alert-{reminder['id']}@reminder-service>",
            now,
            from_address=self._from_address(clinic),
        )
        return _Job(reminder, outgoing, message.language, _digest(message))

    # -- sending (on the loop) --------------------------------------------------------------

    async def _send(self, job: _Job) -> Result:
        reminder = job.reminder
        try:
            receipt = await self._deliver(job.message)
        except ChannelError as exc:
            return self._failed(job, exc)
        except Exception as exc:  # a bug or an unexpected provider fault: retry, never lose it
            log.exception("reminder %s: unexpected error while sending", reminder["id"])
            result = self._retry(reminder, self._clock(), f"unexpected error: {type(exc).__name__}")
            result.in_doubt = True  # the request may have gone out: ask before sending again
            return result
        self._taken.add(receipt.provider_id)
        now = self._clock()
        changes = {"sent_at": now, "provider_id": receipt.provider_id, "language": job.language}
        detail: dict[str, Any] = {"language": job.language, "body_sha256": job.digest}
        if job.merged:
            detail["merged"] = list(job.merged)
        if job.requested and job.requested.split("-")[0] != job.language.split("-")[0]:
            detail["language_fallback"] = f"no {job.requested} template: sent in {job.language}"
        return Result(reminder, ReminderStatus.SENT, job.note or "sent", changes, detail)

    async def _deliver(self, message: OutgoingSms | OutgoingEmail) -> Receipt:
        if isinstance(message, OutgoingSms):
            return await self._sms.send_sms(message)
        return await self._email.send_email(message)

    def _failed(self, job: _Job, exc: ChannelError) -> Result:
        reminder = job.reminder
        verdict = self._failures.classify(exc.failure)
        described = exc.failure.describe()
        if verdict.meaning and verdict.meaning not in described:
            described = f"{described} ({verdict.meaning})"
        if verdict.permanent:
            opt_out = None
            if verdict.opt_out and isinstance(job.message, OutgoingSms):
                opt_out = job.message.to
            return Result(
                reminder,
                ReminderStatus.FAILED,
                f"permanent failure: {described}",
                {"last_error": described},
                {"failure": exc.failure.describe()},
                opt_out=opt_out,
                undeliverable=True,
            )
        now = self._clock()
        reason = f"temporary failure: {described}"
        if not (exc.failure.maybe_accepted and isinstance(job.message, OutgoingSms)):
            return self._retry(reminder, now, reason)
        # The text may be on its way. Give the provider time to show it (its status callback, its
        # list) before asking, or before a second copy from a channel that cannot be asked.
        asked = job.message.status_callback or self._lookup is not None
        settle = self._policy.settle if asked else timedelta(0)
        result = self._retry(reminder, now, f"{reason}; it may have been accepted", settle)
        result.changes["maybe_accepted_at"] = now
        result.in_doubt = True
        return result

    def _retry(
        self, reminder: RowData, now: datetime, reason: str, at_least: timedelta = timedelta(0)
    ) -> Result:
        attempts = reminder["attempts"]
        delay = min(self._policy.retry_base * 2 ** (attempts - 1), self._policy.retry_cap)
        jittered = delay * random.uniform(0.5, 1.5)  # noqa: S311 - jitter, not security
        retry_at = now + max(jittered, at_least)
        not_after = reminder["not_after"]
        if attempts >= self._policy.max_attempts or (
            not_after is not None and retry_at > not_after
        ):
            return Result(
                reminder,
                ReminderStatus.FAILED,
                f"{reason}; no retry left before the deadline",
                {"last_error": reason},
                undeliverable=True,
            )
        return Result(
            reminder,
            ReminderStatus.PENDING,
            f"{reason}; retry {attempts + 1}",
            {"due_at": retry_at, "last_error": reason},
        )

    # -- recording ----------------------------------------------------------------------------

    def _record(
        self,
        reminder: RowData,
        status: ReminderStatus,
        reason: str,
        changes: dict[str, Any],
        now: datetime,
    ) -> None:
        """Record one outcome (kept for callers outside the loop)."""
        self._record_many([Result(reminder, status, reason, dict(changes))], now)

    def _record_many(self, results: list[Result], now: datetime) -> None:
        with self._engine.begin() as conn:
            recorded = self._update_rows(conn, results, now)
            bulk.insert_audit(conn, [_audit_entry(r, now) for r in recorded])
            _record_merges(conn, recorded, now)
            opted_out = {r.opt_out for r in recorded if r.opt_out}
            record_opt_outs(conn, opted_out, now, source="provider: recipient unsubscribed")
            self._follow_ups.after_undeliverable(
                conn, [(r.reminder, r.reason) for r in recorded if r.undeliverable], now
            )
        for result in recorded:
            log.info(
                "reminder %s (%s/%s): %s: %s",
                result.reminder["id"],
                result.reminder["step_id"],
                result.reminder["channel"],
                result.status.value,
                result.reason,
            )

    def _update_rows(self, conn: Connection, results: list[Result], now: datetime) -> list[Result]:
        """Write each result if this worker still holds the claim; returns those written."""
        by_shape: dict[tuple[str, ...], list[Result]] = defaultdict(list)
        for result in results:
            by_shape[tuple(sorted(_changes(result)))].append(result)
        recorded: list[Result] = []
        for shape, group in by_shape.items():
            statement = (
                update(reminders)
                .where(reminders.c.id == bindparam("rid"))
                .where(reminders.c.claim_token == bindparam("token"))
                .values(
                    status=bindparam("new_status"),
                    reason=bindparam("new_reason"),
                    updated_at=now,
                    lease_until=None,
                    claim_token=None,
                    **{column: bindparam(f"new_{column}") for column in shape},
                )
            )
            params = [_params(result) for result in group]
            if conn.execute(statement, params).rowcount == len(group):
                recorded.extend(group)
                continue
            for result, one in zip(group, params, strict=True):  # rare: find the lost leases
                if conn.execute(statement, [one]).rowcount == 1:
                    recorded.append(result)
                else:
                    log.warning(
                        "reminder %s: lease lost before the result was recorded",
                        result.reminder["id"],
                    )
        return recorded


_CAREGIVER = Recipient.CAREGIVER.value


def _numbers(appointment: Appointment) -> tuple[str | None, str | None]:
    """The numbers an appointment's texts may go to: the patient's, their caregiver's."""
    return appointment.patient.mobile, appointment.patient.caregiver_copy_to


def _merge_later(reminder: RowData, reason: str) -> Result:
    return Result(reminder, ReminderStatus.SKIPPED, reason, {"merge_into_next": True})


def _record_merges(conn: Connection, recorded: list[Result], now: datetime) -> None:
    """Mark the skipped texts that rode on a text just sent, each with an audit entry."""
    entries = []
    for result in recorded:
        merged = result.detail.get("merged") if result.status is ReminderStatus.SENT else None
        for merged_id in merged or ():
            conn.execute(
                update(reminders)
                .where(reminders.c.id == merged_id, reminders.c.merged_into.is_(None))
                .values(merged_into=result.reminder["id"], updated_at=now)
            )
            entries.append(
                {"at": now, "appointment_id": result.reminder["appointment_id"],
                 "reminder_id": merged_id, "event": "merged",
                 "reason": f"its line went with reminder {result.reminder['id']}", "detail": None}
            )  # fmt: skip
    bulk.insert_audit(conn, entries)


def _changes(result: Result) -> dict[str, Any]:
    """The columns a result sets: its own, and the attempt written down cleared unless the
    outcome is still unknown."""
    return result.changes if result.in_doubt else {**SETTLED, **result.changes}


def _params(result: Result) -> dict[str, Any]:
    return {
        "rid": result.reminder["id"],
        "token": result.reminder["claim_token"],
        "new_status": result.status.value,
        "new_reason": result.reason,
        **{f"new_{column}": value for column, value in _changes(result).items()},
    }


def _audit_entry(result: Result, now: datetime) -> dict[str, Any]:
    event = "deferred" if result.status is ReminderStatus.PENDING else result.status.value
    detail = {"attempt": result.reminder["attempts"], **result.detail}
    return {
        "at": now,
        "appointment_id": result.reminder["appointment_id"],
        "reminder_id": result.reminder["id"],
        "event": event,
        "reason": result.reason,
        "detail": json.dumps(detail, default=str),
    }


def calendar_event(
    appointment: Appointment, version: int, clinic: Clinic, organizer: str, cancelled: bool
) -> CalendarEvent:
    """The appointment as a calendar entry: one UID for all its versions, so a reschedule
    updates the entry and a cancellation removes it. The summary names the clinic only."""
    key = hashlib.sha256(appointment.external_id.encode()).hexdigest()[:24]
    return CalendarEvent(
        uid=f"appointment-{key}@reminder-service",
        sequence=version,
        start=appointment.start,
        end=appointment.end,
        summary=f"Appointment: {clinic.name}",
        location=appointment.location or clinic.address,
        organizer=organizer,
        cancelled=cancelled,
        organizer_name=clinic.name,
        attendee=appointment.patient.email or "",
        attendee_name=f"{appointment.patient.first_name} {appointment.patient.last_name}".strip(),
    )


def _digest(message: RenderedMessage) -> str:
    body = (
        message.sms
        if message.sms is not None
        else f"{message.subject}\n{message.text}\n{message.html}"
    )
    return hashlib.sha256(body.encode()).hexdigest()
