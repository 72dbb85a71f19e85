"""Bounces: emails that a mail server accepted and later could not deliver.

An SMTP server's 250 only means it took the message; a mailbox that does not exist is often
found out later, and reported by a delivery status notification (DSN, RFC 3464) sent to the
envelope sender. So each email goes out with its own envelope sender (VERP):

    SMTP_BOUNCE_ADDRESS  bounces@mail.clinic.example
    envelope sender      bounces+r1234-9f3a0c1d2e@mail.clinic.example

The tag names the reminder and carries an HMAC (REMINDER_BOUNCE_SECRET), so a bounce is tied
to the email it is about by where it was delivered, which only the mail system knows, and a
forged bounce for a guessed reminder id is ignored. The DSN itself says what happened: per
recipient an Action (failed, delayed, delivered...) and a Status (5.1.1: no such mailbox).

Pure: no network, no database.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import Message

from ..settings import SmtpSettings

_TAG = re.compile(r"r(\d{1,18})-([0-9a-f]{10})")
_STATUS = re.compile(r"[245]\.\d{1,3}\.\d{1,3}")


@dataclass(frozen=True, slots=True)
class BounceAddress:
    """The envelope sender of each email, and the way back from a bounce to its reminder."""

    address: str  # SMTP_BOUNCE_ADDRESS: local@domain, delivered to the bounce listener
    secret: bytes  # REMINDER_BOUNCE_SECRET

    def for_reminder(self, reminder_id: int) -> str:
        local, domain = self.address.rsplit("@", 1)
        return f"{local}+r{reminder_id}-{self._mac(reminder_id)}@{domain}"

    def reminder_of(self, recipient: str) -> int | None:
        """The reminder an envelope recipient names, or None (not ours, or a forged tag)."""
        local, _, domain = recipient.strip().strip("<>").rpartition("@")
        base_local, _, base_domain = self.address.rpartition("@")
        prefix = f"{base_local}+".lower()
        if domain.lower() != base_domain.lower() or not local.lower().startswith(prefix):
            return None
        match = _TAG.fullmatch(local[len(prefix) :].lower())
        if match is None:
            return None
        reminder_id = int(match[1])
        if not hmac.compare_digest(match[2], self._mac(reminder_id)):
            return None
        return reminder_id

    def _mac(self, reminder_id: int) -> str:
        digest = hmac.new(self.secret, f"reminder {reminder_id}".encode(), hashlib.sha256)
        return digest.hexdigest()[:10]


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """One recipient's outcome in a DSN. Never logged with the recipient."""

    action: str  # failed, delayed, delivered, relayed, expanded
    status: str  # "5.1.1"; "" when the report gave none
    recipient: str  # Final-Recipient (or Original-Recipient), without the "rfc822;" type

    @property
    def permanent(self) -> bool:
        return self.action == "failed" and (self.status.startswith("5") or not self.status)


def read_dsn(raw: bytes) -> list[DeliveryReport] | None:
    """The per-recipient reports of a DSN, or None when the message is not one (an
    out-of-office reply, a challenge, spam): those are not bounces and change nothing."""
    message = message_from_bytes(raw, policy=policy.compat32)
    if message.get_content_type() != "multipart/report":
        return None
    if str(message.get_param("report-type") or "").lower() != "delivery-status":
        return None
    for part in message.walk():
        if part.get_content_type() == "message/delivery-status":
            return _reports(part)
    return None


def _reports(part: Message) -> list[DeliveryReport]:
    """The per-recipient field groups of a message/delivery-status part. The email package
    parses such a part into one header block per group; the first is about the message as a
    whole."""
    payload = part.get_payload()
    blocks = [b for b in payload if isinstance(b, Message)] if isinstance(payload, list) else []
    groups = [{k.lower(): str(v) for k, v in block.items()} for block in blocks]
    reports = []
    for fields in groups[1:] if len(groups) > 1 else groups:
        action = fields.get("action", "").strip().lower()
        if not action:
            continue
        status = _STATUS.search(fields.get("status", ""))
        recipient = fields.get("final-recipient") or fields.get("original-recipient") or ""
        reports.append(
            DeliveryReport(
                action=action,
                status=status.group(0) if status else "",
                recipient=recipient.split(";", 1)[-1].strip(),
            )
        )
    return reports


def bounce_address(smtp: SmtpSettings | None) -> BounceAddress | None:
    """How each email's envelope sender names it, when bounces are read."""
    if smtp is None or not smtp.bounce_address:
        return None
    return BounceAddress(smtp.bounce_address, smtp.bounce_secret.encode())
