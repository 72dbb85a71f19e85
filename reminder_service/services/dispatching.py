"""Dispatching: claim due reminders, commit, then render and send each one and record the result.

No transaction is held across a send. A claim is a lease: if this process dies mid-send, the row
returns to the pool when the lease expires. Results are written only by the holder of the claim
token, so a worker whose lease ran out cannot overwrite a newer attempt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, func, insert, or_, select, update

from ..catalog import Catalog
from ..channels.base import (
    ChannelError,
    EmailChannel,
    OutgoingEmail,
    OutgoingSms,
    Receipt,
    SmsChannel,
)
from ..clock import Clock
from ..domain.appointment import Appointment, AppointmentStatus
from ..domain.clinic import Clinic
from ..domain.planning import ReminderStatus
from ..domain.protocol import Channel
from ..domain.timing import zone
from ..rendering import RenderedMessage, Renderer, RenderError, message_context
from ..store import records
from ..store.engine import reading
from ..store.records import RowData
from ..store.tables import appointments, audit_log, patients, reminders

log = logging.getLogger(__name__)

Outcome = tuple[ReminderStatus, str, dict[str, Any]]


@dataclass
class DispatchReport:
    claimed: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    def count(self, status: str) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1


@dataclass(frozen=True)
class DispatchPolicy:
    lease: timedelta = timedelta(seconds=60)
    batch: int = 100
    max_attempts: int = 5
    retry_base: timedelta = timedelta(seconds=30)
    retry_cap: timedelta = timedelta(hours=1)


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
    ) -> None:
        self._engine = engine
        self._catalog = catalog
        self._renderer = renderer
        self._sms = sms
        self._email = email
        self._clock = clock
        self._policy = policy

    def dispatch_due(self) -> DispatchReport:
        """Send everything due now, batch by batch, until nothing is left."""
        report = DispatchReport()
        while claimed := self._claim():
            report.claimed += len(claimed)
            context = self._load_appointments({row["appointment_id"] for row in claimed})
            for row in claimed:
                status = self._deliver(row, *context[row["appointment_id"]])
                report.count(status.value)
        return report

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

    def _claim(self) -> list[RowData]:
        now = self._clock()
        token = uuid.uuid4().hex
        due = or_(
            and_(reminders.c.status == ReminderStatus.PENDING.value, reminders.c.due_at <= now),
            and_(reminders.c.status == ReminderStatus.SENDING.value, reminders.c.lease_until < now),
        )
        candidates = select(reminders.c.id).where(due).order_by(reminders.c.due_at)
        candidates = candidates.limit(self._policy.batch)
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

    def _load_appointments(self, ids: set[int]) -> dict[int, tuple[Appointment, RowData]]:
        query = (
            select(appointments, *[patients.c[c].label(f"p_{c}") for c in records.PATIENT_COLUMNS])
            .join(patients, patients.c.id == appointments.c.patient_id)
            .where(appointments.c.id.in_(ids))
        )
        with reading(self._engine) as conn:
            rows = conn.execute(query).mappings().all()
        loaded: dict[int, tuple[Appointment, RowData]] = {}
        for row in rows:
            patient = {c: row[f"p_{c}"] for c in records.PATIENT_COLUMNS}
            loaded[row["id"]] = (records.appointment_from_row(row, patient), row)
        return loaded

    def _deliver(
        self, reminder: RowData, appointment: Appointment, stored: RowData
    ) -> ReminderStatus:
        now = self._clock()
        clinic = self._catalog.clinics.get(appointment.clinic_id)
        try:
            status, reason, changes = self._decide_and_send(
                reminder, appointment, stored, clinic, now
            )
        except Exception as exc:  # a bug or an unexpected provider fault: retry, never lose it
            log.exception("reminder %s: unexpected error while sending", reminder["id"])
            status, reason, changes = self._retry(
                reminder, now, f"unexpected error: {type(exc).__name__}"
            )
        self._record(reminder, status, reason, changes, now)
        return status

    def _decide_and_send(
        self,
        reminder: RowData,
        appointment: Appointment,
        stored: RowData,
        clinic: Clinic | None,
        now: datetime,
    ) -> Outcome:
        not_after = reminder["not_after"]
        if clinic is None:
            return ReminderStatus.FAILED, f"unknown clinic {appointment.clinic_id!r}", {}
        if appointment.status is AppointmentStatus.CANCELLED:
            return ReminderStatus.CANCELLED, "appointment cancelled", {}
        if reminder["attempts"] > self._policy.max_attempts:
            return ReminderStatus.FAILED, f"gave up after {self._policy.max_attempts} attempts", {}
        if not_after is not None and now > not_after:
            return ReminderStatus.SKIPPED, "deadline passed before it could be sent", {}
        opens = clinic.send_window.next_allowed(now, zone(appointment.patient.timezone))
        if opens > now:
            if not_after is not None and opens > not_after:
                return ReminderStatus.SKIPPED, "deadline passes before the send window opens", {}
            # Not an attempt: the message was never tried.
            changes = {"due_at": opens, "attempts": reminder["attempts"] - 1}
            return ReminderStatus.PENDING, "deferred to the send window", changes
        channel = Channel(reminder["channel"])
        to = appointment.patient.mobile if channel is Channel.SMS else appointment.patient.email
        if not to:
            return (
                ReminderStatus.SKIPPED,
                f"no {'mobile number' if channel is Channel.SMS else 'email address'}",
                {},
            )
        try:
            message = self._render(reminder, appointment, stored, clinic, channel)
        except RenderError as exc:
            return ReminderStatus.FAILED, f"template error: {exc}", {}
        try:
            receipt = self._send(reminder, appointment, stored, clinic, message, to, now)
        except ChannelError as exc:
            if exc.permanent:
                return ReminderStatus.FAILED, f"permanent failure: {exc}", {"last_error": str(exc)}
            return self._retry(reminder, now, f"temporary failure: {exc}")
        return (
            ReminderStatus.SENT,
            "sent",
            {
                "sent_at": now,
                "provider_id": receipt.provider_id,
                "language": message.language,
                "_detail": {"language": message.language, "body_sha256": _digest(message)},
            },
        )

    def _render(
        self,
        reminder: RowData,
        appointment: Appointment,
        stored: RowData,
        clinic: Clinic,
        channel: Channel,
    ) -> RenderedMessage:
        rescheduled = stored["scheduled_at"] != stored["booked_at"]
        context = message_context(appointment, clinic, appointment.patient.language, rescheduled)
        return self._renderer.render(
            stored["protocol_id"],
            reminder["template"],
            channel,
            appointment.patient.language,
            clinic.default_language,
            context,
        )

    def _send(
        self,
        reminder: RowData,
        appointment: Appointment,
        stored: RowData,
        clinic: Clinic,
        message: RenderedMessage,
        to: str,
        now: datetime,
    ) -> Receipt:
        if message.channel is Channel.SMS:
            assert message.sms is not None
            return self._sms.send_sms(
                OutgoingSms(
                    reminder["id"],
                    appointment.external_id,
                    reminder["step_id"],
                    to,
                    message.sms,
                    now,
                )
            )
        assert message.subject is not None and message.text is not None and message.html is not None
        message_id = f"<reminder-{reminder['id']}.v{stored['version']}@reminder-service>"
        return self._email.send_email(
            OutgoingEmail(
                reminder["id"],
                appointment.external_id,
                reminder["step_id"],
                to,
                clinic.name,
                message.subject,
                message.text,
                message.html,
                message_id,
                now,
            )
        )

    def _retry(self, reminder: RowData, now: datetime, reason: str) -> Outcome:
        attempts = reminder["attempts"]
        delay = min(self._policy.retry_base * 2 ** (attempts - 1), self._policy.retry_cap)
        retry_at = now + delay * random.uniform(0.8, 1.2)  # noqa: S311 - jitter, not security
        not_after = reminder["not_after"]
        if attempts >= self._policy.max_attempts or (
            not_after is not None and retry_at > not_after
        ):
            return (
                ReminderStatus.FAILED,
                f"{reason}; no retry left before the deadline",
                {"last_error": reason},
            )
        return (
            ReminderStatus.PENDING,
            f"{reason}; retry {attempts + 1}",
            {"due_at": retry_at, "last_error": reason},
        )

    def _record(
        self,
        reminder: RowData,
        status: ReminderStatus,
        reason: str,
        changes: dict[str, Any],
        now: datetime,
    ) -> None:
        detail = {"attempt": reminder["attempts"], **changes.pop("_detail", {})}
        values = {
            "status": status.value,
            "reason": reason,
            "updated_at": now,
            "lease_until": None,
            "claim_token": None,
            **changes,
        }
        with self._engine.begin() as conn:
            result = conn.execute(
                update(reminders)
                .where(reminders.c.id == reminder["id"])
                .where(reminders.c.claim_token == reminder["claim_token"])
                .values(**values)
            )
            if result.rowcount != 1:
                log.warning(
                    "reminder %s: lease lost before the result was recorded", reminder["id"]
                )
                return
            event = "deferred" if status is ReminderStatus.PENDING else status.value
            conn.execute(
                insert(audit_log).values(
                    at=now,
                    appointment_id=reminder["appointment_id"],
                    reminder_id=reminder["id"],
                    event=event,
                    reason=reason,
                    detail=json.dumps(detail, default=str),
                )
            )
        log.info(
            "reminder %s (%s/%s): %s: %s",
            reminder["id"],
            reminder["step_id"],
            reminder["channel"],
            status.value,
            reason,
        )


def _digest(message: RenderedMessage) -> str:
    body = (
        message.sms
        if message.sms is not None
        else f"{message.subject}\n{message.text}\n{message.html}"
    )
    return hashlib.sha256(body.encode()).hexdigest()
