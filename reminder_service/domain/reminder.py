"""A stored reminder and the stored appointment it belongs to, as the send path sees them.

Typed records read from the store: nothing here reads or writes it. A staff alert is a reminder
for `Recipient.STAFF` sent by email; how the store spells that is the store's business.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .appointment import Appointment
from .planning import Recipient, ReminderStatus
from .protocol import Channel, Step
from .sms_caps import Text


@dataclass(frozen=True, slots=True)
class Reminder:
    """One row of the reminders table: a message of an appointment's plan, to one recipient."""

    id: int
    appointment_id: int
    appointment_version: int
    step_id: str
    channel: Channel
    recipient: Recipient
    template: str
    status: ReminderStatus
    reason: str
    nominal_at: datetime  # the protocol's moment: with the step, which text of the plan it is
    due_at: datetime
    not_after: datetime | None  # too late to send after this
    attempts: int  # claims so far, this one included
    claim_token: str | None = None  # set while claimed: only its holder records the result
    alert: str | None = None  # a staff alert's report
    # The SMS attempt written down before it went out, until its outcome is known.
    attempt_started_at: datetime | None = None
    attempt_to: str | None = None
    attempt_sha256: str | None = None
    merge_into_next: bool = False  # skipped: its line rides on the next text

    @property
    def text_key(self) -> Hashable:
        """Which text of the patient's plan it is, as the SMS caps key it."""
        return text_key(self.appointment_id, self.step_id, self.nominal_at)


@dataclass(frozen=True, slots=True)
class StoredAppointment:
    """An appointment as stored: the domain appointment and what the store knows besides."""

    id: int
    appointment: Appointment
    patient_id: int
    protocol_id: str | None
    version: int
    booked_at: datetime  # first seen
    scheduled_at: datetime  # when its current start was set

    @property
    def rescheduled(self) -> bool:
        """Moved since it was booked: its messages say so."""
        return self.scheduled_at != self.booked_at


@dataclass
class Outcome:
    """One reminder's outcome, to be recorded by the holder of its claim."""

    reminder: Reminder
    status: ReminderStatus
    reason: str
    changes: dict[str, Any] = field(default_factory=dict)  # columns to set besides the status
    detail: dict[str, Any] = field(default_factory=dict)  # for the audit entry
    opt_out: str | None = None  # a number that must get no more SMS
    undeliverable: bool = False  # this channel will not deliver it: try another, or tell staff
    in_doubt: bool = False  # the attempt may have reached the provider: keep it written down


def text_key(appointment_id: int, step_id: str, nominal_at: datetime) -> Hashable:
    """The key of one text of an appointment's plan, whether stored yet or not."""
    return (appointment_id, step_id, nominal_at)


def text_of(
    step: Step | None, appointment_id: int, step_id: str, nominal_at: datetime, at: datetime
) -> Text:
    """One text of an appointment's plan, due `at`, as the caps weigh it."""
    return Text(
        text_key(appointment_id, step_id, nominal_at),
        at,
        step.sms_priority if step else 1,
        critical=step is not None and step.critical,
        group=appointment_id,
    )
