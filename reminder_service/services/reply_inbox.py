"""The replies patients texted us, for the clinic's staff: listed newest first, and marked handled
by whoever dealt with them.

A reply's clinic is its linked appointment's (the nearest one on the number when it arrived),
else the default clinic's, as its answer was. Free text and requests for a new time wait for a
person; keywords and confirmations were handled by the service itself ("automatic"). The text and
number are shown to staff, who must call back; they are never logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Engine, Select, func, select, update

from ..catalog import Catalog
from ..clock import Clock
from ..domain.audit import AuditEvent, AuditRecord
from ..store import audit
from ..store.engine import reading
from ..store.records import RowData
from ..store.tables import appointments, inbound_messages, patients
from .previewing import NotFound

MAX_LIST = 1000
MAX_ID = 2**31 - 1  # the table's INTEGER key: a larger id is no reply (and no database error)
HANDLED_BY_LENGTH = 100  # inbound_messages.handled_by


@dataclass(frozen=True)
class InboundReply:
    id: int
    received_at: datetime
    phone: str
    body: str
    kind: str  # opt_out, opt_in, help, confirm, new_time, other
    answer: str | None  # the reply we sent back (a template name)
    clinic_id: str
    appointment_id: str | None  # the source system's id
    appointment_start: datetime | None
    patient_id: str | None
    patient_name: str | None
    handled_at: datetime | None
    handled_by: str | None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "received_at": self.received_at.isoformat(),
            "phone": self.phone,
            "body": self.body,
            "kind": self.kind,
            "answer": self.answer,
            "clinic": self.clinic_id,
            "appointment_id": self.appointment_id,
            "appointment_start": (
                self.appointment_start.isoformat() if self.appointment_start else None
            ),
            "patient_id": self.patient_id,
            "patient_name": self.patient_name,
            "handled_at": self.handled_at.isoformat() if self.handled_at else None,
            "handled_by": self.handled_by,
        }


class ReplyInbox:
    def __init__(self, engine: Engine, catalog: Catalog, clock: Clock) -> None:
        self._engine = engine
        self._catalog = catalog
        self._clock = clock

    def _query(self) -> tuple[Select[Any], ColumnElement[Any]]:
        clinic = func.coalesce(appointments.c.clinic_id, self._catalog.clinics.default.id)
        return (
            select(
                inbound_messages,
                clinic.label("clinic_id"),
                appointments.c.external_id.label("appointment_external_id"),
                appointments.c.start_at.label("appointment_start"),
                patients.c.external_id.label("patient_external_id"),
                patients.c.first_name,
                patients.c.last_name,
            )
            .outerjoin(appointments, appointments.c.id == inbound_messages.c.appointment_id)
            .outerjoin(patients, patients.c.id == appointments.c.patient_id)
        ), clinic

    def list(
        self, *, unhandled: bool = False, clinic: str | None = None, limit: int = 100
    ) -> list[InboundReply]:
        """The newest `limit` replies (at most MAX_LIST); only those waiting for a person, or
        only one clinic's, if asked. An unknown clinic is the caller's to refuse."""
        query, clinic_column = self._query()
        if unhandled:
            query = query.where(inbound_messages.c.handled_at.is_(None))
        if clinic is not None:
            query = query.where(clinic_column == clinic)
        query = query.order_by(
            inbound_messages.c.received_at.desc(), inbound_messages.c.id.desc()
        ).limit(max(1, min(limit, MAX_LIST)))
        with reading(self._engine) as conn:
            return [_reply(row) for row in conn.execute(query).mappings()]

    def mark_handled(self, reply_id: int, by: str) -> tuple[InboundReply, bool]:
        """Mark a reply handled by `by`, now; the reply, and False if it was handled already (the
        first who and when stay). Raises NotFound."""
        if not 0 < reply_id <= MAX_ID:
            raise NotFound(f"no reply with id {reply_id}")
        now = self._clock()
        by = who(by)
        query, _ = self._query()
        with self._engine.begin() as conn:
            done = conn.execute(
                update(inbound_messages)
                .where(inbound_messages.c.id == reply_id)
                .where(inbound_messages.c.handled_at.is_(None))
                .values(handled_at=now, handled_by=by)
            )
            row = conn.execute(query.where(inbound_messages.c.id == reply_id)).mappings().first()
            if row is None:
                raise NotFound(f"no reply with id {reply_id}")
            if done.rowcount:
                reason = f"reply {reply_id} handled by {by}"
                handled = AuditRecord(now, AuditEvent.REPLY_HANDLED, reason, row["appointment_id"])
                audit.write(conn, [handled])
        return _reply(row), bool(done.rowcount)


def who(by: str) -> str:
    """A name for the handled_by and confirmed_by columns: no NUL (PostgreSQL stores none), at
    most their length."""
    return by.replace("\x00", "").strip()[:HANDLED_BY_LENGTH] or "staff"


def _reply(row: RowData) -> InboundReply:
    name = None
    if row["patient_external_id"] is not None:
        name = f"{row['first_name']} {row['last_name']}".strip()
    return InboundReply(
        id=row["id"],
        received_at=row["received_at"],
        phone=row["phone"],
        body=row["body"],
        kind=row["kind"],
        answer=row["answer"],
        clinic_id=row["clinic_id"],
        appointment_id=row["appointment_external_id"],
        appointment_start=row["appointment_start"],
        patient_id=row["patient_external_id"],
        patient_name=name,
        handled_at=row["handled_at"],
        handled_by=row["handled_by"],
    )
