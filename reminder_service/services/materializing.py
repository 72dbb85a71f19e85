"""Materializing: add the reminders that have come within the planning horizon to the table.

An import stores only what is due within the horizon and records on each appointment where its
plan resumes. This job plans those appointments again with the very same inputs (`planned_at` as
`now`), so the reminders it adds are exactly the ones a complete plan would have held, and
stores the part now within the horizon. It runs when the dispatcher starts and every few
minutes; as long as that is well inside the horizon, every reminder is in the table long before
it is due. Each chunk is one short transaction, so an import never waits long for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ..catalog import Catalog
from ..clock import Clock
from ..domain.appointment import AppointmentStatus
from ..domain.audit import AuditEvent, AuditRecord
from ..domain.planning import PlanWindow, plan_window
from ..store import records
from ..store.appointments import AppointmentStore, NewReminders
from ..store.records import RowData
from .import_plans import DEFAULT_HORIZON, plan_detail

if TYPE_CHECKING:
    from sqlalchemy import Engine

CHUNK = 500


@dataclass(frozen=True)
class MaterializeReport:
    appointments: int = 0
    reminders: int = 0


class CannotPlan(LookupError):
    """The appointment's clinic or protocol is no longer configured."""


def remaining_plan(row: RowData, patient: RowData, catalog: Catalog) -> PlanWindow:
    """The part of a stored appointment's plan not yet in the reminders table (for preview).

    Raises CannotPlan."""
    return _plan(row, patient, catalog, None)


def _plan(row: RowData, patient: RowData, catalog: Catalog, until: datetime | None) -> PlanWindow:
    since = row["plan_resume_at"]
    if since is None or row["status"] != AppointmentStatus.BOOKED.value:
        return PlanWindow([], None)
    clinic = catalog.clinics.get(row["clinic_id"])
    if clinic is None:
        raise CannotPlan(f"clinic {row['clinic_id']!r} is not configured")
    try:
        protocol = catalog.protocol(row["protocol_id"])
    except KeyError:
        raise CannotPlan(f"protocol {row['protocol_id']!r} is not configured") from None
    appointment = records.appointment_from_row(row, patient)
    return plan_window(
        appointment,
        protocol,
        clinic.send_window,
        row["planned_at"],
        row["scheduled_at"],
        since=since,
        until=until,
    )


class Materializer:
    def __init__(
        self, engine: Engine, catalog: Catalog, clock: Clock, horizon: timedelta = DEFAULT_HORIZON
    ) -> None:
        self._engine = engine
        self._catalog = catalog
        self._clock = clock
        self._horizon = horizon

    def materialize(self) -> MaterializeReport:
        """Store every reminder due within the horizon from now that is not stored yet."""
        until = self._clock() + self._horizon
        done = MaterializeReport()
        while True:
            with self._engine.begin() as conn:
                store = AppointmentStore(conn)
                batch = store.due_for_planning(until, CHUNK)
                added = self._materialize(store, batch, until)
            done = MaterializeReport(done.appointments + len(batch), done.reminders + added)
            if len(batch) < CHUNK:
                return done

    def _materialize(self, store: AppointmentStore, batch: list[RowData], until: datetime) -> int:
        if not batch:
            return 0
        now = self._clock()
        planned: list[NewReminders] = []
        resumes: list[tuple[int, datetime | None]] = []
        audit: list[AuditRecord] = []
        for row in batch:
            patient = records.patient_of(row)
            try:
                window = _plan(row, patient, self._catalog, until)
            except CannotPlan as exc:
                # Configuration changed under a running plan: stop it, loudly (`status` lists
                # staff alerts); `replan` after fixing the configuration plans it again.
                window = PlanWindow([], None)
                reason = f"plan stopped: {exc}"
                audit.append(AuditRecord(now, AuditEvent.STAFF_ALERT, reason, row["id"]))
            version = row["version"]
            planned.append(NewReminders(row["id"], version, window.reminders))
            resumes.append((row["id"], window.resume_at))
            if window.reminders:
                detail = plan_detail(version, window.reminders, window.resume_at)
                audit.append(
                    AuditRecord(now, AuditEvent.PLANNED, "planning horizon reached", row["id"],
                                detail=detail)
                )  # fmt: skip
        store.resume_plans(resumes)
        added = store.insert_reminders(planned, None, now)
        store.insert_audit(audit)
        return added
