"""Importing: apply parsed appointments to the store and (re)plan their reminders.

One transaction per import: a crash or a bad file leaves nothing half-written. Appointments are
matched by external id; an unchanged one is left alone, so re-importing a file changes nothing.
Changes are applied in chunks (`services.import_changes`), each written in bulk
(`store.appointments`); only reminders due within the planning horizon are stored
(`services.import_plans`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ..catalog import Catalog
from ..clock import Clock
from ..domain.appointment import Appointment, AppointmentStatus, Change, Patient
from ..domain.start_range import start_problem
from ..importers.base import RowError
from ..store.appointments import AppointmentStore
from ..store.engine import reading
from ..store.field_limits import can_be_stored, change_fields, patient_fields, unstorable
from .import_changes import CALENDAR_CANCEL, Item, apply_chunk, replan_chunk
from .import_plans import DEFAULT_HORIZON, Preplan
from .import_summary import ImportSummary, Outcome

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = [
    "CALENDAR_CANCEL",
    "CANCEL_NOT_FOUND",
    "DEFAULT_HORIZON",
    "ImportItem",
    "ImportService",
    "ImportSummary",
    "Outcome",
]

CHUNK = 1000
# (file line, change) or (file line, appointment, its Preplan).
ImportItem = tuple[int, Change] | tuple[int, Appointment, Preplan]
# A cancellation whose appointment is not stored here: audited, never counted as cancelled.
CANCEL_NOT_FOUND = Outcome.CANCEL_NOT_FOUND.value
# Re-planning looks back this far: the latest post-procedure step of a protocol is within it.
REPLAN_LOOKBACK = timedelta(days=60)


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

    def now(self) -> datetime:
        return self._clock()

    @property
    def dialect(self) -> str:
        """The database's dialect: plans made in worker processes come back encoded for it."""
        return self._engine.dialect.name

    def plan_until(self, now: datetime) -> datetime:
        """The end of the planning horizon for an import made at `now`."""
        return now + self._horizon

    def cancel(self, external_id: str, *, source: str) -> ImportSummary | None:
        """Cancel a stored appointment (every open reminder stops); None if there is none."""
        current = self.stored([external_id]).get(external_id)
        if current is None:
            return None
        cancelled = replace(current, status=AppointmentStatus.CANCELLED)
        return self.apply([(0, cancelled)], source=source, label=f"cancel {external_id}")

    def stored(self, external_ids: Iterable[str]) -> dict[str, Appointment]:
        """The stored appointments with these ids, by id (as an import would give them back)."""
        # No stored appointment can have an id its column cannot hold (and a NUL would make
        # PostgreSQL fail).
        wanted = [i for i in external_ids if can_be_stored("appointment_id", i)]
        with reading(self._engine) as conn:
            return AppointmentStore(conn).described(wanted)

    def known_patient(self, fhir_id: str) -> Patient | None:
        """A patient already stored under this FHIR logical id (or, failing that, this external
        id): an Appointment may refer to a Patient sent earlier."""
        if not can_be_stored("fhir_id", fhir_id):
            return None  # no stored patient can have it (a NUL would make PostgreSQL fail)
        with reading(self._engine) as conn:
            return AppointmentStore(conn).patient_by_fhir_id(fhir_id)

    def save_patients(self, found: list[tuple[str, Patient]]) -> int:
        """Store patients sent without an appointment (a FHIR Patient), each with its FHIR id:
        contact details are updated, the id remembered. Returns how many were new. A patient
        with a value too long for its column is not stored (the importer reports it; see
        `_storable`)."""
        now = self._clock()
        fresh = 0
        with self._engine.begin() as conn:
            store = AppointmentStore(conn)
            store.one_import_at_a_time()
            for fhir_id, patient in found:
                if unstorable({**patient_fields(patient), "fhir_id": fhir_id}):
                    continue
                if store.save_fhir_patient(fhir_id, patient, now):
                    fresh += 1
        return fresh

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
        """Apply appointments in order. An item may carry `preplan(...)`'s plan made with the
        same `now` and `plan_until(now)`; it is used if the appointment turns out to be new, and
        ignored otherwise.

        `parse_errors` is read after the last item: a streaming parser may still be adding to it
        while `items` are consumed. `source_times` (by item line) are when the sender made each
        change: one older than the change already applied to its appointment is ignored.
        `parse_warnings`, read like `parse_errors`, are reported and reject nothing."""
        now = now or self._clock()
        until = self.plan_until(now)
        summary = ImportSummary()
        with self._engine.begin() as conn:
            store = AppointmentStore(conn)
            store.one_import_at_a_time()
            summary.import_id = store.start_import(source, label, now)
            for chunk in _chunks(_storable(items, summary)):
                apply_chunk(store, self._catalog, chunk, now, until, summary, source_times or {})
                if progress:
                    progress(len(chunk))
            summary.errors.extend(parse_errors)
            summary.rejected += len({e.line for e in parse_errors})
            summary.warnings.extend(sorted(parse_warnings, key=lambda e: e.line))
            store.finish_import(summary.import_id, summary.counts())
        summary.errors.sort(key=lambda e: e.line)
        summary.warnings.sort(key=lambda e: e.line)
        return summary

    def replan(self) -> ImportSummary:
        """Re-plan every booked appointment that may still have messages to come against the
        current protocols and clinic settings (after staff change them). Reminders whose moment
        moved are cancelled and planned anew; sent ones stay history; unchanged ones are kept."""
        now = self._clock()
        until = self.plan_until(now)
        summary = ImportSummary()
        with self._engine.begin() as conn:
            store = AppointmentStore(conn)
            store.one_import_at_a_time()
            summary.import_id = store.start_import("replan", "replan", now)
            booked = store.booked_from(now - REPLAN_LOOKBACK)
            for start in range(0, len(booked), CHUNK):
                batch = booked[start : start + CHUNK]
                replan_chunk(store, self._catalog, batch, now, until, summary)
            store.finish_import(summary.import_id, summary.counts())
        return summary


def _storable(items: Iterable[ImportItem], summary: ImportSummary) -> Iterator[Item]:
    """The last guard before the database: every importer checks these, but a value longer than
    its column would make PostgreSQL refuse the whole import's transaction (and SQLite store it
    silently), and a start near the ends of the datetime range would overflow in planning. Such
    an item is rejected like a bad row, naming the field."""
    for line, change, *planned in items:
        if planned:  # planned in a worker from a CSV row, which RowConverter checked for these
            yield Item(line, change, planned[0])
            continue
        problems = unstorable(change_fields(change))
        if isinstance(change, Appointment) and start_problem(change.start):
            problems.append(("start", start_problem(change.start)))
        if problems:
            summary.reject([RowError(line, name, reason) for name, reason in problems])
        else:
            yield Item(line, change)


def _chunks(items: Iterable[Item]) -> Iterator[list[Item]]:
    """Chunks in file order; a repeated appointment id starts a new chunk so the later row wins."""
    chunk: list[Item] = []
    seen: set[str] = set()
    for item in items:
        if len(chunk) >= CHUNK or item.change.external_id in seen:
            yield chunk
            chunk, seen = [], set()
        chunk.append(item)
        seen.add(item.change.external_id)
    if chunk:
        yield chunk
