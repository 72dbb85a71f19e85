"""Importing: apply parsed appointments to the store and (re)plan their reminders.

One transaction per import: a crash or a bad file leaves nothing half-written. Appointments are
matched by external id; an unchanged one is left alone, so re-importing a file changes nothing.

Only reminders due within the planning horizon are stored (`services.materializing` adds the rest
as their time comes), so a large import writes a fraction of the rows, and a reschedule weeks
ahead cancels few.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    insert,
    or_,
    select,
    text,
    update,
)

from ..catalog import Catalog
from ..clock import Clock
from ..domain.appointment import (
    Appointment,
    AppointmentStatus,
    Cancellation,
    Caregiver,
    Change,
    Patient,
)
from ..domain.planning import (
    STAFF_ALERT_REASON,
    PlannedReminder,
    PlanWindow,
    Recipient,
    ReminderStatus,
    plan_window,
)
from ..domain.protocol import Channel
from ..domain.reachability import CRITICAL_UNREACHABLE, unreachable_critical_steps
from ..domain.reconcile import OPEN, reconcile
from ..domain.start_range import start_problem
from ..domain.timing import zone
from ..importers.base import RowError
from ..store import bulk, records
from ..store.engine import reading
from ..store.field_limits import can_be_stored, change_fields, patient_fields, unstorable
from ..store.records import RowData
from ..store.tables import (
    STAFF_CHANNEL,
    appointments,
    audit_log,
    imports,
    patients,
    reminders,
    sms_opt_outs,
)
from .critical_reach import staff_told
from .follow_ups import staff_alert_row

CHUNK = 1000
# A patient who got the appointment as a calendar entry (.ics) gets its cancellation too: an
# email with METHOD:CANCEL, step and template of this name.
CALENDAR_CANCEL = "cancelled"
SKIPPED = ReminderStatus.SKIPPED.value
DEFAULT_HORIZON = timedelta(hours=48)

# A reminder row's planned part: step, channel, template, nominal, due, not_after, status, reason.
PlanRow = tuple[Any, ...]


class Preplan(NamedTuple):
    """An appointment's row values, and its reminders planned as a new booking, prepared by
    `preplan()` in a worker process."""

    values: dict[str, Any]  # records.appointment_values()
    rows: list[PlanRow]  # those due within the planning horizon
    detail: str  # the appointment's audit detail
    alerts: tuple[str, ...]  # staff alerts
    resume_at: datetime | None  # see PlanWindow


# (file line, change) or (file line, appointment, its Preplan).
ImportItem = tuple[int, Change] | tuple[int, Appointment, Preplan]
# A cancellation whose appointment is not stored here: audited, never counted as cancelled.
CANCEL_NOT_FOUND = "cancel_not_found"
# A booking that started before the import that brought it: audited, and a warning.
PAST_START = "in_the_past"
UNKNOWN_CANCEL_REASON = "import: a cancellation for an appointment not known here"


@dataclass
class ImportSummary:
    imported: int = 0
    rescheduled: int = 0
    updated: int = 0
    cancelled: int = 0
    cancel_not_found: int = 0  # a cancellation for an appointment never seen here
    unchanged: int = 0
    out_of_order: int = 0  # older than the change already applied (by the sender's clock)
    not_served: int = 0  # no protocol serves the procedure: stored, no reminders
    rejected: int = 0
    reminders_planned: int = 0
    reminders_cancelled: int = 0
    # Booked appointments imported or changed that started before the import: each is also
    # counted above, and named in `warnings`.
    in_the_past: int = 0
    errors: list[RowError] = field(default_factory=list)
    # Imported, but worth a look: a booking already in the past, a caregiver's number dropped.
    warnings: list[RowError] = field(default_factory=list)
    import_id: int | None = None

    def counts(self) -> dict[str, int]:
        return {k: v for k, v in asdict(self).items() if isinstance(v, int) and k != "import_id"}


@dataclass
class _Chunk:
    """What one chunk writes, gathered first so each table gets a single bulk statement."""

    new: list[tuple[Appointment, dict[str, Any], str]] = field(default_factory=list)
    changed: list[tuple[Appointment, dict[str, Any], str]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)
    staff: list[dict[str, Any]] = field(default_factory=list)  # alert emails to the clinic
    # Per appointment id (external), its critical steps that reach no one: "step/any: why".
    unreachable: dict[str, tuple[str, ...]] = field(default_factory=dict)


class ImportService:
    def __init__(
        self, engine: Engine, catalog: Catalog, clock: Clock, horizon: timedelta = DEFAULT_HORIZON
    ) -> None:
        self._engine = engine
        self._catalog = catalog
        self._clock = clock
        self._horizon = horizon

    @property
    def catalog(self) -> Catalog:
        return self._catalog

    @property
    def dialect_name(self) -> str:
        return self._engine.dialect.name

    def now(self) -> datetime:
        return self._clock()

    def cancel(self, external_id: str, *, source: str) -> ImportSummary | None:
        """Cancel a stored appointment (every open reminder stops); None if there is none."""
        if not can_be_stored("appointment_id", external_id):
            return None  # no stored appointment can have it (a NUL would make PostgreSQL fail)
        query = records.select_with_patients().where(appointments.c.external_id == external_id)
        with reading(self._engine) as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            return None
        current = records.appointment_from_row(row, records.patient_of(row))
        cancelled = replace(current, status=AppointmentStatus.CANCELLED)
        return self.apply([(0, cancelled)], source=source, label=f"cancel {external_id}")

    def stored(self, external_ids: Iterable[str]) -> dict[str, Appointment]:
        """The stored appointments with these ids, by id (as an import would give them back)."""
        wanted = [i for i in external_ids if can_be_stored("appointment_id", i)]
        query = records.select_with_patients().where(appointments.c.external_id.in_(wanted))
        with reading(self._engine) as conn:
            found = conn.execute(query).mappings().all()
        return {
            row["external_id"]: records.appointment_from_row(row, records.patient_of(row))
            for row in found
        }

    def known_patient(self, fhir_id: str) -> Patient | None:
        """A patient already stored under this FHIR logical id (or, failing that, this external
        id): an Appointment may refer to a Patient sent earlier."""
        if not can_be_stored("fhir_id", fhir_id):
            return None  # no stored patient can have it (a NUL would make PostgreSQL fail)
        with reading(self._engine) as conn:
            for column in (patients.c.fhir_id, patients.c.external_id):
                row = conn.execute(select(patients).where(column == fhir_id)).mappings().first()
                if row is not None:
                    return records.patient_from_row(row)
        return None

    def save_patients(self, found: list[tuple[str, Patient]]) -> int:
        """Store patients sent without an appointment (a FHIR Patient), each with its FHIR id:
        contact details are updated, the id remembered. Returns how many were new. A patient
        with a value too long for its column is not stored (the importer reports it; see
        `_storable`)."""
        now = self._clock()
        fresh = 0
        with self._engine.begin() as conn:
            _one_import_at_a_time(conn)
            for fhir_id, patient in found:
                if unstorable({**patient_fields(patient), "fhir_id": fhir_id}):
                    continue
                values = {**records.patient_values(patient), "fhir_id": fhir_id, "updated_at": now}
                kept = values
                if not records.caregiver_said(patient):  # the stored caregiver stays
                    kept = {k: v for k, v in values.items() if k not in records.CAREGIVER_COLUMNS}
                done = conn.execute(
                    update(patients)
                    .where(patients.c.external_id == patient.external_id)
                    .values(**kept)
                )
                if not done.rowcount:
                    conn.execute(insert(patients).values(**values))
                    fresh += 1
        return fresh

    def plan_until(self, now: datetime) -> datetime:
        """The end of the planning horizon for an import made at `now`."""
        return now + self._horizon

    def apply(
        self,
        items: Iterable[ImportItem],
        *,
        source: str,
        label: str,
        parse_errors: Sequence[RowError] = (),
        progress: Callable[[int], None] | None = None,
        now: datetime | None = None,
        source_times: Mapping[int, datetime] | None = None,
        parse_warnings: Sequence[RowError] = (),
    ) -> ImportSummary:
        """Apply appointments in order. An item may carry `preplan(...)`'s rows made with the same
        `now` and `plan_until(now)`; they are used if the appointment turns out to be new, and
        ignored otherwise.

        `parse_errors` is read after the last item: a streaming parser may still be adding to it
        while `items` are consumed. `source_times` (by item line) are when the sender made each
        change: one older than the change already applied to its appointment is ignored.
        `parse_warnings`, read like `parse_errors`, are reported and reject nothing."""
        now = now or self._clock()
        summary = ImportSummary()
        with self._engine.begin() as conn:
            _one_import_at_a_time(conn)
            summary.import_id = conn.execute(
                insert(imports)
                .values(source=source, label=label, started_at=now, summary="{}")
                .returning(imports.c.id)
            ).scalar_one()
            for chunk in _chunks(_storable(items, summary)):
                resolved = _resolve_cancellations(conn, chunk, now, summary, source_times or {})
                self._apply_chunk(conn, resolved, now, summary, source_times or {})
                if progress:
                    progress(len(chunk))
            summary.errors.extend(parse_errors)
            summary.rejected += len({e.line for e in parse_errors})
            summary.warnings.extend(sorted(parse_warnings, key=lambda e: e.line))
            conn.execute(
                update(imports)
                .where(imports.c.id == summary.import_id)
                .values(summary=json.dumps(summary.counts()))
            )
        summary.errors.sort(key=lambda e: e.line)
        summary.warnings.sort(key=lambda e: e.line)
        return summary

    def replan(self) -> ImportSummary:
        """Re-plan every booked appointment that may still have messages to come against the
        current protocols and clinic settings (after staff change them). Reminders whose moment
        moved are cancelled and planned anew; sent ones stay history; unchanged ones are kept."""
        now = self._clock()
        summary = ImportSummary()
        with self._engine.begin() as conn:
            _one_import_at_a_time(conn)
            summary.import_id = conn.execute(
                insert(imports)
                .values(source="replan", label="replan", started_at=now, summary="{}")
                .returning(imports.c.id)
            ).scalar_one()
            booked = (
                records.select_with_patients()
                .where(appointments.c.status == AppointmentStatus.BOOKED.value)
                .where(appointments.c.start_at >= now - REPLAN_LOOKBACK)
                .order_by(appointments.c.id)
            )
            batch: list[RowData] = []
            for row in conn.execute(booked).mappings().all():
                batch.append(row)
                if len(batch) == CHUNK:
                    self._replan_chunk(conn, batch, now, summary)
                    batch = []
            self._replan_chunk(conn, batch, now, summary)
            conn.execute(
                update(imports)
                .where(imports.c.id == summary.import_id)
                .values(summary=json.dumps(summary.counts()))
            )
        return summary

    def _replan_chunk(
        self, conn: Connection, batch: list[RowData], now: datetime, summary: ImportSummary
    ) -> None:
        if not batch:
            return
        work = _Chunk()
        plans: list[list[PlannedReminder]] = []
        until = self.plan_until(now)
        for row in batch:
            patient = records.patient_of(row)
            appointment = records.appointment_from_row(row, patient)
            protocol = self._catalog.protocol_for(appointment.procedure)
            values = {"pk": row["id"], "version": row["version"],
                      "protocol_id": protocol.id if protocol else None,
                      "scheduled_at": row["scheduled_at"]}  # fmt: skip
            plans.append(self._plan_into(appointment, values, now, until))
            work.changed.append((appointment, values, "replanned"))
        conn.execute(
            update(appointments).where(appointments.c.id == bindparam("pk")),
            [{k: v for k, v in values.items() if k != "version"} for _, values, _ in work.changed],
        )
        rows: list[tuple[Any, ...]] = []
        encode = bulk.utc_encoder(conn.dialect)
        summary.reminders_cancelled += self._reconcile_changed(
            conn, work, plans, now, rows, summary, encode
        )
        bulk.insert_tuples(conn, reminders, REMINDER_COLUMNS, rows)
        summary.reminders_planned += len(rows)
        # Only appointments whose plan changed count as updated and get an audit entry.
        cancelled_for = {a["appointment_id"] for a in work.audit if a["reminder_id"] is not None}
        touched = {r[0] for r in rows} | cancelled_for
        summary.updated += len(touched)
        summary.unchanged += len(batch) - len(touched)
        work.audit = [a for a in work.audit if a["appointment_id"] in touched]
        bulk.insert_audit(conn, work.audit)
        if work.staff:
            conn.execute(insert(reminders), work.staff)

    def _apply_chunk(
        self,
        conn: Connection,
        chunk: list[ImportItem],
        now: datetime,
        summary: ImportSummary,
        source_times: Mapping[int, datetime],
    ) -> None:
        accepted = []
        sent_at: dict[str, datetime] = {}
        preplanned: dict[str, Preplan] = {}
        for line, appointment, *pre in chunk:
            assert isinstance(appointment, Appointment)  # cancellations were resolved above
            if pre:
                preplanned[appointment.external_id] = pre[0]
            if line in source_times:
                sent_at[appointment.external_id] = source_times[line]
            if self._catalog.clinics.get(appointment.clinic_id) is None:
                summary.errors.append(
                    RowError(line, "clinic", f"unknown clinic {appointment.clinic_id!r}")
                )
                summary.rejected += 1
            else:
                accepted.append(appointment)
        if not accepted:
            return
        patient_ids, caregivers = _upsert_patients(conn, accepted, now)
        existing = _existing_appointments(conn, [a.external_id for a in accepted])
        work = _Chunk()
        accepted = _in_sender_order(
            conn, _with_caregivers(accepted, caregivers, preplanned), existing, sent_at, now,
            summary, work,
        )  # fmt: skip
        for appointment in accepted:
            prepared = preplanned.get(appointment.external_id)
            values = prepared.values if prepared else records.appointment_values(appointment)
            self._classify(
                appointment,
                values,
                existing.get(appointment.external_id),
                patient_ids,
                now,
                work,
                summary,
            )
        self._find_unreachable(conn, work, now)
        # Plan before writing the appointments: their rows record where each plan resumes.
        encode = bulk.utc_encoder(conn.dialect)
        until = self.plan_until(now)
        new_plans: list[Preplan] = []
        for appointment, values, _ in work.new:
            plan = preplanned.get(appointment.external_id)
            if plan is None:
                window = self._plan(appointment, values, now, until)
                plan = _preplan(values, window, encode)
            values["planned_at"], values["plan_resume_at"] = now, plan.resume_at
            values["source_time"] = sent_at.get(appointment.external_id)
            new_plans.append(plan)
        changed_plans = [self._plan_into(a, values, now, until) for a, values, _ in work.changed]
        new_ids = _insert_appointments(conn, [values for _, values, _ in work.new])
        if work.changed:
            conn.execute(
                update(appointments).where(appointments.c.id == bindparam("pk")),
                [values for _, values, _ in work.changed],
            )
            _unconfirm_moved(conn, work)
        rows = _new_rows(work, new_plans, new_ids, now, encode(now), summary.import_id)
        summary.reminders_cancelled += self._reconcile_changed(
            conn, work, changed_plans, now, rows, summary, encode
        )
        bulk.insert_tuples(conn, reminders, REMINDER_COLUMNS, rows)
        summary.reminders_planned += len(rows)
        _warn_of_past(work, new_ids, chunk, now, summary)
        bulk.insert_audit(conn, work.audit)
        if work.staff:
            conn.execute(insert(reminders), work.staff)

    def _classify(
        self,
        appointment: Appointment,
        values: dict[str, Any],
        row: dict[str, Any] | None,
        patient_ids: dict[str, int],
        now: datetime,
        work: _Chunk,
        summary: ImportSummary,
    ) -> None:
        protocol = self._catalog.protocol_for(appointment.procedure)
        values["patient_id"] = patient_ids[appointment.patient.external_id]
        values["protocol_id"] = protocol.id if protocol else None
        values["updated_at"] = now
        cancelled = appointment.status is AppointmentStatus.CANCELLED
        if row is None:
            # A cancellation that describes an appointment never seen here is stored (so an
            # older booking arriving after it is known to be stale) but is no cancellation.
            values.update(version=1, booked_at=now, scheduled_at=now)
            outcome = CANCEL_NOT_FOUND if cancelled else "imported" if protocol else "not_served"
            work.new.append((appointment, values, outcome))
        elif (
            row["fingerprint"] == values["fingerprint"]
            and row["protocol_id"] == values["protocol_id"]
        ):
            summary.unchanged += 1
            return
        else:
            moved = row["start_at"] != appointment.start
            reinstated = row["status"] == AppointmentStatus.CANCELLED.value and not cancelled
            values.update(
                pk=row["id"],
                version=row["version"] + 1,
                scheduled_at=now if moved or reinstated else row["scheduled_at"],
            )
            if cancelled:
                outcome = (
                    "cancelled" if row["status"] != AppointmentStatus.CANCELLED.value else "updated"
                )
            else:
                outcome = "rescheduled" if moved else "updated" if protocol else "not_served"
            work.changed.append((appointment, values, outcome))
        setattr(summary, outcome, getattr(summary, outcome) + 1)

    def _find_unreachable(self, conn: Connection, work: _Chunk, now: datetime) -> None:
        """Note each critical step no channel can deliver, for the staff to hear of at once."""
        candidates = [
            (appointment, values)
            for appointment, values, _ in (*work.new, *work.changed)
            if values["protocol_id"] is not None
            and appointment.status is AppointmentStatus.BOOKED
            and appointment.end > now  # a past appointment is history: nobody to warn
        ]
        mobiles = {a.patient.mobile for a, _ in candidates if a.patient.mobile}
        opted_out = _opted_out(conn, mobiles)
        for appointment, values in candidates:
            protocol = self._catalog.protocol(values["protocol_id"])
            blocked = unreachable_critical_steps(
                appointment,
                protocol,
                values["scheduled_at"],
                appointment.patient.mobile in opted_out,
            )
            if blocked:
                work.unreachable[appointment.external_id] = tuple(
                    f"{step}/any: {CRITICAL_UNREACHABLE} ({why})" for step, why in blocked
                )

    def _plan(
        self, appointment: Appointment, values: dict[str, Any], now: datetime, until: datetime
    ) -> PlanWindow:
        if values["protocol_id"] is None:
            return PlanWindow([], None)
        clinic = self._catalog.clinics.get(appointment.clinic_id)
        assert clinic is not None  # checked on entry
        protocol = self._catalog.protocol(values["protocol_id"])
        return plan_window(
            appointment, protocol, clinic.send_window, now, values["scheduled_at"], until=until
        )

    def _plan_into(
        self, appointment: Appointment, values: dict[str, Any], now: datetime, until: datetime
    ) -> list[PlannedReminder]:
        """Plan an existing appointment anew and record in `values` where its plan resumes."""
        window = self._plan(appointment, values, now, until)
        values["planned_at"], values["plan_resume_at"] = now, window.resume_at
        return window.reminders

    def _sent_a_calendar_entry(self, values: dict[str, Any], existing: list[Any]) -> bool:
        protocol = self._catalog.protocol_or_none(values["protocol_id"])
        if protocol is None:
            return False
        for reminder in existing:
            step = protocol.step_or_none(reminder.step_id)
            if (
                step is not None
                and step.calendar
                and reminder.channel is Channel.EMAIL
                and reminder.status is ReminderStatus.SENT
            ):
                return True
        return False

    def _reconcile_changed(
        self,
        conn: Connection,
        work: _Chunk,
        plans_of_changed: list[list[PlannedReminder]],
        now: datetime,
        rows: list[tuple[Any, ...]],
        summary: ImportSummary,
        encode: Callable[[datetime | None], Any],
    ) -> int:
        enc_now = encode(now)
        if not work.changed:
            return 0
        by_appointment = _existing_reminders(conn, [values["pk"] for _, values, _ in work.changed])
        told = staff_told(conn, [values["pk"] for _, values, _ in work.changed])
        cancels: list[dict[str, Any]] = []
        for (appointment, values, outcome), plans in zip(
            work.changed, plans_of_changed, strict=True
        ):
            appointment_id = values["pk"]
            existing = by_appointment.get(appointment_id, [])
            result = reconcile(existing, plans)
            if outcome == "cancelled" and self._sent_a_calendar_entry(values, existing):
                rows.append(
                    (appointment_id, values["version"], summary.import_id, CALENDAR_CANCEL,
                     Channel.EMAIL.value, CALENDAR_CANCEL, enc_now, enc_now,
                     encode(appointment.start), ReminderStatus.PENDING.value,
                     "appointment cancelled: the calendar entry sent is withdrawn", _PATIENT, 0,
                     enc_now, enc_now)
                )  # fmt: skip
            reason = _CANCEL_REASONS.get(outcome, "appointment details changed")
            cancels.extend({"rid": rid, "reason": reason, "now": now} for rid in result.cancel)
            created = plan_rows(result.create, encode)
            version = values["version"]
            rows.extend(
                (appointment_id, version, summary.import_id, *r, 0, enc_now, enc_now)
                for r in created
            )
            detail = plan_detail(version, created, values["plan_resume_at"])
            work.audit.append(_event(now, appointment_id, outcome, detail))
            alerts = _alert_reasons(created) + tuple(
                alert
                for alert in work.unreachable.get(appointment.external_id, ())
                if (appointment_id, _staff_alert_text(alert)) not in told
            )
            work.audit.extend(_staff_alerts(now, appointment_id, alerts))
            work.staff.extend(
                _staff_alert_rows(now, appointment_id, version, summary.import_id, alerts)
            )
            work.audit.extend(
                {
                    "at": now,
                    "appointment_id": appointment_id,
                    "reminder_id": rid,
                    "event": "cancelled",
                    "reason": reason,
                    "detail": None,
                }
                for rid in result.cancel
            )
        if cancels:
            conn.execute(
                update(reminders)
                .where(reminders.c.id == bindparam("rid"))
                # Plain comparisons: an expanding IN cannot be used in an executemany.
                .where(or_(*(reminders.c.status == s.value for s in sorted(OPEN))))
                .values(
                    status=ReminderStatus.CANCELLED.value,
                    reason=bindparam("reason"),
                    updated_at=bindparam("now"),
                ),
                cancels,
            )
        return len(cancels)


_CANCEL_REASONS = {
    "cancelled": "appointment cancelled",
    "rescheduled": "appointment rescheduled",
    "not_served": "no protocol serves this procedure any more",
    "replanned": "protocol or clinic settings changed",
}
# Re-planning looks back this far: the latest post-procedure step of a protocol is within it.
REPLAN_LOOKBACK = timedelta(days=60)


# Any constant key: the advisory lock below is ours alone.
IMPORT_LOCK_KEY = 7_302_115_001


def _in_sender_order(
    conn: Connection,
    accepted: list[Appointment],
    existing: dict[str, dict[str, Any]],
    sent_at: dict[str, datetime],
    now: datetime,
    summary: ImportSummary,
    work: _Chunk,
) -> list[Appointment]:
    """Drop the changes older (by their sender's clock) than the one already applied to their
    appointment, and record each appointment's newest sender time, even when nothing changed:
    an older message arriving after it must be ignored too."""
    kept = []
    fresh = {a.external_id for a in accepted if a.external_id not in existing} & set(sent_at)
    cancelled_before = _unknown_cancellations(conn, fresh) if fresh else {}
    for appointment in accepted:
        row = existing.get(appointment.external_id)
        when = sent_at.get(appointment.external_id)
        applied = row["source_time"] if row is not None else None
        cancelled_at = cancelled_before.get(appointment.external_id)
        if when is not None and cancelled_at is not None and when < cancelled_at:
            # Cancelled (by id alone) by a newer message that came first: the older booking
            # arriving now must not bring the appointment's reminders back.
            summary.out_of_order += 1
            detail = {"external_id": appointment.external_id, "sent": when.isoformat(),
                      "cancelled": cancelled_at.isoformat()}  # fmt: skip
            work.audit.append(_event(now, None, "out_of_order", json.dumps(detail)))
            continue
        if when is not None and applied is not None and when < applied:
            assert row is not None
            summary.out_of_order += 1
            detail = {"sent": when.isoformat(), "applied": applied.isoformat()}
            work.audit.append(_event(now, row["id"], "out_of_order", json.dumps(detail)))
        else:
            kept.append(appointment)
    newer = [
        {"pk": row["id"], "source_time": sent_at[ext]}
        for ext, row in existing.items()
        if ext in sent_at and (row["source_time"] is None or sent_at[ext] > row["source_time"])
    ]
    if newer:
        conn.execute(update(appointments).where(appointments.c.id == bindparam("pk")), newer)
    return kept


def _cancels(change: Change) -> bool:
    return isinstance(change, Cancellation) or change.status is AppointmentStatus.CANCELLED


def _unknown_cancellations(conn: Connection, external_ids: set[str]) -> dict[str, datetime]:
    """When (by its sender's clock) each of these ids was cancelled while unknown here. Such
    entries are the only audit rows with no appointment, so the lookup stays small."""
    rows = conn.execute(
        select(audit_log.c.detail)
        .where(audit_log.c.appointment_id.is_(None))
        .where(audit_log.c.event == CANCEL_NOT_FOUND)
    ).scalars()
    found: dict[str, datetime] = {}
    for text_detail in rows:
        detail = json.loads(text_detail or "{}")
        ext, sent = detail.get("external_id"), detail.get("sent")
        if ext in external_ids and sent:
            moment = datetime.fromisoformat(sent)
            found[ext] = max(found.get(ext, moment), moment)
    return found


def _storable(items: Iterable[ImportItem], summary: ImportSummary) -> Iterator[ImportItem]:
    """The last guard before the database: every importer checks these, but a value longer than
    its column would make PostgreSQL refuse the whole import's transaction (and SQLite store it
    silently), and a start near the ends of the datetime range would overflow in planning. Such
    an item is rejected like a bad row, naming the field."""
    for item in items:
        line, change = item[0], item[1]
        problems = unstorable(change_fields(change))
        if isinstance(change, Appointment) and start_problem(change.start):
            problems.append(("start", start_problem(change.start)))
        if not problems:
            yield item
            continue
        summary.errors.extend(RowError(line, name, reason) for name, reason in problems)
        summary.rejected += 1


def _resolve_cancellations(
    conn: Connection,
    chunk: list[ImportItem],
    now: datetime,
    summary: ImportSummary,
    source_times: Mapping[int, datetime],
) -> list[ImportItem]:
    """A cancellation of a stored appointment becomes that appointment, cancelled, so it goes
    through the same path as any change (sender order, reconcile, calendar withdrawal). Whatever
    else it says is dropped: a cancellation never changes whose appointment it is, nor its
    details (a source may name the patient by another identifier). One by id alone for an id
    never seen here is audited (with no appointment to hang it on) and counted apart."""
    wanted = [item[1].external_id for item in chunk if _cancels(item[1])]
    if not wanted:
        return chunk
    query = records.select_with_patients().where(appointments.c.external_id.in_(wanted))
    stored = {row["external_id"]: row for row in conn.execute(query).mappings()}
    resolved: list[ImportItem] = []
    unknown: list[dict[str, Any]] = []
    for item in chunk:
        line, change = item[0], item[1]
        row = stored.get(change.external_id)
        if isinstance(change, Appointment) and not (row is not None and _cancels(change)):
            resolved.append(item)  # a booking, or a described cancel of an id not stored here
            continue
        if row is None:
            assert isinstance(change, Cancellation)
            summary.cancel_not_found += 1
            detail: dict[str, Any] = {
                "external_id": change.external_id,
                "no_show": change.no_show,
                "import_id": summary.import_id,
            }
            if line in source_times:  # so an older booking arriving after it is known stale
                detail["sent"] = source_times[line].isoformat()
            event = _event(now, None, CANCEL_NOT_FOUND, json.dumps(detail))
            unknown.append({**event, "reason": UNKNOWN_CANCEL_REASON})
            continue
        current = records.appointment_from_row(row, records.patient_of(row))
        resolved.append((line, replace(current, status=AppointmentStatus.CANCELLED)))
    bulk.insert_audit(conn, unknown)
    return resolved


def _one_import_at_a_time(conn: Connection) -> None:
    """Imports upsert patients and appointments by external id, so two at once (an MLLP
    connection and an API call, say) could both insert the same new patient. SQLite's write
    transaction already serialises them; on PostgreSQL a transaction-scoped advisory lock does."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": IMPORT_LOCK_KEY})


def _chunks(items: Iterable[ImportItem]) -> Iterator[list[ImportItem]]:
    """Chunks in file order; a repeated appointment id starts a new chunk so the later row wins."""
    chunk: list[ImportItem] = []
    seen: set[str] = set()
    for item in items:
        if len(chunk) >= CHUNK or item[1].external_id in seen:
            yield chunk
            chunk, seen = [], set()
        chunk.append(item)
        seen.add(item[1].external_id)
    if chunk:
        yield chunk


def _upsert_patients(
    conn: Connection, batch: list[Appointment], now: datetime
) -> tuple[dict[str, int], dict[str, Caregiver | None]]:
    """Insert or update the batch's patients; returns their ids, and each one's caregiver as it
    now stands (what the batch said last, else what was stored: a source that says nothing
    about a caregiver leaves the stored one alone)."""
    latest = {a.patient.external_id: records.patient_values(a.patient) for a in batch}
    # A cancellation says nothing reliable about contact details: it never overwrites them.
    booked = {a.patient.external_id for a in batch if a.status is AppointmentStatus.BOOKED}
    said: dict[str, Caregiver | None] = {}
    for a in batch:
        if a.status is AppointmentStatus.BOOKED and records.caregiver_said(a.patient):
            said[a.patient.external_id] = a.patient.known_caregiver
    found = conn.execute(
        select(patients).where(patients.c.external_id.in_(list(latest)))
    ).mappings()
    ids: dict[str, int] = {}
    caregivers: dict[str, Caregiver | None] = {}
    changed = []
    for row in found:
        ext = row["external_id"]
        ids[ext] = row["id"]
        recorded = records.caregiver_from_row(row)
        caregivers[ext] = _resolved(said[ext], recorded) if ext in said else recorded
        wanted = latest[ext]
        if ext in said:
            wanted.update(records.caregiver_values(caregivers[ext]))
        else:
            for column in records.CAREGIVER_COLUMNS:
                del wanted[column]
        if ext in booked and any(row[k] != v for k, v in wanted.items()):
            changed.append({**wanted, "pk": row["id"], "updated_at": now})
    # One statement per set of columns: an executemany binds the columns of its first row only,
    # and rows whose source said nothing about a caregiver leave those columns out.
    shapes: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for values in changed:
        shapes[tuple(sorted(values))].append(values)
    for group in shapes.values():
        conn.execute(update(patients).where(patients.c.id == bindparam("pk")), group)
    fresh = []
    for ext, values in latest.items():
        if ext not in ids:
            caregivers[ext] = _resolved(said.get(ext), None)
            fresh.append({**values, **records.caregiver_values(caregivers[ext]), "updated_at": now})
    if fresh:
        bulk.insert_dicts(conn, patients, list(fresh[0]), fresh)
        ids.update(
            bulk.ids_by_key(conn, patients, "external_id", (r["external_id"] for r in fresh))
        )
    return ids, caregivers


def _resolved(caregiver: Caregiver | None, recorded: Caregiver | None) -> Caregiver | None:
    return caregiver.consents_from(recorded) if caregiver is not None else None


def _with_caregivers(
    batch: list[Appointment],
    caregivers: dict[str, Caregiver | None],
    preplanned: dict[str, Preplan],
) -> list[Appointment]:
    """The appointments with their patient's caregiver as it now stands (see `_upsert_patients`:
    kept when their source said nothing, consents a source could not give taken from the
    record), so their plan has the copies the caregiver will get."""
    resolved = []
    for appointment in batch:
        caregiver = caregivers.get(appointment.patient.external_id)
        if appointment.patient.known_caregiver == caregiver:
            resolved.append(appointment)  # planned as it will be stored (none may be unsaid)
            continue
        patient = replace(appointment.patient, caregiver=caregiver)
        resolved.append(replace(appointment, patient=patient))
        # Planned (in a worker) with the caregiver as its source gave it: plan it again.
        preplanned.pop(appointment.external_id, None)
    return resolved


def _existing_appointments(conn: Connection, external_ids: list[str]) -> dict[str, dict[str, Any]]:
    columns = [
        appointments.c[name]
        for name in (
            "id",
            "external_id",
            "fingerprint",
            "protocol_id",
            "start_at",
            "status",
            "version",
            "scheduled_at",
            "source_time",
        )
    ]
    result = conn.execute(select(*columns).where(appointments.c.external_id.in_(external_ids)))
    return {row["external_id"]: dict(row) for row in result.mappings()}


def _insert_appointments(conn: Connection, rows: list[dict[str, Any]]) -> dict[str, int]:
    if not rows:
        return {}
    columns = [c for c in rows[0] if c != "pk"]
    bulk.insert_dicts(conn, appointments, columns, rows)
    return bulk.ids_by_key(conn, appointments, "external_id", (r["external_id"] for r in rows))


def _existing_reminders(conn: Connection, appointment_ids: list[int]) -> dict[int, list[Any]]:
    result = conn.execute(
        select(
            reminders.c.id,
            reminders.c.appointment_id,
            reminders.c.step_id,
            reminders.c.channel,
            reminders.c.nominal_at,
            reminders.c.status,
            reminders.c.recipient,
            reminders.c.attempts,
        )
        .where(reminders.c.appointment_id.in_(appointment_ids))
        .where(reminders.c.status != ReminderStatus.CANCELLED.value)
        .where(reminders.c.channel != STAFF_CHANNEL)  # alerts to staff are no patient's plan
    )
    grouped: dict[int, list[Any]] = defaultdict(list)
    for row in result.mappings():
        grouped[row["appointment_id"]].append(records.existing_reminder(row))
    return grouped


REMINDER_COLUMNS = (
    "appointment_id", "appointment_version", "import_id", "step_id", "channel", "template",
    "nominal_at", "due_at", "not_after", "status", "reason", "recipient", "attempts", "created_at",
    "updated_at",
)  # fmt: skip


def plan_rows(
    plans: Iterable[PlannedReminder], encode: Callable[[datetime | None], Any]
) -> list[PlanRow]:
    """The part of each reminder row that planning decides (REMINDER_COLUMNS[3:12])."""
    return [
        (
            p.step_id,
            p.channel.value,
            p.template,
            encode(p.nominal_at),
            encode(p.due_at),
            encode(p.not_after),
            p.status.value,
            p.reason,
            p.recipient.value,
        )
        for p in plans
    ]


def preplan(
    appointment: Appointment, catalog: Catalog, now: datetime, until: datetime, dialect: str
) -> Preplan:
    """Plan `appointment` as a new booking made at `now`, up to `until`, ready to insert. Pure, so
    worker processes run it while the database work of earlier chunks goes on."""
    values = records.appointment_values(appointment)
    clinic = catalog.clinics.get(appointment.clinic_id)
    protocol = catalog.protocol_for(appointment.procedure)
    if clinic is None or protocol is None:
        return _preplan(values, PlanWindow([], None), bulk.utc_encoder(dialect))
    window = plan_window(appointment, protocol, clinic.send_window, now, now, until=until)
    return _preplan(values, window, bulk.utc_encoder(dialect))


def _preplan(
    values: dict[str, Any], window: PlanWindow, encode: Callable[[datetime | None], Any]
) -> Preplan:
    rows = plan_rows(window.reminders, encode)
    detail = plan_detail(1, rows, window.resume_at)
    return Preplan(values, rows, detail, _alert_reasons(rows), window.resume_at)


def plan_detail(version: int, planned: list[PlanRow], resume_at: datetime | None) -> str:
    """The planning decisions an appointment's audit entry carries: how many reminders were
    planned and each skipped one with its reason (the reminder rows hold the times; every later
    change to a reminder gets an audit entry of its own), and when the rest of the plan is due
    to be added."""
    skipped = {_plan_key(r): r[7] for r in planned if r[6] == SKIPPED}
    detail: dict[str, Any] = {"version": version, "planned": len(planned) - len(skipped)}
    if skipped:
        detail["skipped"] = skipped
    if resume_at is not None:
        detail["more_from"] = resume_at.isoformat()
    return json.dumps(detail)


def _plan_key(row: PlanRow) -> str:
    """step/channel, and "/caregiver" for a caregiver's copy."""
    key = f"{row[0]}/{row[1]}"
    return key if row[8] == _PATIENT else f"{key}/{row[8]}"


_PATIENT = Recipient.PATIENT.value


def _alert_reasons(planned: list[PlanRow]) -> tuple[str, ...]:
    # The caregiver's copies raise no alerts of their own: the patient's rows raise them.
    return tuple(
        f"{r[0]}/{r[1]}: {r[7]}" for r in planned if r[7] == STAFF_ALERT_REASON and r[8] == _PATIENT
    )


def _event(now: datetime, appointment_id: int | None, outcome: str, detail: str) -> dict[str, Any]:
    """An import's audit entry; with no appointment for one about an id not stored here."""
    return {
        "at": now,
        "appointment_id": appointment_id,
        "reminder_id": None,
        "event": outcome,
        "reason": f"import: {outcome}",
        "detail": detail,
    }


def _unconfirm_moved(conn: Connection, work: _Chunk) -> None:
    """A confirmation is of a time: a moved appointment must be confirmed again, and staff may
    be asked to phone about it again."""
    moved = [values["pk"] for _, values, outcome in work.changed if outcome == "rescheduled"]
    if moved:
        conn.execute(
            update(appointments)
            .where(appointments.c.id.in_(moved))
            .values(confirmed_at=None, confirmed_by=None, confirmation_alerted_at=None)
        )


def _new_rows(
    work: _Chunk,
    plans: list[Preplan],
    ids: Mapping[str, int],
    now: datetime,
    enc_now: Any,
    import_id: int | None,
) -> list[tuple[Any, ...]]:
    """The reminder rows of the new appointments, gathering their audit entries and alerts."""
    rows: list[tuple[Any, ...]] = []
    for (appointment, _, outcome), plan in zip(work.new, plans, strict=True):
        appointment_id = ids[appointment.external_id]
        rows.extend((appointment_id, 1, import_id, *r, 0, enc_now, enc_now) for r in plan.rows)
        work.audit.append(_event(now, appointment_id, outcome, plan.detail))
        alerts = plan.alerts + work.unreachable.get(appointment.external_id, ())
        work.audit.extend(_staff_alerts(now, appointment_id, alerts))
        work.staff.extend(_staff_alert_rows(now, appointment_id, 1, import_id, alerts))
    return rows


def _staff_alert_text(alert: str) -> str:
    """The alert a staff row carries for a plan's "step/channel: reason"."""
    step, reason = alert.split("/", 1)[0], alert.split(": ", 1)[-1]
    return f"{step}: {reason}"


def _opted_out(conn: Connection, numbers: set[str]) -> set[str]:
    if not numbers:
        return set()
    query = select(sms_opt_outs.c.phone).where(sms_opt_outs.c.phone.in_(numbers))
    return set(conn.execute(query).scalars())


def _warn_of_past(
    work: _Chunk,
    new_ids: Mapping[str, int],
    chunk: list[ImportItem],
    now: datetime,
    summary: ImportSummary,
) -> None:
    """A booking imported or changed after its start: a warning naming its line and id, and an
    audit entry. It is still stored (history, and a later cancellation still finds it); planning
    skips its steps whose time has passed, as for any late booking."""
    lines = {item[1].external_id: item[0] for item in chunk}
    for appointment, values, _ in [*work.new, *work.changed]:
        if appointment.status is not AppointmentStatus.BOOKED or appointment.start >= now:
            continue
        tz = appointment.patient.timezone
        start = appointment.start.astimezone(zone(tz)).strftime("%Y-%m-%d %H:%M")
        summary.in_the_past += 1
        summary.warnings.append(
            RowError(
                lines[appointment.external_id],
                "start",
                f"appointment {appointment.external_id} is in the past (started {start} {tz}): "
                "imported as history; only messages still in time are sent",
            )
        )
        appointment_id = values["pk"] if "pk" in values else new_ids[appointment.external_id]
        detail = json.dumps({"start": appointment.start.isoformat()})
        work.audit.append(_event(now, appointment_id, PAST_START, detail))


def _staff_alert_rows(
    now: datetime, appointment_id: int, version: int, import_id: int | None, alerts: tuple[str, ...]
) -> list[dict[str, Any]]:
    """One alert email to the clinic's staff per step (alerts name "step/channel: reason")."""
    steps = {alert.split("/", 1)[0]: _staff_alert_text(alert) for alert in alerts}
    return [
        staff_alert_row(appointment_id, version, step, text, now, import_id=import_id)
        for step, text in steps.items()
    ]


def _staff_alerts(
    now: datetime, appointment_id: int, alerts: tuple[str, ...]
) -> list[dict[str, Any]]:
    """A step skipped under the alert_staff policy needs a person: `status` lists these."""
    return [
        {
            "at": now,
            "appointment_id": appointment_id,
            "reminder_id": None,
            "event": "staff_alert",
            "reason": reason,
            "detail": None,
        }
        for reason in alerts
    ]
