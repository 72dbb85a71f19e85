"""The channel port: send one message, get a receipt, or raise ChannelError."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol


@dataclass(frozen=True, slots=True)
class OutgoingSms:
    reminder_id: int
    appointment_id: str  # the source system's id
    step: str
    to: str  # E.164
    body: str
    sent_at: datetime


@dataclass(frozen=True, slots=True)
class OutgoingEmail:
    reminder_id: int
    appointment_id: str
    step: str
    to: str
    from_name: str
    subject: str
    text: str
    html: str
    message_id: str  # deterministic, so a resend after a crash is recognisably the same message
    sent_at: datetime


@dataclass(frozen=True, slots=True)
class Receipt:
    provider_id: str


class ChannelError(Exception):
    """A send that did not happen. Permanent failures are never retried."""

    def __init__(self, message: str, *, permanent: bool, code: str | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.code = code


class SmsChannel(Protocol):
    def send_sms(self, message: OutgoingSms) -> Receipt: ...


class EmailChannel(Protocol):
    def send_email(self, message: OutgoingEmail) -> Receipt: ...
