"""An appointment's plan as an import stores it: the reminders due within the planning horizon,
the audit detail of the planning decisions, and the alerts the staff must get.

Only reminders due within the horizon are stored (`services.materializing` adds the rest as
their time comes), so a large import writes a fraction of the rows, and a reschedule weeks ahead
cancels few.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from ..catalog import Catalog
from ..domain.appointment import Appointment
from ..domain.planning import PlannedReminder, PlanWindow, Recipient, ReminderStatus, plan_window
from ..domain.reachability import UnreachableStep, too_late_steps
from ..store import records
from ..store.appointments import EncodedReminder

DEFAULT_HORIZON = timedelta(hours=48)
_SKIPPED = ReminderStatus.SKIPPED
_PATIENT = Recipient.PATIENT


class Preplan(NamedTuple):
    """An appointment's row values, and its reminders planned as a new booking, prepared by
    `preplan()` in a worker process. A NamedTuple: a large import sends one per row between
    processes, and it pickles fastest."""

    values: dict[str, Any]  # records.appointment_values()
    # Those due within the planning horizon, as column values (`reminder_encoder`): a worker's
    # plans cross back to the importing process as plain tuples, many times faster to unpickle.
    reminders: list[EncodedReminder]
    detail: str  # the appointment's audit detail (JSON)
    alerts: tuple[UnreachableStep, ...]  # steps planned too late: the staff are told
    resume_at: datetime | None  # see PlanWindow


Encode = Callable[[Sequence[PlannedReminder]], list[EncodedReminder]]


def preplan(
    appointment: Appointment, catalog: Catalog, now: datetime, until: datetime, encode: Encode
) -> Preplan:
    """Plan `appointment` as a new booking made at `now`, up to `until`. Pure, so worker
    processes run it while the database work of earlier chunks goes on."""
    values = records.appointment_values(appointment)
    clinic = catalog.clinics.get(appointment.clinic_id)
    protocol = catalog.protocol_for(appointment.procedure)
    if clinic is None or protocol is None:
        return planned_as_new(values, PlanWindow([], None), encode)
    window = plan_window(appointment, protocol, clinic.send_window, now, now, until=until)
    return planned_as_new(values, window, encode)


def planned_as_new(values: dict[str, Any], window: PlanWindow, encode: Encode) -> Preplan:
    """A new appointment's plan (version 1) from its window."""
    detail = plan_detail(1, window.reminders, window.resume_at)
    return Preplan(values, encode(window.reminders), detail,
                   too_late_steps(window.reminders), window.resume_at)  # fmt: skip


def plan_detail(
    version: int, planned: Sequence[PlannedReminder], resume_at: datetime | None
) -> str:
    """The planning decisions an appointment's audit entry carries: how many reminders were
    planned and each skipped one with its reason (the reminder rows hold the times; every later
    change to a reminder gets an audit entry of its own), and when the rest of the plan is due
    to be added."""
    skipped = {_plan_key(p): p.reason for p in planned if p.status is _SKIPPED}
    detail: dict[str, Any] = {"version": version, "planned": len(planned) - len(skipped)}
    if skipped:
        detail["skipped"] = skipped
    if resume_at is not None:
        detail["more_from"] = resume_at.isoformat()
    return json.dumps(detail)


def _plan_key(planned: PlannedReminder) -> str:
    """step/channel, and "/caregiver" for a caregiver's copy."""
    key = f"{planned.step_id}/{planned.channel.value}"
    return key if planned.recipient is _PATIENT else f"{key}/{planned.recipient.value}"
