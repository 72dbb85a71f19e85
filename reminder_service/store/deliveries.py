"""What providers report after a message left: delivery statuses (Twilio's callbacks) and
bounces (an email's DSN), written onto the reminder they are about."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, and_, or_, select, update

from ..domain.planning import Recipient, ReminderStatus
from ..domain.reminder import Reminder
from .reminders import reminder_from_row
from .tables import appointments, patients, reminders


@dataclass(frozen=True, slots=True)
class Delivery:
    """A reminder as a report about it finds it."""

    reminder: Reminder
    provider_id: str | None  # the provider's message id, once it accepted the message
    delivery_status: str | None  # the latest status reported
    maybe_accepted_at: datetime | None  # its send's answer was lost: perhaps accepted then
    lease_until: datetime | None  # while a dispatcher holds it


def find(conn: Connection, reminder_id: int) -> Delivery | None:
    found = conn.execute(select(reminders).where(reminders.c.id == reminder_id)).mappings().first()
    if found is None:
        return None
    return Delivery(
        reminder_from_row(found),
        found["provider_id"],
        found["delivery_status"],
        found["maybe_accepted_at"],
        found["lease_until"],
    )


def record_status(
    conn: Connection, reminder_id: int, status: str, error: str | None, now: datetime
) -> None:
    """The provider's latest word on the message: a status, and its error code if any."""
    conn.execute(
        update(reminders)
        .where(reminders.c.id == reminder_id)
        .values(delivery_status=status, delivery_error=error, delivery_updated_at=now)
    )


def adopt(
    conn: Connection, reminder_id: int, provider_id: str, sent_at: datetime | None, now: datetime
) -> bool:
    """Mark sent, as `provider_id`, a reminder whose send's answer was lost, if it is still
    waiting (to retry, or for its lease to run out) and has no provider id; whether it was."""
    waiting = or_(
        reminders.c.status == ReminderStatus.PENDING,
        and_(reminders.c.status == ReminderStatus.SENDING, reminders.c.lease_until < now),
    )
    adopted = conn.execute(
        update(reminders)
        .where(reminders.c.id == reminder_id)
        .where(waiting)
        .where(reminders.c.provider_id.is_(None))
        .values(
            status=ReminderStatus.SENT,
            reason="sent: Twilio accepted the attempt whose answer was lost",
            provider_id=provider_id,
            sent_at=sent_at,
            updated_at=now,
            lease_until=None,
            claim_token=None,
            attempt_started_at=None,
            attempt_to=None,
            attempt_sha256=None,
        )
    ).rowcount
    return bool(adopted)


def number_texted(conn: Connection, reminder: Reminder) -> str | None:
    """The number the reminder went to: the patient's, or their caregiver's for a copy."""
    copy = reminder.recipient is Recipient.CAREGIVER
    column = patients.c.caregiver_mobile if copy else patients.c.mobile
    phone: str | None = conn.execute(
        select(column)
        .join(appointments, appointments.c.patient_id == patients.c.id)
        .where(appointments.c.id == reminder.appointment_id)
    ).scalar()
    return phone
