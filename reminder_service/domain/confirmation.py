"""When an appointment must be confirmed by, and which ones staff must phone. Pure.

A protocol's `confirmation` rule names a moment (as a step's `send_at`) and a condition (as a
step's `when`). An appointment meeting the condition and not confirmed by that moment is listed
to its clinic's staff once, while it is still to come; one booked after its deadline is listed at
the next check.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .appointment import Appointment, AppointmentStatus
from .protocol import ConfirmationRule
from .timing import Anchor, AnchorTimes, resolve, zone


@dataclass(frozen=True)
class Confirmation:
    """An appointment's confirmation state, as preview and the API show it."""

    required_by: datetime | None  # None: its protocol asks for none (or its condition fails)
    confirmed_at: datetime | None
    confirmed_by: str | None  # "patient (SMS)", or the staff member
    staff_alerted_at: datetime | None  # when it was listed to staff to phone

    def as_json(self) -> dict[str, str | None]:
        def iso(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment else None

        return {
            "required_by": iso(self.required_by),
            "confirmed_at": iso(self.confirmed_at),
            "confirmed_by": self.confirmed_by,
            "staff_alerted_at": iso(self.staff_alerted_at),
        }


def confirmation_deadline(
    rule: ConfirmationRule, appointment: Appointment, scheduled_at: datetime
) -> datetime | None:
    """The moment this appointment must be confirmed by, or None when the rule does not apply
    (its condition fails, or the appointment is cancelled)."""
    if appointment.status is not AppointmentStatus.BOOKED or not rule.condition.holds(appointment):
        return None
    anchors = AnchorTimes(booking=scheduled_at, start=appointment.start, end=appointment.end)
    return resolve(rule.required_by, anchors, zone(appointment.patient.timezone))


def needs_a_call(
    rule: ConfirmationRule,
    appointment: Appointment,
    scheduled_at: datetime,
    confirmed_at: datetime | None,
    now: datetime,
) -> datetime | None:
    """The passed deadline, when staff must phone: booked, unconfirmed, deadline passed and the
    appointment still to come, for a patient who may be contacted (not deceased, not
    do-not-contact). Else None."""
    if confirmed_at is not None or appointment.start <= now or appointment.patient.suppressed:
        return None
    deadline = confirmation_deadline(rule, appointment, scheduled_at)
    return deadline if deadline is not None and deadline <= now else None


def latest_anchor_due(rule: ConfirmationRule, now: datetime) -> tuple[Anchor, datetime]:
    """A bound for finding candidates without resolving every appointment's deadline: the
    deadline can have passed only when the rule's anchor is at or before the returned time
    (the moment is at least `earliest_shift` after its anchor). The end anchor is never before
    the start, so a bound on the end holds for the start too."""
    return rule.required_by.anchor, now - rule.required_by.earliest_shift
