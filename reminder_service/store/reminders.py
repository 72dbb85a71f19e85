"""The reminders the dispatcher claims, and what it records of them, over SQL.

`ReminderStore` is the port the dispatcher uses; `SqlReminderStore` implements it on SQLite and
PostgreSQL. Every read and write for a claimed batch is one query for the whole batch, never one
per reminder: claims (a lease and a claim token; SKIP LOCKED on PostgreSQL so dispatchers never
wait for one another), the attempts written down before texts go out, and results written in
bulk by the holder of the claim only.

A staff alert is stored with the channel "staff" and read back as a reminder for
`Recipient.STAFF` sent by email.
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, and_, bindparam, func, select, update

from ..domain.audit import AuditEvent, AuditRecord
from ..domain.planning import Recipient, ReminderStatus
from ..domain.protocol import Channel
from ..domain.reminder import Outcome, Reminder, StoredAppointment
from ..domain.sms_caps import PatientTexts
from . import bulk, opt_outs, records
from .engine import reading
from .records import RowData
from .tables import STAFF_CHANNEL, appointments, reminders

log = logging.getLogger(__name__)

# A recorded result settles the attempt written down before the send.
SETTLED = {"attempt_started_at": None, "attempt_to": None, "attempt_sha256": None}


@dataclass(frozen=True, slots=True)
class Attempt:
    """An SMS about to go out, written down first so a lost answer can be asked about."""

    reminder: Reminder
    to: str
    sha256: str  # of the body


class ReminderStore(Protocol):
    """What dispatching reads and writes. Reads for a batch are one query each; writes are
    made only while the claim holds (a lost lease writes nothing)."""

    def claim(self, limit: int, now: datetime, lease: timedelta) -> list[Reminder]:
        """Take up to `limit` reminders due (or whose lease ran out) for `lease`; committed."""
        ...

    def next_due(self) -> datetime | None:
        """The earliest moment a reminder becomes claimable."""
        ...

    def appointments(self, ids: set[int]) -> dict[int, StoredAppointment]: ...

    def sms_opted_out(self, numbers: set[str]) -> set[str]:
        """Those of `numbers` that must get no SMS."""
        ...

    def email_opted_out(self, keys: set[str]) -> set[str]:
        """Those of `keys` (addresses as the opt-out list keeps them) on the list."""
        ...

    def patient_texts(self, patient_ids: set[int], now: datetime) -> PatientTexts: ...

    def pending_merges(
        self, appointment_ids: set[int]
    ) -> dict[tuple[int, Recipient], list[Reminder]]:
        """Skipped texts waiting to ride on their appointment's next text to the same
        recipient, oldest first."""
        ...

    def write_down(self, attempts: Sequence[Attempt], now: datetime) -> set[int]:
        """Record the attempts about to go out; returns the reminders whose claim still holds."""
        ...

    def record(self, outcomes: Sequence[Outcome], now: datetime) -> list[Outcome]:
        """Write each outcome (with its audit entry) if its claim still holds; returns those
        written."""
        ...

    def recorded_provider_ids(self, ids: Sequence[str]) -> set[str]:
        """Those of the provider's message ids already recorded for some reminder."""
        ...


# What else a recording commits with the outcomes: the opt-outs and the follow-ups they call for.
AfterRecording = Callable[[Connection, list[Outcome], datetime], None]
PatientTextsLoader = Callable[[Connection, set[int], datetime], PatientTexts]


class SqlReminderStore:
    def __init__(
        self, engine: Engine, texts: PatientTextsLoader, after_recording: AfterRecording
    ) -> None:
        self._engine = engine
        self._texts = texts
        self._after_recording = after_recording

    def claim(self, limit: int, now: datetime, lease: timedelta) -> list[Reminder]:
        # Leases that ran out first (they were due earliest), then pending rows in due order:
        # each an index walk that stops at `limit` (one query ORing both sorted every due row
        # for every batch).
        token = uuid.uuid4().hex
        lapsed = and_(
            reminders.c.status == ReminderStatus.SENDING.value, reminders.c.lease_until < now
        )
        due = and_(reminders.c.status == ReminderStatus.PENDING.value, reminders.c.due_at <= now)
        claimed: list[Reminder] = []
        with self._engine.begin() as conn:
            for which in (lapsed, due):
                wanted = limit - len(claimed)
                if wanted <= 0:
                    break
                candidates = select(reminders.c.id).where(which)
                candidates = candidates.order_by(reminders.c.due_at).limit(wanted)
                if self._engine.dialect.name == "postgresql":
                    candidates = candidates.with_for_update(skip_locked=True)
                rows = conn.execute(
                    update(reminders)
                    .where(reminders.c.id.in_(candidates.scalar_subquery()))
                    .values(
                        status=ReminderStatus.SENDING.value,
                        lease_until=now + lease,
                        claim_token=token,
                        attempts=reminders.c.attempts + 1,
                        updated_at=now,
                    )
                    .returning(*reminders.c)
                ).mappings()
                claimed.extend(reminder_from_row(row) for row in rows)
        claimed.sort(key=lambda r: r.due_at)
        return claimed

    def next_due(self) -> datetime | None:
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

    def appointments(self, ids: set[int]) -> dict[int, StoredAppointment]:
        query = records.select_with_patients().where(appointments.c.id.in_(ids))
        with reading(self._engine) as conn:
            rows = conn.execute(query).mappings().all()
        return {row["id"]: stored_appointment(row) for row in rows}

    def sms_opted_out(self, numbers: set[str]) -> set[str]:
        with reading(self._engine) as conn:
            return opt_outs.opted_out_numbers(conn, numbers)

    def email_opted_out(self, keys: set[str]) -> set[str]:
        with reading(self._engine) as conn:
            return opt_outs.opted_out_emails(conn, keys)

    def patient_texts(self, patient_ids: set[int], now: datetime) -> PatientTexts:
        with reading(self._engine) as conn:
            return self._texts(conn, patient_ids, now)

    def pending_merges(
        self, appointment_ids: set[int]
    ) -> dict[tuple[int, Recipient], list[Reminder]]:
        # The status is checked here: in SQL it made SQLite walk every skipped reminder (its
        # status index) rather than these appointments' own rows.
        query = (
            select(reminders)
            .where(reminders.c.appointment_id.in_(appointment_ids))
            .where(reminders.c.merge_into_next.is_(True), reminders.c.merged_into.is_(None))
            .order_by(reminders.c.nominal_at)
        )
        merges: dict[tuple[int, Recipient], list[Reminder]] = defaultdict(list)
        with reading(self._engine) as conn:
            for row in conn.execute(query).mappings():
                if row["status"] != ReminderStatus.SKIPPED.value:
                    continue
                reminder = reminder_from_row(row)
                merges[(reminder.appointment_id, reminder.recipient)].append(reminder)
        return merges

    def write_down(self, attempts: Sequence[Attempt], now: datetime) -> set[int]:
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
        params = [
            {"rid": a.reminder.id, "token": a.reminder.claim_token, "started": now,
             "to": a.to, "sha": a.sha256}
            for a in attempts
        ]  # fmt: skip
        with self._engine.begin() as conn:
            if conn.execute(statement, params).rowcount == len(params):
                return {a.reminder.id for a in attempts}
            written = set()
            for attempt, one in zip(attempts, params, strict=True):  # rare: find the lost claims
                if conn.execute(statement, [one]).rowcount == 1:
                    written.add(attempt.reminder.id)
                else:
                    log.warning("reminder %s: lease lost before sending", attempt.reminder.id)
            return written

    def record(self, outcomes: Sequence[Outcome], now: datetime) -> list[Outcome]:
        with self._engine.begin() as conn:
            recorded = _update_rows(conn, outcomes, now)
            bulk.insert_audit(conn, [audit_record(o, now).as_row() for o in recorded])
            _record_merges(conn, recorded, now)
            self._after_recording(conn, recorded, now)
        return recorded

    def recorded_provider_ids(self, ids: Sequence[str]) -> set[str]:
        with reading(self._engine) as conn:
            query = select(reminders.c.provider_id).where(reminders.c.provider_id.in_(ids))
            return set(conn.execute(query).scalars())


def of_appointment(conn: Connection, appointment_id: int) -> list[RowData]:
    """The appointment's reminders rows, in the order they are due."""
    query = (
        select(reminders)
        .where(reminders.c.appointment_id == appointment_id)
        .order_by(reminders.c.due_at, reminders.c.id)
    )
    return list(conn.execute(query).mappings().all())


@dataclass(frozen=True, slots=True)
class StoredText:
    """A patient's SMS row, as the caps weigh it."""

    appointment_id: int
    step_id: str
    nominal_at: datetime
    due_at: datetime
    status: ReminderStatus


def sms_sent_since(
    conn: Connection, patient_ids: set[int], since: datetime
) -> dict[int, list[datetime]]:
    """When each patient was texted after `since` (their own texts: not a caregiver's copies)."""
    # Read from the patients' appointments: the status is checked here, not in SQL, where it
    # made SQLite walk every reminder ever sent (its status index) for each batch.
    query = (
        select(appointments.c.patient_id, reminders.c.sent_at, reminders.c.status)
        .join(appointments, appointments.c.id == reminders.c.appointment_id)
        .where(appointments.c.patient_id.in_(patient_ids))
        .where(reminders.c.channel == Channel.SMS.value)
        .where(reminders.c.recipient == Recipient.PATIENT.value)  # copies went to the caregiver
        .where(reminders.c.sent_at > since)
    )
    history: dict[int, list[datetime]] = defaultdict(list)
    for patient_id, sent_at, status in conn.execute(query).tuples():
        if status == ReminderStatus.SENT.value:
            history[patient_id].append(sent_at)
    return history


def patient_sms(conn: Connection, appointment_ids: set[int]) -> dict[int, list[StoredText]]:
    """Per appointment, its SMS rows to the patient, whatever their status."""
    if not appointment_ids:
        return {}
    query = select(
        reminders.c.appointment_id,
        reminders.c.step_id,
        reminders.c.nominal_at,
        reminders.c.due_at,
        reminders.c.status,
    ).where(
        reminders.c.appointment_id.in_(appointment_ids),
        reminders.c.channel == Channel.SMS.value,
        reminders.c.recipient == Recipient.PATIENT.value,  # the caps are the patient's
    )
    stored: dict[int, list[StoredText]] = defaultdict(list)
    for appointment_id, step_id, nominal_at, due_at, status in conn.execute(query).tuples():
        text = StoredText(appointment_id, step_id, nominal_at, due_at, ReminderStatus(status))
        stored[appointment_id].append(text)
    return stored


def reminder_from_row(row: RowData) -> Reminder:
    staff = row["channel"] == STAFF_CHANNEL
    return Reminder(
        id=row["id"],
        appointment_id=row["appointment_id"],
        appointment_version=row["appointment_version"],
        step_id=row["step_id"],
        channel=Channel.EMAIL if staff else Channel(row["channel"]),
        recipient=Recipient.STAFF if staff else Recipient(row["recipient"]),
        template=row["template"],
        status=ReminderStatus(row["status"]),
        reason=row["reason"],
        nominal_at=row["nominal_at"],
        due_at=row["due_at"],
        not_after=row["not_after"],
        attempts=row["attempts"],
        claim_token=row["claim_token"],
        alert=row["alert"],
        attempt_started_at=row["attempt_started_at"],
        attempt_to=row["attempt_to"],
        attempt_sha256=row["attempt_sha256"],
        merge_into_next=bool(row["merge_into_next"]),
    )


def stored_channel(reminder: Reminder) -> str:
    """The channel as the reminders table spells it."""
    return STAFF_CHANNEL if reminder.recipient is Recipient.STAFF else reminder.channel.value


def reminder_row(reminder: Reminder) -> dict[str, Any]:
    """The reminder's columns as stored (for code that works on rows: follow-ups)."""
    recipient = Recipient.PATIENT if reminder.recipient is Recipient.STAFF else reminder.recipient
    return {
        "id": reminder.id,
        "appointment_id": reminder.appointment_id,
        "appointment_version": reminder.appointment_version,
        "step_id": reminder.step_id,
        "channel": stored_channel(reminder),
        "recipient": recipient.value,
        "template": reminder.template,
        "status": reminder.status.value,
        "reason": reminder.reason,
        "nominal_at": reminder.nominal_at,
        "due_at": reminder.due_at,
        "not_after": reminder.not_after,
        "attempts": reminder.attempts,
        "claim_token": reminder.claim_token,
        "alert": reminder.alert,
    }


def stored_appointment(row: RowData) -> StoredAppointment:
    """A `select_with_patients` row as a stored appointment."""
    patient = records.patient_of(row)
    return StoredAppointment(
        id=row["id"],
        appointment=records.appointment_from_row(row, patient),
        patient_id=row["patient_id"],
        protocol_id=row["protocol_id"],
        version=row["version"],
        booked_at=row["booked_at"],
        scheduled_at=row["scheduled_at"],
    )


def audit_record(outcome: Outcome, now: datetime) -> AuditRecord:
    """The audit entry of a recorded outcome: a reminder back to pending is deferred."""
    status = outcome.status
    event = AuditEvent.DEFERRED if status is ReminderStatus.PENDING else AuditEvent(status.value)
    return AuditRecord(
        now,
        event,
        outcome.reason,
        outcome.reminder.appointment_id,
        outcome.reminder.id,
        {"attempt": outcome.reminder.attempts, **outcome.detail},
    )


def changes_of(outcome: Outcome) -> dict[str, Any]:
    """The columns an outcome sets: its own, and the attempt written down cleared unless the
    outcome is still unknown."""
    return outcome.changes if outcome.in_doubt else {**SETTLED, **outcome.changes}


def _update_rows(conn: Connection, outcomes: Sequence[Outcome], now: datetime) -> list[Outcome]:
    """Write each outcome if this worker still holds the claim, in one statement per shape of
    change; returns those written."""
    by_shape: dict[tuple[str, ...], list[Outcome]] = defaultdict(list)
    for outcome in outcomes:
        by_shape[tuple(sorted(changes_of(outcome)))].append(outcome)
    recorded: list[Outcome] = []
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
        params = [_params(outcome) for outcome in group]
        if conn.execute(statement, params).rowcount == len(group):
            recorded.extend(group)
            continue
        for outcome, one in zip(group, params, strict=True):  # rare: find the lost leases
            if conn.execute(statement, [one]).rowcount == 1:
                recorded.append(outcome)
            else:
                log.warning(
                    "reminder %s: lease lost before the result was recorded", outcome.reminder.id
                )
    return recorded


def _params(outcome: Outcome) -> dict[str, Any]:
    return {
        "rid": outcome.reminder.id,
        "token": outcome.reminder.claim_token,
        "new_status": outcome.status.value,
        "new_reason": outcome.reason,
        **{f"new_{column}": value for column, value in changes_of(outcome).items()},
    }


def _record_merges(conn: Connection, recorded: list[Outcome], now: datetime) -> None:
    """Mark the skipped texts that rode on a text just sent, each with an audit entry."""
    entries = []
    for outcome in recorded:
        merged = outcome.detail.get("merged") if outcome.status is ReminderStatus.SENT else None
        for merged_id in merged or ():
            conn.execute(
                update(reminders)
                .where(reminders.c.id == merged_id, reminders.c.merged_into.is_(None))
                .values(merged_into=outcome.reminder.id, updated_at=now)
            )
            reason = f"its line went with reminder {outcome.reminder.id}"
            record = AuditRecord(now, AuditEvent.MERGED, reason, outcome.reminder.appointment_id,
                                 merged_id)  # fmt: skip
            entries.append(record.as_row())
    bulk.insert_audit(conn, entries)
