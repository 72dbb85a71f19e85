"""Staff hear at once of a critical step that can reach no one, when an opt-out makes it so.

An import checks each appointment as it arrives (importing). A patient who later replies STOP
may be left with no channel for a critical step still to come (no email address): the clinic's
staff are alerted then, while there is time to phone, not on the day the text was due. Each
(appointment, alert) is raised once.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from ..catalog import Catalog
from ..domain.audit import AuditEvent, AuditRecord
from ..domain.planning import Recipient, ReminderStatus
from ..domain.reachability import CRITICAL_UNREACHABLE, unreachable_critical_steps
from ..store import appointments, audit, records, staff_alerts
from .follow_ups import staff_alert_row
from .patient_texts import plan_as_stored

if TYPE_CHECKING:
    from sqlalchemy import Connection

# An appointment may last this long at most: those that started earlier are over.
LONGEST_VISIT = timedelta(days=1)


def unreachable_alert(step_id: str, why: str) -> str:
    """The words of a staff alert for a critical step that reaches no one."""
    return f"{step_id}: {CRITICAL_UNREACHABLE} ({why})"


def alert_after_opt_out(conn: Connection, catalog: Catalog, phone: str, now: datetime) -> int:
    """Alert staff of each critical step still to come that the opted-out `phone` leaves with
    no channel, for every booked appointment of a patient with that mobile; returns how many."""
    rows = appointments.booked_on_mobile(conn, phone, since=now - LONGEST_VISIT)
    told = staff_alerts.told(conn, [row["id"] for row in rows])
    alerts: list[dict[str, Any]] = []
    for row in rows:
        appointment = records.appointment_from_row(row, records.patient_of(row))
        protocol = catalog.protocol_or_none(row["protocol_id"])
        clinic = catalog.clinics.get(appointment.clinic_id)
        if protocol is None or clinic is None or appointment.end <= now:
            continue
        planned = plan_as_stored(appointment, row, protocol, clinic)
        to_come = {
            p.step_id
            for p in planned
            if p.due_at > now
            and p.recipient is Recipient.PATIENT
            and p.status is ReminderStatus.PENDING
        }
        blocked = unreachable_critical_steps(appointment, protocol, row["scheduled_at"], True)
        for step_id, why in blocked:
            alert = unreachable_alert(step_id, why)
            if step_id in to_come and (row["id"], alert) not in told:
                alerts.append(staff_alert_row(row["id"], row["version"], step_id, alert, now))
    if alerts:
        staff_alerts.add(conn, alerts)
        audit.write(
            conn,
            [
                AuditRecord(now, AuditEvent.STAFF_ALERT, a["alert"], a["appointment_id"])
                for a in alerts
            ],
        )
    return len(alerts)
