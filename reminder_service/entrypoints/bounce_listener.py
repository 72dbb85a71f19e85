"""The bounce listener: an SMTP server (aiosmtpd) that takes the mail sent to SMTP_BOUNCE_ADDRESS.

Point the bounce address's domain (its MX, or a route on the clinic's relay) here. Every
message is accepted once it is read (250), whether or not it is a bounce we know, so nothing is
ever bounced back to a mail daemon; only when it cannot be recorded (the database is down) does
the listener answer 451, and the sending server tries again later. Messages over 1 MiB are
refused (a DSN is a few kilobytes).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from .listening import Listener

log = logging.getLogger(__name__)

MAX_MESSAGE = 1024 * 1024

# (envelope recipients, raw message) -> outcome; runs in a worker thread (it writes to the database)
Receiver = Callable[[list[str], bytes], str]


class _Handler:
    def __init__(self, receive: Receiver) -> None:
        self._receive = receive

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        try:
            outcome = await asyncio.to_thread(self._receive, list(envelope.rcpt_tos), raw)
        except Exception:
            log.exception("bounce listener: could not record a message; the sender will retry")
            return "451 4.3.0 Cannot record it now; try again later"
        log.info("bounce listener: %s", outcome)
        return "250 2.0.0 OK"


class BounceListener(Listener):
    name = "bounce listener"

    def __init__(self, receive: Receiver, host: str = "127.0.0.1", port: int = 2525) -> None:
        super().__init__(host, port)
        self._handler = _Handler(receive)

    async def _listen(self, host: str, port: int) -> asyncio.Server:
        # aiosmtpd logs each envelope's addresses at INFO; ours say what happened, without them.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        return await asyncio.get_running_loop().create_server(self._protocol, host, port)

    def _protocol(self) -> Any:
        return SMTP(self._handler, data_size_limit=MAX_MESSAGE, enable_SMTPUTF8=True)
