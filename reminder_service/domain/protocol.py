"""A reminder protocol: which messages an appointment's patient gets, and when."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum

from .appointment import Appointment, Tristate
from .timing import RelativeTime


class Channel(StrEnum):
    SMS = "sms"
    EMAIL = "email"


class Priority(StrEnum):
    """How much a step matters to the patient's safety.

    A critical step (the blood-thinner plan, fasting and the escort for sedation, the day
    before, the warning signs after) always reaches the patient by some channel, or the
    clinic's staff are told at once; it never gives way to the SMS caps. A standard step
    (booking confirmation, check-in, results chase) gives way when the caps are full.
    """

    CRITICAL = "critical"
    STANDARD = "standard"


class LatePolicy(StrEnum):
    """What to do with a step whose moment has already passed when the appointment arrives."""

    CATCH_UP = "catch_up"  # send now (still subject to the send window and the deadline)
    SKIP = "skip"
    ALERT_STAFF = "alert_staff"  # do not send; tell the clinic's staff


@dataclass(frozen=True, slots=True)
class Condition:
    """All requirements must hold: each names a flag and the values that satisfy it."""

    requirements: tuple[tuple[str, frozenset[Tristate]], ...] = ()

    def holds(self, appointment: Appointment) -> bool:
        return all(appointment.flag(name) in allowed for name, allowed in self.requirements)

    def describe(self) -> str:
        if not self.requirements:
            return "always"
        return " and ".join(
            f"{name} is {' or '.join(sorted(v.value for v in allowed))}"
            for name, allowed in self.requirements
        )


ALWAYS = Condition()


@dataclass(frozen=True, slots=True)
class ChannelRule:
    channel: Channel
    condition: Condition = ALWAYS


@dataclass(frozen=True, slots=True)
class Step:
    id: str
    send_at: RelativeTime
    channels: tuple[ChannelRule, ...]
    template: str
    condition: Condition = ALWAYS
    enabled: bool = True
    late: LatePolicy = LatePolicy.CATCH_UP
    # The latest moment the message is still right to send (pre-procedure advice: the start).
    not_after: RelativeTime | None = None
    # Plan the step only when the appointment is at least this far from its booking.
    min_notice: timedelta | None = None
    description: str = ""
    # When its SMS cannot be delivered, send the step by email instead (if the patient has one).
    email_fallback: bool = True
    # Attach the appointment as a calendar entry (.ics) to the step's email.
    calendar: bool = False
    priority: Priority = Priority.STANDARD
    # Among standard texts under the SMS caps, the lowest sms_priority gives way first.
    sms_priority: int = 1
    # An SMS that gives way to the caps goes by "email" first, or its merge line joins the next
    # text first ("merge"), whichever this patient can get; one that the send window pushes
    # past its deadline is "skip"ped, or "merge"d.
    over_cap: str = "email"
    too_late: str = "skip"

    @property
    def critical(self) -> bool:
        return self.priority is Priority.CRITICAL


@dataclass(frozen=True, slots=True)
class ConfirmationRule:
    """The patient must confirm (reply 1, or staff mark it) by `required_by`, for appointments
    meeting `condition`; those still unconfirmed then are listed to the clinic's staff to phone."""

    required_by: RelativeTime
    condition: Condition = ALWAYS

    def describe(self) -> str:
        when = "" if self.condition is ALWAYS else f" when {self.condition.describe()}"
        return f"confirmation required by {self.required_by.describe()}{when}"


@dataclass(frozen=True, slots=True)
class Protocol:
    id: str
    name: str
    procedure_codes: frozenset[str]
    steps: tuple[Step, ...] = field(default_factory=tuple)
    confirmation: ConfirmationRule | None = None

    def step_or_none(self, step_id: str) -> Step | None:
        for step in self.steps:
            if step.id == step_id:
                return step
        return None

    def step(self, step_id: str) -> Step:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)
