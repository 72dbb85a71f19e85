"""The channel port: send one message, get a receipt, or raise ChannelError with the facts.

Sends are coroutines, so one process keeps hundreds in flight and a slow one holds up no other.
A channel reports what happened (an HTTP status, a provider error code, an SMTP reply, a
timeout); whether that is permanent is decided in one place, the failure table in
`config/delivery_failures.yaml` (see `failures.py`), not in each adapter.

An SMS provider that can be asked what it accepted (Twilio's Message list) is also an
`SmsLookup`: after an attempt whose outcome is unknown, the dispatcher asks before sending again.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from ..domain.failures import Failure


@dataclass(frozen=True, slots=True)
class OutgoingSms:
    reminder_id: int
    appointment_id: str  # the source system's id
    step: str
    to: str  # E.164
    body: str
    sent_at: datetime
    status_callback: str | None = None  # the URL the provider reports delivery status to
    sender: SmsSender | None = None  # the clinic's own; None: the channel's configured one


@dataclass(frozen=True, slots=True)
class SmsSender:
    """Who a text comes from: a number (E.164) or a Twilio Messaging Service; exactly one."""

    from_number: str = ""
    messaging_service_sid: str = ""

    @property
    def key(self) -> str:
        """What the provider's rate limit is counted against."""
        return self.messaging_service_sid or self.from_number


@dataclass(frozen=True, slots=True)
class CalendarEvent:
    """An appointment as a calendar entry (.ics). The UID is the same for every version of one
    appointment, and the sequence grows with each, so a calendar updates the entry it has."""

    uid: str
    sequence: int
    start: datetime  # aware
    end: datetime
    summary: str  # generic: no procedure name
    location: str
    organizer: str  # an email address: the From of the email it comes with
    cancelled: bool = False  # METHOD:CANCEL: the calendar removes the entry
    organizer_name: str = ""  # the clinic's name
    attendee: str = ""  # the patient's email address
    attendee_name: str = ""


@dataclass(frozen=True, slots=True)
class ListUnsubscribe:
    """How a patient stops these emails from their mail client (RFC 2369, RFC 8058): a mailto,
    and, when the service has a public https URL, a one-click URL taking an empty POST."""

    mailto: str  # "mailto:..." with its query
    one_click: str = ""  # "https://.../unsubscribe/<token>"


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
    calendar: CalendarEvent | None = None
    from_address: str = ""  # the clinic's sender; "" for the channel's configured one
    unsubscribe: ListUnsubscribe | None = None  # patient emails only, never staff alerts


@dataclass(frozen=True, slots=True)
class Receipt:
    provider_id: str


class ChannelError(Exception):
    """A send that did not happen (or, after a timeout, may not have)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.describe())
        self.failure = failure


class SmsChannel(Protocol):
    async def send_sms(self, message: OutgoingSms) -> Receipt: ...

    async def aclose(self) -> None: ...


def body_sha256(body: str) -> str:
    """How an SMS body is remembered between an attempt and the question about it."""
    return hashlib.sha256(body.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class SentQuery:
    """An attempt whose outcome is unknown: a text to `to` whose body hashes to `body_sha256`,
    first tried at `since` (our clock)."""

    to: str
    body_sha256: str
    since: datetime


@dataclass(frozen=True, slots=True)
class AcceptedSms:
    """A message the provider reports having accepted."""

    provider: str
    provider_id: str
    accepted_at: datetime | None  # the provider's creation time
    status: str  # where it is now: queued, sent, delivered, undelivered, failed...
    error_code: str | None = None


class SmsLookup(Protocol):
    async def find_accepted(self, query: SentQuery) -> list[AcceptedSms]:
        """The messages from our sender matching `query`, oldest first; raises ChannelError when
        the provider cannot be asked (then nothing may be sent)."""
        ...


class EmailChannel(Protocol):
    async def send_email(self, message: OutgoingEmail) -> Receipt: ...

    async def aclose(self) -> None: ...
