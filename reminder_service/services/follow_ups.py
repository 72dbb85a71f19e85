"""What happens after a message cannot be delivered: another channel, or a person.

When an SMS fails for good (a permanent error, retries used up, an opted-out number, or the
provider reports it undelivered), the step goes by email if the patient has an address, the
step allows it (`email_fallback`, on by default) and no email of that step is already on its
way. When no channel of a step reached the patient, the clinic's staff address gets one alert
email naming the appointment, the step and the reason, never the message.

Follow-ups are rows in the reminders table like any other, so they are sent, retried and
audited the same way, and a crash loses none of them.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..catalog import Catalog
from ..domain.audit import AuditEvent, AuditRecord
from ..domain.clinic import Clinic
from ..domain.planning import Recipient, ReminderStatus
from ..domain.protocol import Channel
from ..domain.timing import zone
from ..store import audit, staff_alerts
from ..store.records import RowData
from ..store.staff_alerts import StepRow
from ..store.tables import STAFF_CHANNEL

if TYPE_CHECKING:
    from sqlalchemy import Connection

log = logging.getLogger(__name__)

STAFF_TEMPLATE = "staff_alert"  # templates/_staff/<language>/<template>.*: a channel failed
NEW_TIME_TEMPLATE = "new_time_request"  # the patient replied 2
UNCONFIRMED_TEMPLATE = "unconfirmed"  # appointments not confirmed by their deadline, to phone
UNDELIVERED = frozenset({"undelivered", "failed", "bounced"})  # "bounced": an email (DSN)
ON_ITS_WAY = frozenset({ReminderStatus.PENDING.value, ReminderStatus.SENDING.value})


class FollowUps:
    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog

    def after_undeliverable(
        self, conn: Connection, failed: list[tuple[RowData, str]], now: datetime
    ) -> None:
        """Plan the fallback email or the staff alert for each reminder (with the reason it
        failed) that will not arrive."""
        # A caregiver's copy that fails is not followed up: the patient's own rows of the step
        # are (the copy is a courtesy, and the caregiver has no email channel here).
        failed = [
            (r, why)
            for r, why in failed
            if r["channel"] != STAFF_CHANNEL and r["recipient"] != Recipient.CAREGIVER.value
        ]
        if not failed:
            return
        ids = {r["appointment_id"] for r, _ in failed}
        siblings = staff_alerts.steps_of(conn, ids)
        booked = staff_alerts.booked_contacts(conn, ids)
        new_rows: list[dict[str, Any]] = []
        alerted: list[AuditRecord] = []
        for row, why in failed:
            if row["appointment_id"] not in booked:
                continue  # cancelled since: nobody needs the message any more
            email, protocol_id = booked[row["appointment_id"]]
            key = (row["appointment_id"], row["step_id"], row["nominal_at"])
            others = [s for s in siblings[key] if s.id != row["id"]]
            follow_up = self._follow_up(row, why, others, email, protocol_id, now)
            if follow_up is None:
                continue
            # One follow-up per step.
            siblings[key].append(StepRow(None, follow_up["channel"], follow_up["status"], None))
            new_rows.append(follow_up)
            if follow_up["channel"] == STAFF_CHANNEL:
                alerted.append(_alert_audit(row, follow_up["reason"], now))
        staff_alerts.add(conn, new_rows)
        audit.write(conn, alerted)

    def _follow_up(
        self,
        row: RowData,
        why: str,
        others: list[StepRow],
        email: str | None,
        protocol_id: str | None,
        now: datetime,
    ) -> dict[str, Any] | None:
        if any(_reaches_patient(s) for s in others):
            return None  # another channel of this step is sent or on its way
        if any(s.channel == STAFF_CHANNEL for s in others):
            return None  # staff already told
        has_email_row = any(s.channel == Channel.EMAIL.value for s in others)
        if (
            row["channel"] == Channel.SMS.value
            and email
            and not has_email_row
            and self._fallback_allowed(protocol_id, row["step_id"])
        ):
            return _fallback_email(row, now)
        failures = [f"{row['channel']}: {why}"]
        failures += [f"{s.channel}: {_why(s)}" for s in others if s.channel != STAFF_CHANNEL]
        reason = f"{row['step_id']}: no channel reached the patient ({'; '.join(sorted(failures))})"
        return staff_alert_row(
            row["appointment_id"], row["appointment_version"], row["step_id"], reason, now,
            nominal_at=row["nominal_at"], fallback_for=row["id"],
        )  # fmt: skip

    def _fallback_allowed(self, protocol_id: str | None, step_id: str) -> bool:
        protocol = self._catalog.protocol_or_none(protocol_id)
        step = protocol.step_or_none(step_id) if protocol else None
        return step.email_fallback if step is not None else True


def _why(row: StepRow) -> str:
    if row.delivery_status in UNDELIVERED:
        code = f" (error {row.delivery_error})" if row.delivery_error else ""
        return f"provider reports {row.delivery_status}{code}"
    return str(row.reason)


def _reaches_patient(row: StepRow) -> bool:
    if row.channel == STAFF_CHANNEL:
        return False
    if row.status in ON_ITS_WAY:
        return True
    return row.status == ReminderStatus.SENT.value and row.delivery_status not in UNDELIVERED


def _fallback_email(failed: RowData, now: datetime) -> dict[str, Any]:
    """The step by email, standing in for its failed SMS: same template and deadline, due now."""
    return {
        "appointment_id": failed["appointment_id"],
        "appointment_version": failed["appointment_version"],
        "import_id": None,
        "step_id": failed["step_id"],
        "channel": Channel.EMAIL.value,
        "template": failed["template"],
        "nominal_at": failed["nominal_at"],
        "due_at": now,
        "not_after": failed["not_after"],
        "status": ReminderStatus.PENDING.value,
        "reason": "fallback: the SMS could not be delivered",
        "attempts": 0,
        "fallback_for": failed["id"],
        "alert": None,
        "created_at": now,
        "updated_at": now,
    }


def staff_alert_row(
    appointment_id: int,
    appointment_version: int,
    step_id: str,
    alert: str,
    now: datetime,
    *,
    nominal_at: datetime | None = None,
    fallback_for: int | None = None,
    import_id: int | None = None,
    template: str = STAFF_TEMPLATE,
) -> dict[str, Any]:
    """A reminder row that emails the clinic's staff `alert` (it names the appointment and the
    reason, never a message), due now and with no deadline, worded by `template`. The one way
    alerts are made."""
    return {
        "appointment_id": appointment_id,
        "appointment_version": appointment_version,
        "import_id": import_id,
        "step_id": step_id,
        "channel": STAFF_CHANNEL,
        "template": template,
        "nominal_at": nominal_at or now,
        "due_at": now,
        "not_after": None,
        "status": ReminderStatus.PENDING.value,
        "reason": "staff alert",
        "attempts": 0,
        "fallback_for": fallback_for,
        "alert": alert,
        "created_at": now,
        "updated_at": now,
    }


def staff_time(moment: datetime, clinic: Clinic) -> str:
    """A moment as staff alerts write it: in the clinic's zone, with the zone's abbreviation."""
    local = moment.astimezone(zone(clinic.timezone))
    return f"{local:%a %d %b %Y %H:%M} {local.tzname()}"


def _alert_audit(row: RowData, reason: str, now: datetime) -> AuditRecord:
    return AuditRecord(now, AuditEvent.STAFF_ALERT, reason, row["appointment_id"], row["id"])
