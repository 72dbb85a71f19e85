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
from typing import Any

from sqlalchemy import Connection, Engine, bindparam, update

from ..catalog import Catalog
from ..clock import Clock
from ..domain.appointment import AppointmentStatus
from ..domain.planning import PlanWindow, plan_window
from ..store import bulk, records
from ..store.records import RowData
from ..store.tables import appointments, reminders
from .importing import DEFAULT_HORIZON, REMINDER_COLUMNS, plan_detail, plan_rows

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
                batch = self._due_appointments(conn, until)
                added = self._materialize(conn, batch, until)
            done = MaterializeReport(done.appointments + len(batch), done.reminders + added)
            if len(batch) < CHUNK:
                return done

    def _due_appointments(self, conn: Connection, until: datetime) -> list[RowData]:
        query = (
            records.select_with_patients()
            .where(appointments.c.plan_resume_at <= until)
            .order_by(appointments.c.plan_resume_at, appointments.c.id)
            .limit(CHUNK)
        )
        if conn.dialect.name == "postgresql":
            # Another dispatcher's materializer (or an import) holding a row: leave it to them.
            query = query.with_for_update(skip_locked=True, of=appointments)
        return list(conn.execute(query).mappings().all())

    def _materialize(self, conn: Connection, batch: list[RowData], until: datetime) -> int:
        if not batch:
            return 0
        now = self._clock()
        encode = bulk.utc_encoder(conn.dialect)
        enc_now = encode(now)
        rows: list[tuple[Any, ...]] = []
        resumes: list[dict[str, Any]] = []
        audit: list[dict[str, Any]] = []
        for row in batch:
            patient = records.patient_of(row)
            try:
                window = _plan(row, patient, self._catalog, until)
            except CannotPlan as exc:
                # Configuration changed under a running plan: stop it, loudly (`status` lists
                # staff alerts); `replan` after fixing the configuration plans it again.
                window = PlanWindow([], None)
                audit.append(_audit(now, row["id"], "staff_alert", f"plan stopped: {exc}", None))
            planned = plan_rows(window.reminders, encode)
            version = row["version"]
            rows.extend((row["id"], version, None, *r, 0, enc_now, enc_now) for r in planned)
            resumes.append({"pk": row["id"], "plan_resume_at": window.resume_at})
            if planned:
                detail = plan_detail(version, planned, window.resume_at)
                audit.append(_audit(now, row["id"], "planned", "planning horizon reached", detail))
        conn.execute(update(appointments).where(appointments.c.id == bindparam("pk")), resumes)
        bulk.insert_tuples(conn, reminders, REMINDER_COLUMNS, rows)
        bulk.insert_audit(conn, audit)
        return len(rows)


def _audit(
    now: datetime, appointment_id: int, event: str, reason: str, detail: str | None
) -> dict[str, Any]:
    return {
        "at": now,
        "appointment_id": appointment_id,
        "reminder_id": None,
        "event": event,
        "reason": reason,
        "detail": detail,
    }
