"""Confirmations: appointments whose protocol needs one by a deadline, and those staff must phone.

A patient confirms by replying 1 (services/replies.py); staff confirm for them (`reminder-service
confirm ID`, `POST /appointments/{id}/confirm`) after a call. The scheduler runs `check()` every
few minutes: each booked appointment still to come whose deadline has passed unconfirmed is
claimed (`confirmation_alerted_at`, set only where it is still empty, in the same transaction as
the alert), and every clinic gets one staff email listing its claimed appointments. So each
appointment is listed once, across restarts and processes; one booked after its deadline is
listed at the next check; cancelled and confirmed ones never are.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from ..catalog import Catalog
from ..clock import Clock
from ..domain.appointment import Appointment, AppointmentStatus, masked_patient
from ..domain.audit import AuditEvent, AuditRecord
from ..domain.confirmation import Confirmation, latest_anchor_due, needs_a_call
from ..domain.protocol import ConfirmationRule
from ..store import appointments, audit, confirmations, records, staff_alerts
from ..store.field_limits import can_be_stored
from ..store.records import RowData
from .follow_ups import UNCONFIRMED_TEMPLATE, staff_alert_row, staff_time
from .previewing import NotFound, confirmation_state
from .reply_inbox import who

if TYPE_CHECKING:
    from sqlalchemy import Connection, Engine

log = logging.getLogger(__name__)

STEP = "confirmation"  # the step id of the staff alert rows


@dataclass(frozen=True)
class CheckReport:
    appointments: int = 0  # listed to staff in this run
    alerts: int = 0  # emails planned (one per clinic with any)


class AlreadyCancelled(ValueError):
    pass


class Confirmations:
    def __init__(self, engine: Engine, catalog: Catalog, clock: Clock) -> None:
        self._engine = engine
        self._catalog = catalog
        self._clock = clock

    def _rules(self) -> dict[str, ConfirmationRule]:
        return {p.id: p.confirmation for p in self._catalog.protocols if p.confirmation}

    def state(self, row: RowData, appointment: Appointment) -> Confirmation:
        return confirmation_state(self._catalog, row, appointment)

    def confirm(self, external_id: str, by: str) -> Confirmation:
        """Staff record a confirmation (given by phone, say). An appointment confirmed already
        keeps its first confirmation. Raises NotFound, or AlreadyCancelled."""
        if not can_be_stored("appointment_id", external_id):
            raise NotFound(f"no appointment with id {external_id!r}")
        now, by = self._clock(), who(by)
        with self._engine.begin() as conn:
            row = appointments.by_external_id(conn, external_id)
            if row is None:
                raise NotFound(f"no appointment with id {external_id!r}")
            if row["status"] != AppointmentStatus.BOOKED.value:
                raise AlreadyCancelled(f"appointment {external_id!r} is cancelled")
            if confirmations.confirm_once(conn, row["id"], now, by):
                reason = f"confirmed by staff ({by})"
                audit.write(conn, [AuditRecord(now, AuditEvent.CONFIRMED, reason, row["id"])])
            row = appointments.by_external_id(conn, external_id)
            assert row is not None
        return self.state(row, records.appointment_from_row(row, records.patient_of(row)))

    def check(self) -> CheckReport:
        """List to staff every appointment whose confirmation deadline has passed unconfirmed
        and that no earlier check listed: one alert per clinic."""
        rules = self._rules()
        if not rules:
            return CheckReport()
        now = self._clock()
        with self._engine.begin() as conn:
            confirmations.take_turns(conn)
            due = self._due(conn, rules, now)
            claimed = [
                item for item in due if confirmations.claim_for_listing(conn, item[0]["id"], now)
            ]
            report = self._alert(conn, claimed, now)
        if report.appointments:
            log.info(
                "confirmations: %d unconfirmed appointments listed to staff in %d alerts",
                report.appointments,
                report.alerts,
            )
        return report

    def _due(
        self, conn: Connection, rules: dict[str, ConfirmationRule], now: datetime
    ) -> list[tuple[RowData, Appointment, datetime]]:
        """Booked, unconfirmed, unlisted appointments still to come whose deadline has passed.
        The query narrows them by each rule's anchor and condition; the deadline itself is
        resolved here, a row at a time (only those found are kept)."""
        latest = [
            (protocol_id, *latest_anchor_due(rule, now), rule.condition)
            for protocol_id, rule in rules.items()
        ]
        found: list[tuple[RowData, Appointment, datetime]] = []
        for row in confirmations.unlisted_candidates(conn, latest, now):
            appointment = records.appointment_from_row(row, records.patient_of(row))
            rule = rules[row["protocol_id"]]
            deadline = needs_a_call(rule, appointment, row["scheduled_at"], None, now)
            if deadline is not None:
                found.append((row, appointment, deadline))
        return found

    def _alert(
        self, conn: Connection, claimed: list[tuple[RowData, Appointment, datetime]], now: datetime
    ) -> CheckReport:
        by_clinic: dict[str, list[tuple[RowData, Appointment, datetime]]] = defaultdict(list)
        for item in claimed:
            by_clinic[item[1].clinic_id].append(item)
        listed: list[AuditRecord] = []
        for clinic_id, items in sorted(by_clinic.items()):
            clinic = self._catalog.clinics.get(clinic_id) or self._catalog.clinics.default
            lines = [
                f"{appt.external_id}: {staff_time(appt.start, clinic)}, "
                f"{masked_patient(appt.patient)}; confirmation was due by "
                f"{staff_time(deadline, clinic)}"
                for _, appt, deadline in items
            ]
            # The alert is a reminders row like every staff alert (sent, retried and audited the
            # same way); it hangs on the clinic's first listed appointment and lists them all.
            first = items[0][0]
            alert = staff_alert_row(
                first["id"], first["version"], STEP, "\n".join(lines), now,
                template=UNCONFIRMED_TEMPLATE,
            )  # fmt: skip
            staff_alerts.add(conn, [alert])
            for row, _, deadline in items:
                reason = (
                    f"not confirmed by {deadline.isoformat()}: listed to the clinic's staff to "
                    f"phone ({len(items)} in this alert)"
                )
                listed.append(AuditRecord(now, AuditEvent.STAFF_ALERT, reason, row["id"]))
        audit.write(conn, listed)
        return CheckReport(len(claimed), len(by_clinic))
