"""List-Unsubscribe for patient emails: which links an email carries, and the tokens in them.

A token names a patient and the address the email went to, with an HMAC made with
REMINDER_UNSUBSCRIBE_SECRET:

    https://reminders.clinic.example/unsubscribe/1234-9f3a0c1d2e4b5a6978877665
    mailto:bounces+u1234-9f3a0c1d2e4b5a6978877665@mail.clinic.example?subject=unsubscribe

Nothing is stored when an email is sent, no address appears in a link (URLs end up in proxy
logs), and a guessed patient id gets nowhere without the secret (96 bits of MAC). A token
stops working when the patient's address on record changes: reminders no longer go to the old
one. Hex only, so a mail system that lower-cases local parts keeps the mailto tag intact.

Which links:
- one-click (RFC 8058) only with the secret and an https REMINDER_PUBLIC_URL: RFC 8058 asks for
  an https URI, and the POST it takes needs no login, so the token is the only proof;
- the mailto goes to the bounce listener, which honours it at once, when that listener reads
  mail (SMTP_BOUNCE_ADDRESS) and the secret is set; otherwise to REMINDER_UNSUBSCRIBE_MAILBOX,
  or the clinic's From address, where staff read it and run `reminder-service opt-out --email`.

Pure: no network, no database.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from urllib.parse import quote

# Re-exported: senders look the key up here too.
from ..domain.opt_outs import opt_out_key
from .base import ListUnsubscribe
from .bounces import BounceAddress

MAC_HEX = 24  # 96 bits
_TOKEN = re.compile(rf"([1-9]\d{{0,9}})-([0-9a-f]{{{MAC_HEX}}})")
MAX_ID = 2**31 - 1  # the patients table's INTEGER key: a larger one is no patient of ours
MAX_LOCAL_PART = 64  # RFC 5321 4.5.3.1.1
SUBJECT = "unsubscribe"


@dataclass(frozen=True, slots=True)
class Token:
    patient_id: int
    mac: str


@dataclass(frozen=True, slots=True)
class UnsubscribeTokens:
    secret: bytes  # REMINDER_UNSUBSCRIBE_SECRET

    def token(self, patient_id: int, address: str) -> str:
        return f"{patient_id}-{self._mac(patient_id, address)}"

    @staticmethod
    def read(text: str) -> Token | None:
        """The parts of a well-formed token, or None (garbage, not a token of any secret)."""
        match = _TOKEN.fullmatch(text.strip().lower())
        if match is None or int(match[1]) > MAX_ID:
            return None
        return Token(int(match[1]), match[2])

    def verify(self, token: Token, address: str) -> bool:
        """Whether the token was made here for this patient and this address."""
        return hmac.compare_digest(token.mac, self._mac(token.patient_id, address))

    def _mac(self, patient_id: int, address: str) -> str:
        message = f"unsubscribe {patient_id} {opt_out_key(address)}".encode()
        return hmac.new(self.secret, message, hashlib.sha256).hexdigest()[:MAC_HEX]


@dataclass(frozen=True, slots=True)
class UnsubscribeLinks:
    """The List-Unsubscribe of each patient email (see the module docstring for which links)."""

    tokens: UnsubscribeTokens | None
    public_url: str = ""  # https only: one-click links are offered under it
    inbound: BounceAddress | None = None  # the bounce listener's address, when it reads mail
    mailbox: str = ""  # REMINDER_UNSUBSCRIBE_MAILBOX: read by staff

    def for_patient(self, patient_id: int, address: str, from_address: str) -> ListUnsubscribe:
        token = self.tokens.token(patient_id, address) if self.tokens else ""
        one_click = ""
        if token and self.public_url.startswith("https://"):
            one_click = f"{self.public_url.rstrip('/')}/unsubscribe/{token}"
        return ListUnsubscribe(mailto=self._mailto(token, from_address), one_click=one_click)

    def token_in(self, recipient: str) -> str | None:
        """The token an envelope recipient of the bounce listener carries (local+u<token>),
        well-formed but not yet verified; None when it carries none."""
        if self.inbound is None or self.tokens is None:
            return None
        local, _, domain = recipient.strip().strip("<>").rpartition("@")
        base_local, _, base_domain = self.inbound.address.rpartition("@")
        prefix = f"{base_local}+u".lower()
        if domain.lower() != base_domain.lower() or not local.lower().startswith(prefix):
            return None
        token = local[len(prefix) :].lower()
        return token if self.tokens.read(token) is not None else None

    def _mailto(self, token: str, from_address: str) -> str:
        if token and self.inbound is not None:
            local, _, domain = self.inbound.address.rpartition("@")
            tagged = f"{local}+u{token}"
            if len(tagged) <= MAX_LOCAL_PART:
                return f"mailto:{tagged}@{domain}?subject={SUBJECT}"
        # RFC 6068: an address with non-ASCII characters is percent-encoded as UTF-8.
        return f"mailto:{quote(self.mailbox or from_address, safe='@+')}?subject={SUBJECT}"
