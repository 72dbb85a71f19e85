"""The replies patients texted us, for the clinic's staff: listed newest first, and marked handled
by whoever dealt with them.

A reply's clinic is its linked appointment's (the nearest one on the number when it arrived),
else the default clinic's, as its answer was. Free text and requests for a new time wait for a
person; keywords and confirmations were handled by the service itself ("automatic"). The text and
number are shown to staff, who must call back; they are never logged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..catalog import Catalog
from ..clock import Clock
from ..domain.audit import AuditEvent, AuditRecord
from ..store import audit, replies
from ..store.replies import InboundReply
from .previewing import NotFound
from .reply_limits import MAX_LIST

if TYPE_CHECKING:
    from sqlalchemy import Engine

__all__ = ["MAX_LIST", "InboundReply", "ReplyInbox", "who"]

MAX_ID = 2**31 - 1  # the table's INTEGER key: a larger id is no reply (and no database error)
HANDLED_BY_LENGTH = 100  # inbound_messages.handled_by


class ReplyInbox:
    def __init__(self, engine: Engine, catalog: Catalog, clock: Clock) -> None:
        self._engine = engine
        self._catalog = catalog
        self._clock = clock

    def list(
        self, *, unhandled: bool = False, clinic: str | None = None, limit: int = 100
    ) -> list[InboundReply]:
        """The newest `limit` replies (at most MAX_LIST); only those waiting for a person, or
        only one clinic's, if asked. An unknown clinic is the caller's to refuse."""
        return replies.inbox(
            self._engine,
            self._catalog.clinics.default.id,
            unhandled=unhandled,
            clinic=clinic,
            limit=max(1, min(limit, MAX_LIST)),
        )

    def mark_handled(self, reply_id: int, by: str) -> tuple[InboundReply, bool]:
        """Mark a reply handled by `by`, now; the reply, and False if it was handled already (the
        first who and when stay). Raises NotFound."""
        if not 0 < reply_id <= MAX_ID:
            raise NotFound(f"no reply with id {reply_id}")
        now = self._clock()
        by = who(by)
        with self._engine.begin() as conn:
            done = replies.mark_handled(conn, reply_id, now, by)
            found = replies.find(conn, self._catalog.clinics.default.id, reply_id)
            if found is None:
                raise NotFound(f"no reply with id {reply_id}")
            reply, appointment_id = found
            if done:
                reason = f"reply {reply_id} handled by {by}"
                handled = AuditRecord(now, AuditEvent.REPLY_HANDLED, reason, appointment_id)
                audit.write(conn, [handled])
        return reply, done


def who(by: str) -> str:
    """A name for the handled_by and confirmed_by columns: no NUL (PostgreSQL stores none), at
    most their length."""
    return by.replace("\x00", "").strip()[:HANDLED_BY_LENGTH] or "staff"
