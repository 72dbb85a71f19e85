"""Email opt-outs: a patient unsubscribed, so no more reminder emails go to that address.

Honoured like an SMS STOP: the dispatcher reads the list just before each email is sent, so
emails already planned, or claimed a moment earlier, do not go either. Texts to the patient go
on. The list holds addresses, not patients: an address shared by two patients (a caregiver's)
is the address's owner's to stop.

Ways onto the list: the one-click link (RFC 8058, `POST /unsubscribe/<token>`), an email to the
List-Unsubscribe mailto when the bounce listener reads it, and `reminder-service opt-out
--email` for staff answering an unsubscribe email by hand.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from typing import TYPE_CHECKING

from ..channels.unsubscribe import UnsubscribeTokens
from ..clock import Clock
from ..store import opt_outs, patients

if TYPE_CHECKING:
    from sqlalchemy import Engine

log = logging.getLogger(__name__)

ONE_CLICK = "one-click link"
UNSUBSCRIBE_EMAIL = "unsubscribe email"
STAFF = "staff"


class TokenCheck(StrEnum):
    VALID = "valid"  # made here, for the patient's current address
    MALFORMED = "malformed"  # not a token at all
    UNKNOWN = "unknown"  # well-formed, but not ours, or for an address no longer on record
    DISABLED = "disabled"  # no REMINDER_UNSUBSCRIBE_SECRET: no token can be checked


class EmailOptOuts:
    def __init__(self, engine: Engine, tokens: UnsubscribeTokens | None, clock: Clock) -> None:
        self._engine = engine
        self._tokens = tokens
        self._clock = clock

    def check(self, token: str) -> TokenCheck:
        """What a token is, without changing anything (a link scanner's GET)."""
        return self._resolve(token)[0]

    def unsubscribe(self, token: str, source: str = ONE_CLICK) -> TokenCheck:
        """Opt out the address a valid token names (again is fine: nothing changes)."""
        check, address = self._resolve(token)
        if check is TokenCheck.VALID:
            assert address is not None
            self.opt_out(address, source)
        return check

    def opt_out(self, address: str, source: str = STAFF) -> bool:
        """Put an address on the list; False when it already was."""
        added = opt_outs.record_email(self._engine, address, self._clock(), source)
        if added:
            log.info("an email address opted out (%s)", source)
        return added

    def opt_in(self, address: str) -> bool:
        """Take an address off the list (staff, when the patient asks again); False if absent."""
        with self._engine.begin() as conn:
            return opt_outs.remove_email(conn, address)

    def _resolve(self, token: str) -> tuple[TokenCheck, str | None]:
        if self._tokens is None:
            return TokenCheck.DISABLED, None
        parsed = UnsubscribeTokens.read(token)
        if parsed is None:
            return TokenCheck.MALFORMED, None
        address = patients.email_of(self._engine, parsed.patient_id)
        if not address or not self._tokens.verify(parsed, address):
            return TokenCheck.UNKNOWN, None
        return TokenCheck.VALID, address
