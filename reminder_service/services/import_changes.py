"""One chunk of an import, applied: each change matched to its stored appointment, decided
(imported, rescheduled, cancelled, unchanged...), planned, and written with a single bulk
statement per table. Re-planning after a configuration change goes through the same
reconciliation.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from ..catalog import Catalog
from ..domain.appointment import Appointment, AppointmentStatus, Cancellation, Caregiver, Change
from ..domain.audit import AuditEvent, AuditRecord
from ..domain.planning import (
    PlannedReminder,
    PlanWindow,
    Recipient,
    ReminderStatus,
    plan_window,
)
from ..domain.protocol import Channel
from ..domain.reachability import UnreachableMemo, UnreachableStep, too_late_steps
from ..domain.reconcile import ExistingReminder, reconcile
from ..domain.timing import zone
from ..importers.base import RowError
from ..store import records
from ..store.appointments import (
    AppointmentRow,
    AppointmentStore,
    CancelledReminder,
    NewReminders,
    PlanRecord,
    StoredAppointment,
)
from .follow_ups import staff_alert_row
from .import_plans import Preplan, plan_detail, planned_as_new
from .import_summary import ImportSummary, Outcome

# A patient who got the appointment as a calendar entry (.ics) gets its cancellation too: an
# email with METHOD:CANCEL, step and template of this name.
CALENDAR_CANCEL = "cancelled"
CALENDAR_WITHDRAWN = "appointment cancelled: the calendar entry sent is withdrawn"
UNKNOWN_CANCEL_REASON = "import: a cancellation for an appointment not known here"
_CANCEL_REASONS = {
    Outcome.CANCELLED: "appointment cancelled",
    Outcome.RESCHEDULED: "appointment rescheduled",
    Outcome.NOT_SERVED: "no protocol serves this procedure any more",
    Outcome.REPLANNED: "protocol or clinic settings changed",
}


@dataclass(frozen=True, slots=True)
class Item:
    """One change to apply: where its source has it (a file's line, a message's or an item's
    index), and for a new booking perhaps its plan, made in a worker (`preplan`)."""

    line: int
    change: Change
    preplan: Preplan | None = None


@dataclass(frozen=True, slots=True)
class _Described:
    """An item once cancellations by id are resolved: every change describes its appointment."""

    line: int
    appointment: Appointment
    preplan: Preplan | None


@dataclass(frozen=True, slots=True)
class _Decided:
    """A change that alters its appointment, and what the import decided about it."""

    appointment: Appointment
    described: dict[str, Any]  # records.appointment_values()
    stored: StoredAppointment | None  # None: new here
    patient_id: int
    protocol_id: str | None
    version: int
    scheduled_at: datetime  # when its current start was set
    outcome: Outcome


@dataclass(frozen=True, slots=True)
class _Replanned:
    """A stored appointment planned anew: what reconciling its reminders needs."""

    appointment: Appointment
    id: int
    version: int
    protocol_id: str | None
    outcome: Outcome
    planned: list[PlannedReminder]
    resume_at: datetime | None


@dataclass
class _Writes:
    """What one chunk writes besides its appointments, gathered first so each table gets a
    single bulk statement."""

    reminders: list[NewReminders] = field(default_factory=list)
    audit: list[AuditRecord] = field(default_factory=list)
    staff: list[dict[str, Any]] = field(default_factory=list)  # alert emails to the clinic


def apply_chunk(
    store: AppointmentStore,
    catalog: Catalog,
    chunk: list[Item],
    now: datetime,
    until: datetime,
    summary: ImportSummary,
    source_times: Mapping[int, datetime],
) -> None:
    """Apply a chunk of changes, in which no appointment id repeats."""
    described = _resolve_cancellations(store, chunk, now, summary, source_times)
    _ChunkImport(store, catalog, now, until, summary).apply(described, source_times)


def replan_chunk(
    store: AppointmentStore,
    catalog: Catalog,
    batch: Sequence[tuple[StoredAppointment, Appointment]],
    now: datetime,
    until: datetime,
    summary: ImportSummary,
) -> None:
    """Plan stored appointments anew against the current configuration."""
    _ChunkImport(store, catalog, now, until, summary).replan(batch)


class _ChunkImport:
    def __init__(
        self,
        store: AppointmentStore,
        catalog: Catalog,
        now: datetime,
        until: datetime,
        summary: ImportSummary,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._now = now
        self._until = until
        self._summary = summary
        self._writes = _Writes()
        # Per appointment id (external), its critical steps that reach no one.
        self._unreachable: dict[str, tuple[UnreachableStep, ...]] = {}

    def apply(self, chunk: list[_Described], source_times: Mapping[int, datetime]) -> None:
        store, now, summary = self._store, self._now, self._summary
        accepted = []
        sent_at: dict[str, datetime] = {}
        preplanned: dict[str, Preplan] = {}
        for item in chunk:
            appointment = item.appointment
            if item.preplan is not None:
                preplanned[appointment.external_id] = item.preplan
            if item.line in source_times:
                sent_at[appointment.external_id] = source_times[item.line]
            if self._catalog.clinics.get(appointment.clinic_id) is None:
                why = f"unknown clinic {appointment.clinic_id!r}"
                summary.reject([RowError(item.line, "clinic", why)])
            else:
                accepted.append(appointment)
        if not accepted:
            return
        patient_ids, caregivers = store.upsert_patients(accepted, now)
        existing = store.existing([a.external_id for a in accepted])
        accepted = _with_caregivers(accepted, caregivers, preplanned)
        decided = []
        for appointment in self._in_sender_order(accepted, existing, sent_at):
            prepared = preplanned.get(appointment.external_id)
            values = prepared.values if prepared else records.appointment_values(appointment)
            stored = existing.get(appointment.external_id)
            decision = self._decide(appointment, values, stored, patient_ids)
            if decision is not None:
                decided.append(decision)
        self._find_unreachable(decided)
        new = [d for d in decided if d.stored is None]
        changed = [d for d in decided if d.stored is not None]
        # Plan before writing the appointments: their rows record where each plan resumes.
        new_plans = [preplanned.get(d.appointment.external_id) or self._plan_new(d) for d in new]
        replanned = [self._replanned(d) for d in changed]
        new_ids = store.insert_appointments(
            [self._row(d, plan.resume_at, sent_at.get(d.appointment.external_id))
             for d, plan in zip(new, new_plans, strict=True)],
            now,
        )  # fmt: skip
        if changed:
            store.update_appointments(
                [self._row(d, r.resume_at) for d, r in zip(changed, replanned, strict=True)], now
            )
            # A confirmation is of a time: a moved appointment must be confirmed again, and
            # staff may be asked to phone about it again.
            store.unconfirm([r.id for r in replanned if r.outcome is Outcome.RESCHEDULED])
        for decision, plan in zip(new, new_plans, strict=True):
            self._planned_new(decision, plan, new_ids[decision.appointment.external_id])
        summary.reminders_cancelled += self._reconcile(replanned)
        summary.reminders_planned += store.insert_reminders(
            self._writes.reminders, summary.import_id, now
        )
        self._warn_of_past(new + changed, new_ids, chunk)
        store.insert_audit(self._writes.audit)
        store.insert_staff_alerts(self._writes.staff)

    def replan(self, batch: Sequence[tuple[StoredAppointment, Appointment]]) -> None:
        if not batch:
            return
        store, summary = self._store, self._summary
        replanned = []
        for stored, appointment in batch:
            protocol = self._catalog.protocol_for(appointment.procedure)
            protocol_id = protocol.id if protocol else None
            window = self._window(appointment, protocol_id, stored.scheduled_at)
            replanned.append(
                _Replanned(appointment, stored.id, stored.version, protocol_id, Outcome.REPLANNED,
                           window.reminders, window.resume_at)
            )  # fmt: skip
        store.record_plans(
            [PlanRecord(r.id, r.protocol_id, s.scheduled_at, self._now, r.resume_at)
             for r, (s, _) in zip(replanned, batch, strict=True)]
        )  # fmt: skip
        summary.reminders_cancelled += self._reconcile(replanned)
        writes = self._writes
        summary.reminders_planned += store.insert_reminders(
            writes.reminders, summary.import_id, self._now
        )
        # Only appointments whose plan changed count as updated and get an audit entry.
        cancelled_for = {a.appointment_id for a in writes.audit if a.reminder_id is not None}
        touched = {r.appointment_id for r in writes.reminders if r.planned} | cancelled_for
        summary.updated += len(touched)
        summary.unchanged += len(batch) - len(touched)
        store.insert_audit([a for a in writes.audit if a.appointment_id in touched])
        store.insert_staff_alerts(writes.staff)

    def _decide(
        self,
        appointment: Appointment,
        values: dict[str, Any],
        stored: StoredAppointment | None,
        patient_ids: dict[str, int],
    ) -> _Decided | None:
        """What the change does to its appointment, counted; None when it changes nothing."""
        protocol = self._catalog.protocol_for(appointment.procedure)
        protocol_id = protocol.id if protocol else None
        patient_id = patient_ids[appointment.patient.external_id]
        cancelled = appointment.status is AppointmentStatus.CANCELLED
        if stored is None:
            # A cancellation that describes an appointment never seen here is stored (so an
            # older booking arriving after it is known to be stale) but is no cancellation.
            outcome = (
                Outcome.CANCEL_NOT_FOUND
                if cancelled
                else Outcome.IMPORTED
                if protocol
                else Outcome.NOT_SERVED
            )
            version, scheduled_at = 1, self._now
        elif stored.fingerprint == values["fingerprint"] and stored.protocol_id == protocol_id:
            self._summary.count(Outcome.UNCHANGED)
            return None
        else:
            moved = stored.start_at != appointment.start
            was_cancelled = stored.status is AppointmentStatus.CANCELLED
            reinstated = was_cancelled and not cancelled
            version = stored.version + 1
            scheduled_at = self._now if moved or reinstated else stored.scheduled_at
            if cancelled:
                outcome = Outcome.CANCELLED if not was_cancelled else Outcome.UPDATED
            else:
                served = Outcome.UPDATED if protocol else Outcome.NOT_SERVED
                outcome = Outcome.RESCHEDULED if moved else served
        self._summary.count(outcome)
        return _Decided(appointment, values, stored, patient_id, protocol_id, version,
                        scheduled_at, outcome)  # fmt: skip

    def _find_unreachable(self, decided: list[_Decided]) -> None:
        """Note each critical step no channel can deliver, for the staff to hear of at once."""
        candidates = [
            d
            for d in decided
            if d.protocol_id is not None
            and d.appointment.status is AppointmentStatus.BOOKED
            and d.appointment.end > self._now  # a past appointment is history: nobody to warn
        ]
        opted_out = self._store.opted_out(
            {d.appointment.patient.mobile for d in candidates if d.appointment.patient.mobile}
        )
        unreachable = UnreachableMemo()
        for d in candidates:
            assert d.protocol_id is not None
            blocked = unreachable(
                d.appointment,
                self._catalog.protocol(d.protocol_id),
                d.scheduled_at,
                d.appointment.patient.mobile in opted_out,
            )
            if blocked:
                self._unreachable[d.appointment.external_id] = blocked

    def _window(
        self, appointment: Appointment, protocol_id: str | None, scheduled_at: datetime
    ) -> PlanWindow:
        if protocol_id is None:
            return PlanWindow([], None)
        clinic = self._catalog.clinics.get(appointment.clinic_id)
        assert clinic is not None  # checked on entry
        protocol = self._catalog.protocol(protocol_id)
        return plan_window(
            appointment, protocol, clinic.send_window, self._now, scheduled_at, until=self._until
        )

    def _plan_new(self, d: _Decided) -> Preplan:
        window = self._window(d.appointment, d.protocol_id, d.scheduled_at)
        return planned_as_new(d.described, window, self._store.reminder_values)

    def _replanned(self, d: _Decided) -> _Replanned:
        assert d.stored is not None
        window = self._window(d.appointment, d.protocol_id, d.scheduled_at)
        return _Replanned(d.appointment, d.stored.id, d.version, d.protocol_id, d.outcome,
                          window.reminders, window.resume_at)  # fmt: skip

    def _row(
        self, d: _Decided, resume_at: datetime | None, source_time: datetime | None = None
    ) -> AppointmentRow:
        return AppointmentRow(
            described=d.described,
            patient_id=d.patient_id,
            protocol_id=d.protocol_id,
            version=d.version,
            scheduled_at=d.scheduled_at,
            planned_at=self._now,
            plan_resume_at=resume_at,
            id=d.stored.id if d.stored is not None else None,
            source_time=source_time,
        )

    def _planned_new(self, d: _Decided, plan: Preplan, appointment_id: int) -> None:
        """A new appointment's reminders, its audit entry and its alerts."""
        writes = self._writes
        writes.reminders.append(NewReminders(appointment_id, 1, encoded=plan.reminders))
        writes.audit.append(self._event(appointment_id, d.outcome, plan.detail))
        alerts = plan.alerts + self._unreachable.get(d.appointment.external_id, ())
        self._alert(appointment_id, 1, alerts)

    def _reconcile(self, replanned: list[_Replanned]) -> int:
        """Cancel, keep and create each appointment's reminders for its new plan; returns how
        many were cancelled."""
        if not replanned:
            return 0
        ids = [r.id for r in replanned]
        by_appointment = self._store.open_reminders(ids)
        told = self._store.staff_alerts_made(ids)
        writes = self._writes
        cancels: list[CancelledReminder] = []
        for r in replanned:
            existing = by_appointment.get(r.id, [])
            result = reconcile(existing, r.planned)
            if r.outcome is Outcome.CANCELLED and self._sent_a_calendar_entry(r, existing):
                withdrawal = PlannedReminder(
                    CALENDAR_CANCEL, Channel.EMAIL, CALENDAR_CANCEL, self._now, self._now,
                    r.appointment.start, ReminderStatus.PENDING, CALENDAR_WITHDRAWN,
                    Recipient.PATIENT,
                )  # fmt: skip
                writes.reminders.append(NewReminders(r.id, r.version, [withdrawal]))
            reason = _CANCEL_REASONS.get(r.outcome, "appointment details changed")
            cancels.extend(CancelledReminder(rid, reason) for rid in result.cancel)
            writes.reminders.append(NewReminders(r.id, r.version, result.create))
            detail = plan_detail(r.version, result.create, r.resume_at)
            writes.audit.append(self._event(r.id, r.outcome, detail))
            alerts = too_late_steps(result.create) + tuple(
                alert
                for alert in self._unreachable.get(r.appointment.external_id, ())
                if (r.id, alert.alert) not in told
            )
            self._alert(r.id, r.version, alerts)
            writes.audit.extend(
                AuditRecord(self._now, AuditEvent.CANCELLED, reason, r.id, rid)
                for rid in result.cancel
            )
        self._store.cancel_reminders(cancels, self._now)
        return len(cancels)

    def _sent_a_calendar_entry(self, r: _Replanned, existing: list[ExistingReminder]) -> bool:
        protocol = self._catalog.protocol_or_none(r.protocol_id)
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

    def _alert(
        self, appointment_id: int, version: int, alerts: tuple[UnreachableStep, ...]
    ) -> None:
        """A step that will not reach the patient needs a person: `status` lists each in the
        audit trail, and the clinic's staff get one alert email per step."""
        writes = self._writes
        writes.audit.extend(
            AuditRecord(self._now, AuditEvent.STAFF_ALERT, alert.reason, appointment_id)
            for alert in alerts
        )
        steps = {alert.step: alert.alert for alert in alerts}
        writes.staff.extend(
            staff_alert_row(
                appointment_id, version, step, text, self._now, import_id=self._summary.import_id
            )
            for step, text in steps.items()
        )

    def _event(self, appointment_id: int | None, outcome: Outcome, detail: str) -> AuditRecord:
        """An import's audit entry; with no appointment for one about an id not stored here."""
        return AuditRecord(self._now, outcome.event, f"import: {outcome}", appointment_id,
                           detail=detail)  # fmt: skip

    def _in_sender_order(
        self,
        accepted: list[Appointment],
        existing: dict[str, StoredAppointment],
        sent_at: dict[str, datetime],
    ) -> list[Appointment]:
        """Drop the changes older (by their sender's clock) than the one already applied to
        their appointment, and record each appointment's newest sender time, even when nothing
        changed: an older message arriving after it must be ignored too."""
        kept = []
        fresh = {a.external_id for a in accepted if a.external_id not in existing} & set(sent_at)
        cancelled_before = self._store.unknown_cancellations(fresh) if fresh else {}
        for appointment in accepted:
            stored = existing.get(appointment.external_id)
            when = sent_at.get(appointment.external_id)
            applied = stored.source_time if stored is not None else None
            cancelled_at = cancelled_before.get(appointment.external_id)
            if when is not None and cancelled_at is not None and when < cancelled_at:
                # Cancelled (by id alone) by a newer message that came first: the older booking
                # arriving now must not bring the appointment's reminders back.
                self._summary.count(Outcome.OUT_OF_ORDER)
                detail = {"external_id": appointment.external_id, "sent": when.isoformat(),
                          "cancelled": cancelled_at.isoformat()}  # fmt: skip
                self._writes.audit.append(
                    self._event(None, Outcome.OUT_OF_ORDER, json.dumps(detail))
                )
                continue
            if when is not None and applied is not None and when < applied:
                assert stored is not None
                self._summary.count(Outcome.OUT_OF_ORDER)
                detail = {"sent": when.isoformat(), "applied": applied.isoformat()}
                self._writes.audit.append(
                    self._event(stored.id, Outcome.OUT_OF_ORDER, json.dumps(detail))
                )
            else:
                kept.append(appointment)
        self._store.record_source_times(
            [
                (stored.id, sent_at[ext])
                for ext, stored in existing.items()
                if ext in sent_at
                and (stored.source_time is None or sent_at[ext] > stored.source_time)
            ]
        )
        return kept

    def _warn_of_past(
        self, decided: list[_Decided], new_ids: Mapping[str, int], chunk: list[_Described]
    ) -> None:
        """A booking imported or changed after its start: a warning naming its line and id,
        and an audit entry. It is still stored (history, and a later cancellation still finds
        it); planning skips its steps whose time has passed, as for any late booking."""
        lines = {item.appointment.external_id: item.line for item in chunk}
        for d in decided:
            appointment = d.appointment
            if appointment.status is not AppointmentStatus.BOOKED or appointment.start >= self._now:
                continue
            tz = appointment.patient.timezone
            start = appointment.start.astimezone(zone(tz)).strftime("%Y-%m-%d %H:%M")
            self._summary.in_the_past += 1
            self._summary.warnings.append(
                RowError(
                    lines[appointment.external_id],
                    "start",
                    f"appointment {appointment.external_id} is in the past (started {start} "
                    f"{tz}): imported as history; only messages still in time are sent",
                )
            )
            appointment_id = (
                d.stored.id if d.stored is not None else new_ids[appointment.external_id]
            )
            detail = json.dumps({"start": appointment.start.isoformat()})
            self._writes.audit.append(
                AuditRecord(self._now, AuditEvent.IN_THE_PAST, "import: in_the_past",
                            appointment_id, detail=detail)
            )  # fmt: skip


def _cancels(change: Change) -> bool:
    return isinstance(change, Cancellation) or change.status is AppointmentStatus.CANCELLED


def _resolve_cancellations(
    store: AppointmentStore,
    chunk: list[Item],
    now: datetime,
    summary: ImportSummary,
    source_times: Mapping[int, datetime],
) -> list[_Described]:
    """A cancellation of a stored appointment becomes that appointment, cancelled, so it goes
    through the same path as any change (sender order, reconcile, calendar withdrawal). Whatever
    else it says is dropped: a cancellation never changes whose appointment it is, nor its
    details (a source may name the patient by another identifier). One by id alone for an id
    never seen here is audited (with no appointment to hang it on) and counted apart."""
    wanted = [item.change.external_id for item in chunk if _cancels(item.change)]
    stored = store.described(wanted) if wanted else {}
    resolved: list[_Described] = []
    unknown: list[AuditRecord] = []
    for item in chunk:
        change = item.change
        current = stored.get(change.external_id)
        if isinstance(change, Appointment) and not (current is not None and _cancels(change)):
            # A booking, or a described cancel of an id not stored here.
            resolved.append(_Described(item.line, change, item.preplan))
            continue
        if current is None:
            assert isinstance(change, Cancellation)
            summary.count(Outcome.CANCEL_NOT_FOUND)
            detail: dict[str, Any] = {
                "external_id": change.external_id,
                "no_show": change.no_show,
                "import_id": summary.import_id,
            }
            if item.line in source_times:  # so an older booking arriving after it is known stale
                detail["sent"] = source_times[item.line].isoformat()
            unknown.append(
                AuditRecord(now, AuditEvent.CANCEL_NOT_FOUND, UNKNOWN_CANCEL_REASON,
                            detail=json.dumps(detail))
            )  # fmt: skip
            continue
        resolved.append(
            _Described(item.line, replace(current, status=AppointmentStatus.CANCELLED), None)
        )
    store.insert_audit(unknown)
    return resolved


def _with_caregivers(
    batch: list[Appointment],
    caregivers: dict[str, Caregiver | None],
    preplanned: dict[str, Preplan],
) -> list[Appointment]:
    """The appointments with their patient's caregiver as it now stands (see
    `AppointmentStore.upsert_patients`: kept when their source said nothing, consents a source
    could not give taken from the record), so their plan has the copies the caregiver will
    get."""
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
