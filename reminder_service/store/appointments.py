"""The import's repository: appointments, their patients and their planned reminders, in bulk.

One `AppointmentStore` per transaction (it wraps its connection). Every write of a chunk is a
single statement per table; reminder rows, the bulk of a large import, go to the driver as ready
tuples (`store.bulk`), their timestamps encoded here once for the dialect.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, or_, select, text, update

from ..domain.appointment import Appointment, AppointmentStatus, Caregiver, Patient
from ..domain.audit import AuditEvent, AuditRecord
from ..domain.planning import PlannedReminder, ReminderStatus
from ..domain.reconcile import OPEN, ExistingReminder
from . import bulk, records, staff_alerts
from .engine import import_cache
from .records import RowData
from .tables import (
    STAFF_CHANNEL,
    appointments,
    audit_log,
    imports,
    patients,
    reminders,
    sms_opt_outs,
)

# Any constant key: the advisory lock below is ours alone.
IMPORT_LOCK_KEY = 7_302_115_001

REMINDER_COLUMNS = (
    "appointment_id", "appointment_version", "import_id", "step_id", "channel", "template",
    "nominal_at", "due_at", "not_after", "status", "reason", "recipient", "attempts", "created_at",
    "updated_at",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class StoredAppointment:
    """What an import compares a change with: the appointment's row as stored."""

    id: int
    fingerprint: str
    protocol_id: str | None
    start_at: datetime
    status: AppointmentStatus
    version: int
    scheduled_at: datetime
    source_time: datetime | None


@dataclass(frozen=True, slots=True)
class AppointmentRow:
    """An appointment as an import writes it: as described (`records.appointment_values`), and
    as the import decided (its patient, protocol, version, and where its plan resumes)."""

    described: dict[str, Any]
    patient_id: int
    protocol_id: str | None
    version: int
    scheduled_at: datetime  # when its current start was set
    planned_at: datetime
    plan_resume_at: datetime | None
    id: int | None = None  # None: a new appointment
    source_time: datetime | None = None  # a new appointment's sender time


@dataclass(frozen=True, slots=True)
class PlanRecord:
    """Where a stored appointment's plan now stands, after planning it anew."""

    id: int
    protocol_id: str | None
    scheduled_at: datetime
    planned_at: datetime
    plan_resume_at: datetime | None


# A planned reminder's column values (step_id to recipient in REMINDER_COLUMNS), times encoded.
EncodedReminder = tuple[Any, ...]


def reminder_encoder(
    dialect: str,
) -> Callable[[Sequence[PlannedReminder]], list[EncodedReminder]]:
    """Planned reminders as the column values `insert_reminders` stores, for this database
    dialect (by name, so a worker process can be told it). A list at a time: a call per
    reminder cost the materializer 4%."""
    encode = bulk.utc_encoder(dialect)

    def values(planned: Sequence[PlannedReminder]) -> list[EncodedReminder]:
        return [
            (p.step_id, p.channel.value, p.template, encode(p.nominal_at), encode(p.due_at),
             encode(p.not_after), p.status.value, p.reason, p.recipient.value)
            for p in planned
        ]  # fmt: skip

    return values


@dataclass(frozen=True, slots=True)
class NewReminders:
    """Reminders planned for one appointment, stored as rows of this version of it."""

    appointment_id: int
    version: int
    planned: Sequence[PlannedReminder] = ()
    # Or the same as column values already (`reminder_encoder`): what a worker process planned
    # comes back encoded, since tuples of ints and strings unpickle many times faster.
    encoded: Sequence[EncodedReminder] = ()


@dataclass(frozen=True, slots=True)
class CancelledReminder:
    id: int
    reason: str


class AppointmentStore:
    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._encode = bulk.utc_encoder(conn.dialect)
        self.reminder_values = reminder_encoder(conn.dialect.name)

    # --- the import itself ------------------------------------------------------------------

    def one_import_at_a_time(self) -> None:
        """Imports upsert patients and appointments by external id, so two at once (an MLLP
        connection and an API call, say) could both insert the same new patient. SQLite's write
        transaction already serialises them; on PostgreSQL a transaction-scoped advisory lock
        does. On SQLite the import's connection gets a large page cache meanwhile."""
        import_cache(self._conn)
        if self._conn.dialect.name == "postgresql":
            self._conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": IMPORT_LOCK_KEY})

    def start_import(self, source: str, label: str, now: datetime) -> int:
        query = (
            insert(imports)
            .values(source=source, label=label, started_at=now, summary="{}")
            .returning(imports.c.id)
        )
        found: int = self._conn.execute(query).scalar_one()
        return found

    def finish_import(self, import_id: int | None, counts: dict[str, int]) -> None:
        self._conn.execute(
            update(imports).where(imports.c.id == import_id).values(summary=json.dumps(counts))
        )

    def insert_audit(self, entries: Sequence[AuditRecord]) -> None:
        bulk.insert_audit(self._conn, [entry.as_row() for entry in entries])

    # --- appointments -----------------------------------------------------------------------

    def described(self, external_ids: Sequence[str]) -> dict[str, Appointment]:
        """The stored appointments with these ids, by id, as an import would describe them."""
        query = records.select_with_patients().where(appointments.c.external_id.in_(external_ids))
        return {
            row["external_id"]: records.appointment_from_row(row, records.patient_of(row))
            for row in self._conn.execute(query).mappings()
        }

    def existing(self, external_ids: Sequence[str]) -> dict[str, StoredAppointment]:
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
        query = select(*columns).where(appointments.c.external_id.in_(external_ids))
        return {
            row.external_id: StoredAppointment(
                id=row.id,
                fingerprint=row.fingerprint,
                protocol_id=row.protocol_id,
                start_at=row.start_at,
                status=AppointmentStatus(row.status),
                version=row.version,
                scheduled_at=row.scheduled_at,
                source_time=row.source_time,
            )
            for row in self._conn.execute(query)
        }

    def booked_from(self, moment: datetime) -> list[tuple[StoredAppointment, Appointment]]:
        """Every booked appointment starting from `moment`, in id order."""
        query = (
            records.select_with_patients()
            .where(appointments.c.status == AppointmentStatus.BOOKED.value)
            .where(appointments.c.start_at >= moment)
            .order_by(appointments.c.id)
        )
        return [
            (_stored(row), records.appointment_from_row(row, records.patient_of(row)))
            for row in self._conn.execute(query).mappings().all()
        ]

    def insert_appointments(self, rows: Sequence[AppointmentRow], now: datetime) -> dict[str, int]:
        """Insert new appointments; returns their ids by external id."""
        if not rows:
            return {}
        values = [
            {**row.described, "patient_id": row.patient_id, "protocol_id": row.protocol_id,
             "updated_at": now, "version": row.version, "booked_at": now,
             "scheduled_at": row.scheduled_at, "planned_at": row.planned_at,
             "plan_resume_at": row.plan_resume_at, "source_time": row.source_time}
            for row in rows
        ]  # fmt: skip
        bulk.insert_dicts(self._conn, appointments, list(values[0]), values)
        keys = (v["external_id"] for v in values)
        return bulk.ids_by_key(self._conn, appointments, "external_id", keys)

    def update_appointments(self, rows: Sequence[AppointmentRow], now: datetime) -> None:
        """Write changed appointments as described now, at their new version."""
        if not rows:
            return
        values = [
            {**row.described, "patient_id": row.patient_id, "protocol_id": row.protocol_id,
             "updated_at": now, "pk": row.id, "version": row.version,
             "scheduled_at": row.scheduled_at, "planned_at": row.planned_at,
             "plan_resume_at": row.plan_resume_at}
            for row in rows
        ]  # fmt: skip
        self._conn.execute(update(appointments).where(appointments.c.id == bindparam("pk")), values)

    def record_plans(self, plans: Sequence[PlanRecord]) -> None:
        """Record each appointment's plan anew, leaving its description and version alone."""
        if not plans:
            return
        values = [
            {"pk": plan.id, "protocol_id": plan.protocol_id, "scheduled_at": plan.scheduled_at,
             "planned_at": plan.planned_at, "plan_resume_at": plan.plan_resume_at}
            for plan in plans
        ]  # fmt: skip
        self._conn.execute(update(appointments).where(appointments.c.id == bindparam("pk")), values)

    def unconfirm(self, appointment_ids: Sequence[int]) -> None:
        """Forget the confirmations (and the staff's call about one) of these appointments."""
        if appointment_ids:
            self._conn.execute(
                update(appointments)
                .where(appointments.c.id.in_(appointment_ids))
                .values(confirmed_at=None, confirmed_by=None, confirmation_alerted_at=None)
            )

    def record_source_times(self, times: Sequence[tuple[int, datetime]]) -> None:
        """Each appointment's newest sender time, by appointment id."""
        if times:
            self._conn.execute(
                update(appointments).where(appointments.c.id == bindparam("pk")),
                [{"pk": pk, "source_time": sent} for pk, sent in times],
            )

    def unknown_cancellations(self, external_ids: set[str]) -> dict[str, datetime]:
        """When (by its sender's clock) each of these ids was cancelled while unknown here. Such
        entries are the only audit rows with no appointment, so the lookup stays small."""
        rows = self._conn.execute(
            select(audit_log.c.detail)
            .where(audit_log.c.appointment_id.is_(None))
            .where(audit_log.c.event == AuditEvent.CANCEL_NOT_FOUND.value)
        ).scalars()
        found: dict[str, datetime] = {}
        for text_detail in rows:
            detail = json.loads(text_detail or "{}")
            ext, sent = detail.get("external_id"), detail.get("sent")
            if ext in external_ids and sent:
                moment = datetime.fromisoformat(sent)
                found[ext] = max(found.get(ext, moment), moment)
        return found

    def due_for_planning(self, until: datetime, limit: int) -> list[RowData]:
        """Appointments whose plan resumes by `until` (with their patients), soonest first."""
        query = (
            records.select_with_patients()
            .where(appointments.c.plan_resume_at <= until)
            .order_by(appointments.c.plan_resume_at, appointments.c.id)
            .limit(limit)
        )
        if self._conn.dialect.name == "postgresql":
            # Another dispatcher's materializer (or an import) holding a row: leave it to them.
            query = query.with_for_update(skip_locked=True, of=appointments)
        return list(self._conn.execute(query).mappings().all())

    def resume_plans(self, resumes: Sequence[tuple[int, datetime | None]]) -> None:
        """Where each appointment's plan now resumes, by appointment id."""
        self._conn.execute(
            update(appointments).where(appointments.c.id == bindparam("pk")),
            [{"pk": pk, "plan_resume_at": resume_at} for pk, resume_at in resumes],
        )

    # --- patients ---------------------------------------------------------------------------

    def upsert_patients(
        self, batch: Sequence[Appointment], now: datetime
    ) -> tuple[dict[str, int], dict[str, Caregiver | None]]:
        """Insert or update the batch's patients; returns their ids, and each one's caregiver as
        it now stands (what the batch said last, else what was stored: a source that says
        nothing about a caregiver leaves the stored one alone)."""
        conn = self._conn
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
        # One statement per set of columns: an executemany binds the columns of its first row
        # only, and rows whose source said nothing about a caregiver leave those columns out.
        shapes: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
        for values in changed:
            shapes[tuple(sorted(values))].append(values)
        for group in shapes.values():
            conn.execute(update(patients).where(patients.c.id == bindparam("pk")), group)
        fresh = []
        for ext, values in latest.items():
            if ext not in ids:
                caregivers[ext] = _resolved(said.get(ext), None)
                caregiver = records.caregiver_values(caregivers[ext])
                fresh.append({**values, **caregiver, "updated_at": now})
        if fresh:
            bulk.insert_dicts(conn, patients, list(fresh[0]), fresh)
            keys = (r["external_id"] for r in fresh)
            ids.update(bulk.ids_by_key(conn, patients, "external_id", keys))
        return ids, caregivers

    def patient_by_fhir_id(self, fhir_id: str) -> Patient | None:
        """The patient stored under this FHIR logical id, or failing that this external id."""
        for column in (patients.c.fhir_id, patients.c.external_id):
            query = select(patients).where(column == fhir_id)
            row = self._conn.execute(query).mappings().first()
            if row is not None:
                return records.patient_from_row(row)
        return None

    def save_fhir_patient(self, fhir_id: str, patient: Patient, now: datetime) -> bool:
        """Store a patient with its FHIR id: contact details updated, the id remembered, the
        stored caregiver kept when the source said nothing of one. True when it was new."""
        values = {**records.patient_values(patient), "fhir_id": fhir_id, "updated_at": now}
        kept = values
        if not records.caregiver_said(patient):
            kept = {k: v for k, v in values.items() if k not in records.CAREGIVER_COLUMNS}
        done = self._conn.execute(
            update(patients).where(patients.c.external_id == patient.external_id).values(**kept)
        )
        if done.rowcount:
            return False
        self._conn.execute(insert(patients).values(**values))
        return True

    def opted_out(self, numbers: set[str]) -> set[str]:
        """Those of these mobiles that opted out of texts."""
        if not numbers:
            return set()
        query = select(sms_opt_outs.c.phone).where(sms_opt_outs.c.phone.in_(numbers))
        return set(self._conn.execute(query).scalars())

    # --- reminders --------------------------------------------------------------------------

    def open_reminders(self, appointment_ids: Sequence[int]) -> dict[int, list[ExistingReminder]]:
        """Each appointment's patient reminders that are not cancelled (staff alerts are no
        patient's plan)."""
        result = self._conn.execute(
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
            .where(reminders.c.channel != STAFF_CHANNEL)
        )
        grouped: dict[int, list[ExistingReminder]] = defaultdict(list)
        for row in result.mappings():
            grouped[row["appointment_id"]].append(records.existing_reminder(row))
        return grouped

    def insert_reminders(
        self, planned: Iterable[NewReminders], import_id: int | None, now: datetime
    ) -> int:
        """Store planned reminders, in order, in one bulk statement; returns how many."""
        at = self._encode(now)
        values = self.reminder_values
        rows = [
            (batch.appointment_id, batch.version, import_id, *encoded, 0, at, at)
            for batch in planned
            for encoded in (batch.encoded or values(batch.planned))
        ]
        bulk.insert_tuples(self._conn, reminders, REMINDER_COLUMNS, rows)
        return len(rows)

    def cancel_reminders(self, cancelled: Sequence[CancelledReminder], now: datetime) -> None:
        """Cancel these reminders, each with its reason, unless they are no longer open."""
        if not cancelled:
            return
        self._conn.execute(
            update(reminders)
            .where(reminders.c.id == bindparam("rid"))
            # Plain comparisons: an expanding IN cannot be used in an executemany.
            .where(or_(*(reminders.c.status == s.value for s in sorted(OPEN))))
            .values(
                status=ReminderStatus.CANCELLED.value,
                reason=bindparam("reason"),
                updated_at=bindparam("now"),
            ),
            [{"rid": c.id, "reason": c.reason, "now": now} for c in cancelled],
        )

    def staff_alerts_made(self, appointment_ids: Sequence[int]) -> set[tuple[int, str]]:
        """(appointment, alert) of the staff alerts already made for these appointments."""
        return staff_alerts.told(self._conn, appointment_ids)

    def insert_staff_alerts(self, rows: Sequence[dict[str, Any]]) -> None:
        """Staff alert rows (`services.follow_ups.staff_alert_row`)."""
        staff_alerts.add(self._conn, rows)


def by_external_id(conn: Connection, external_id: str) -> RowData | None:
    """The appointment with this source id, as a `records.select_with_patients` row."""
    query = records.select_with_patients().where(appointments.c.external_id == external_id)
    return conn.execute(query).mappings().first()


def booked_of_patients(
    conn: Connection, patient_ids: set[int], *, since: datetime
) -> list[RowData]:
    """These patients' booked appointments starting after `since`, as
    `records.select_with_patients` rows."""
    query = (
        records.select_with_patients()
        .where(appointments.c.patient_id.in_(patient_ids))
        .where(appointments.c.status == AppointmentStatus.BOOKED.value)
        .where(appointments.c.start_at > since)
    )
    return list(conn.execute(query).mappings())


def booked_on_mobile(conn: Connection, phone: str, *, since: datetime) -> list[RowData]:
    """Booked appointments starting after `since` of the patients with this mobile, as
    `records.select_with_patients` rows."""
    query = (
        records.select_with_patients()
        .where(patients.c.mobile == phone)
        .where(appointments.c.status == AppointmentStatus.BOOKED.value)
        .where(appointments.c.start_at > since)
    )
    return list(conn.execute(query).mappings().all())


def _stored(row: RowData) -> StoredAppointment:
    return StoredAppointment(
        id=row["id"],
        fingerprint=row["fingerprint"],
        protocol_id=row["protocol_id"],
        start_at=row["start_at"],
        status=AppointmentStatus(row["status"]),
        version=row["version"],
        scheduled_at=row["scheduled_at"],
        source_time=row["source_time"],
    )


def _resolved(caregiver: Caregiver | None, recorded: Caregiver | None) -> Caregiver | None:
    return caregiver.consents_from(recorded) if caregiver is not None else None
