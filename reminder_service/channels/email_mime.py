"""The MIME form of an outgoing email, shared by the outbox and SMTP channels.

multipart/alternative (plain text, then HTML); with a calendar entry, the whole is wrapped in
multipart/mixed with the .ics attached (see `calendar_invite.py`).
"""

from __future__ import annotations

from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from .base import OutgoingEmail
from .calendar_invite import build_invite, invite_method

INVITE_FILENAME = "invite.ics"


def build_mime(message: OutgoingEmail, from_address: str) -> EmailMessage:
    mime = EmailMessage()
    user, _, domain = from_address.partition("@")
    mime["From"] = Address(message.from_name, user, domain)
    mime["To"] = message.to
    mime["Subject"] = message.subject
    mime["Date"] = format_datetime(message.sent_at)
    mime["Message-ID"] = message.message_id
    mime["X-Reminder-Id"] = str(message.reminder_id)
    mime.set_content(message.text)
    mime.add_alternative(message.html, subtype="html")
    if message.calendar is not None:
        mime.make_mixed()  # the alternative becomes the first part of a multipart/mixed
        mime.add_attachment(
            build_invite(message.calendar, message.sent_at).decode("utf-8"),
            subtype="calendar",
            filename=INVITE_FILENAME,
            params={"method": invite_method(message.calendar)},
        )
    return mime
