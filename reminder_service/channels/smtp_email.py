"""Email through an SMTP server (aiosmtplib), over a small pool of reused connections.

- Up to `SMTP_CONNECTIONS` sessions stay open; each carries one message at a time, and a send
  waits for a free one. Opening a session (TCP, TLS, EHLO, AUTH) costs several round trips, so
  reuse is what makes bulk sending fast.
- A server may close a session while it sits idle. Before reusing one, the channel checks that
  the server has not closed it; and if the server drops it before any of the message went out
  (at MAIL or RCPT), the send moves to a new session. Once DATA has started, a lost connection
  is reported instead: the server may have accepted the message, and sending it again could
  deliver it twice. Email cannot be asked, so the retry goes, with the same Message-ID (one per
  reminder and appointment version): a mail client that keeps one message per Message-ID shows
  the two deliveries as one.
- `starttls` never sends in clear: a server that does not offer STARTTLS is a failure.
  Certificates are always verified (SMTP_CA_FILE adds a private CA).
- Failures are facts (the reply code, a timeout, a lost connection); whether they are
  permanent is for the failure table. Details never quote the server's text, which often
  repeats the recipient's address, only its enhanced status code (e.g. 5.1.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import select
import socket
import ssl
from dataclasses import dataclass, field

from aiosmtplib import (
    SMTP,
    SMTPAuthenticationError,
    SMTPConnectResponseError,
    SMTPDataError,
    SMTPException,
    SMTPHeloError,
    SMTPNotSupported,
    SMTPRecipientRefused,
    SMTPResponseException,
    SMTPSenderRefused,
    SMTPServerDisconnected,
    SMTPTimeoutError,
)
from aiosmtplib.email import parse_address

from ..domain.failures import Failure, FailureKind
from ..settings import SmtpSettings
from .base import ChannelError, OutgoingEmail, Receipt
from .bounces import bounce_address
from .email_mime import render_mime

log = logging.getLogger(__name__)

PROVIDER = "smtp"
SERVICE_CLOSING = 421  # "service not available, closing transmission channel"
_ENHANCED_STATUS = re.compile(r"^\s*([245]\.\d{1,3}\.\d{1,3})\b")
# Queue ids as Postfix ("queued as 4C2F61C0A2") and Exim ("id=1tXyz-000abc-12") report them.
_QUEUE_ID = re.compile(r"(?:queued as|\bid=)\s*([A-Za-z0-9][A-Za-z0-9._-]{3,63})", re.IGNORECASE)


class _Refused(Exception):
    """A condition the channel itself refuses to send under (never carries patient data)."""

    def __init__(self, kind: FailureKind, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


class _InDoubt(Exception):
    """The connection failed after DATA began: the server may have accepted the message."""

    def __init__(self, cause: SMTPServerDisconnected | SMTPTimeoutError) -> None:
        super().__init__(type(cause).__name__)
        self.timed_out = isinstance(cause, SMTPTimeoutError)


@dataclass
class _Pool:
    """The sessions of one event loop: aiosmtplib connections belong to the loop that made them."""

    loop: asyncio.AbstractEventLoop
    slots: asyncio.Semaphore  # one per connection: bounds sends in flight and sessions open
    idle: list[SMTP] = field(default_factory=list)


class SmtpEmailChannel:
    def __init__(self, settings: SmtpSettings) -> None:
        # No I/O and no loop objects here: the channel is built before the delivery loop runs.
        self._settings = settings
        self._bounces = bounce_address(settings)
        self._pool_state: _Pool | None = None
        self._tls: ssl.SSLContext | None = None
        self._local_hostname: str | None = None

    async def send_email(self, message: OutgoingEmail) -> Receipt:
        pool = self._pool()
        async with pool.slots:
            try:
                # Written once a slot is free: with many sends waiting, writing them all first
                # would leave the server idle; this way one is written while others are sent.
                data = _render(message, self._settings.from_)
                # The envelope sender: bounces go there. Without a bounce address, the From
                # (the clinic's own when it has one), so SPF and the From agree for DMARC.
                sender = (
                    self._bounces.for_reminder(message.reminder_id)
                    if self._bounces
                    else message.from_address or self._settings.from_
                )
                reply = await self._send_pooled(pool, data, sender, message.to)
            except (SMTPException, OSError, _Refused, _InDoubt) as exc:
                # `from None`: aiosmtplib's exceptions name the recipient in their text.
                raise ChannelError(_failure(exc, self._settings)) from None
        queue_id = _QUEUE_ID.search(reply)
        return Receipt(provider_id=queue_id[1] if queue_id else message.message_id)

    async def aclose(self) -> None:
        """QUIT every open session, after the sends in flight have finished."""
        pool, self._pool_state = self._pool_state, None
        if pool is None:
            return
        if pool.loop is not asyncio.get_running_loop():
            _abandon(pool)
            return
        for _ in range(self._settings.connections):
            await pool.slots.acquire()
        await asyncio.gather(*(self._quit(smtp) for smtp in pool.idle))
        pool.idle.clear()

    # -- the pool ------------------------------------------------------------------------------

    def _pool(self) -> _Pool:
        loop = asyncio.get_running_loop()
        if self._pool_state is None or self._pool_state.loop is not loop:
            if self._pool_state is not None:
                _abandon(self._pool_state)
            self._pool_state = _Pool(loop, asyncio.Semaphore(self._settings.connections))
        return self._pool_state

    async def _send_pooled(self, pool: _Pool, data: bytes, sender: str, to: str) -> str:
        smtp, reused = await self._checkout(pool)
        try:
            try:
                return await self._transaction(smtp, data, sender, to)
            except (SMTPServerDisconnected, SMTPResponseException) as exc:
                if not (reused and _closed_before_data(exc)):
                    raise
            # The server had closed this idle session, and none of the message went out on it.
            log.info("smtp: the server closed an idle connection; sending on a new one")
            _discard(smtp)
            smtp = await self._open()
            return await self._transaction(smtp, data, sender, to)
        finally:
            if smtp.is_connected:
                pool.idle.append(smtp)
            else:
                _discard(smtp)

    async def _checkout(self, pool: _Pool) -> tuple[SMTP, bool]:
        while pool.idle:
            smtp = pool.idle.pop()  # the most recently used: the least likely to have timed out
            if _still_open(smtp):
                return smtp, True
            log.info("smtp: the server closed an idle connection; opening a new one")
            _discard(smtp)
        return await self._open(), False

    async def _open(self) -> SMTP:
        settings = self._settings
        secure = settings.security != "none"
        smtp = SMTP(
            hostname=settings.host,
            port=settings.effective_port,
            timeout=settings.timeout_seconds,
            use_tls=settings.security == "tls",
            start_tls=False,  # done below, so a server without it is refused, not skipped
            tls_context=self._tls_context() if secure else None,
            local_hostname=await self._hostname(),
        )
        try:
            await smtp.connect()
            await smtp.ehlo()
            if settings.security == "starttls":
                if not smtp.supports_extension("starttls"):
                    raise _Refused(
                        FailureKind.CONNECTION,
                        "the server does not offer STARTTLS; not sending in clear",
                    )
                await smtp.starttls()
                await smtp.ehlo()  # RFC 3207: forget what was learnt before TLS
            if settings.username:
                if not smtp.supported_auth_methods:  # aiosmtplib's: CRAM-MD5, PLAIN, LOGIN
                    raise _Refused(
                        FailureKind.SMTP, "the server offers no AUTH method we use; cannot log in"
                    )
                await smtp.login(settings.username, settings.password)
        except BaseException:
            _discard(smtp)
            raise
        log.debug("smtp: connected to %s:%s", settings.host, settings.effective_port)
        return smtp

    async def _transaction(self, smtp: SMTP, data: bytes, sender: str, to: str) -> str:
        """MAIL, RCPT, DATA on an open session; returns the server's reply to the message.
        `sender` is the envelope sender, where bounces go (the From header is in `data`)."""
        # The MIME form is 7-bit; only an address with non-ASCII characters needs SMTPUTF8.
        utf8 = not (sender + to).isascii()
        if utf8 and not smtp.supports_extension("smtputf8"):
            raise SMTPNotSupported("SMTPUTF8")
        options = ["BODY=8BITMIME", "SMTPUTF8"] if utf8 else []
        encoding = "utf-8" if utf8 else "ascii"
        try:
            await smtp.mail(sender, options=options, encoding=encoding)
            await smtp.rcpt(to, encoding=encoding)
            try:
                reply = await smtp.data(data)
            except (SMTPServerDisconnected, SMTPTimeoutError) as exc:
                raise _InDoubt(exc) from exc
        except SMTPResponseException:
            await _reset(smtp)  # the session stays usable for the next message
            raise
        except BaseException:
            _discard(smtp)  # a session in an unknown state is never reused
            raise
        return reply.message

    async def _quit(self, smtp: SMTP) -> None:
        try:
            if smtp.is_connected:
                await smtp.execute_command(b"QUIT")
        except (SMTPException, OSError):
            pass  # it is closing either way
        finally:
            _discard(smtp)

    # -- set-up done once, lazily (inside the loop) ---------------------------------------------

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            try:
                self._tls = ssl.create_default_context(cafile=self._settings.ca_file or None)
            except (OSError, ssl.SSLError) as exc:
                raise _Refused(
                    FailureKind.LOCAL, f"cannot load SMTP_CA_FILE ({type(exc).__name__})"
                ) from None
        return self._tls

    async def _hostname(self) -> str:
        # aiosmtplib would otherwise look up the FQDN (in a thread) for every connection.
        if self._local_hostname is None:
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        return self._local_hostname


def _render(message: OutgoingEmail, sender: str) -> bytes:
    try:
        parse_address(message.to)  # what aiosmtplib would refuse at RCPT, after MAIL
        return render_mime(message, sender)
    except ValueError:
        raise _Refused(
            FailureKind.LOCAL, "the email cannot be sent as given: a malformed address or header"
        ) from None


def _still_open(smtp: SMTP) -> bool:
    """False when the server has closed the session (or said something unprompted, which an
    idle SMTP server only does to say goodbye). Checks the socket without waiting, so it also
    sees a close that the event loop has not processed yet."""
    if not smtp.is_connected:
        return False
    sock = smtp.get_transport_info("socket")
    if sock is None:
        return True
    fd = sock.fileno()
    if fd < 0:
        return False
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return not poller.poll(0)
    readable, _, _ = select.select([fd], [], [], 0)
    return not readable


def _closed_before_data(exc: Exception) -> bool:
    # Our transaction raises these only for MAIL and RCPT (DATA failures are _InDoubt or
    # SMTPDataError), so nothing of the message has been sent.
    if isinstance(exc, SMTPServerDisconnected):
        return True
    return isinstance(exc, SMTPSenderRefused | SMTPRecipientRefused) and exc.code == SERVICE_CLOSING


async def _reset(smtp: SMTP) -> None:
    if not smtp.is_connected:
        return
    try:
        await smtp.rset()
    except (SMTPException, OSError):
        _discard(smtp)


def _discard(smtp: SMTP) -> None:
    """Close at once. After QUIT, or on a session we give up on, a TLS close_notify exchange
    (what aiosmtplib's close() starts) only keeps the socket open until the server answers it,
    which may be never; smtplib does the same."""
    if isinstance(smtp.transport, asyncio.Transport):
        smtp.transport.abort()
    smtp.close()


def _abandon(pool: _Pool) -> None:
    """Drop the sessions of an event loop that is no longer running ours."""
    for smtp in pool.idle:
        with contextlib.suppress(RuntimeError):  # that loop may be closed already
            _discard(smtp)
    pool.idle.clear()


_REFUSED_AT: tuple[tuple[type[SMTPResponseException], str], ...] = (
    (SMTPRecipientRefused, "recipient refused"),
    (SMTPSenderRefused, "sender refused"),
    (SMTPDataError, "message refused"),
    (SMTPAuthenticationError, "login refused"),
    (SMTPHeloError, "EHLO refused"),
    (SMTPConnectResponseError, "greeting refused"),
)


def _failure(exc: BaseException, settings: SmtpSettings) -> Failure:
    """The facts of a failed send, without the server's text (it may quote the address)."""
    where = f"{settings.host}:{settings.effective_port}"
    if isinstance(exc, _Refused):
        return Failure(PROVIDER, exc.kind, detail=exc.detail)
    if isinstance(exc, _InDoubt):
        if exc.timed_out:
            return Failure(
                PROVIDER,
                FailureKind.TIMEOUT,
                detail="no reply to the message in time; it may have been accepted",
            )
        return Failure(
            PROVIDER,
            FailureKind.CONNECTION,
            detail="connection lost while sending the message; it may have been accepted",
        )
    tls = next((e for e in _causes(exc) if isinstance(e, ssl.SSLError)), None)
    if isinstance(tls, ssl.SSLCertVerificationError):
        reason = tls.verify_message or "verification failed"
        return Failure(
            PROVIDER,
            FailureKind.CONNECTION,
            detail=f"TLS certificate of {where} not trusted: {reason}",
        )
    if tls is not None:
        return Failure(
            PROVIDER, FailureKind.CONNECTION, detail=f"TLS with {where} failed: {tls.reason}"
        )
    if isinstance(exc, SMTPResponseException):
        if exc.code < 0:  # aiosmtplib's marker for a reply it could not parse
            return Failure(PROVIDER, FailureKind.SMTP, detail="malformed reply from the server")
        stage = next((text for cls, text in _REFUSED_AT if isinstance(exc, cls)), "error reply")
        enhanced = _ENHANCED_STATUS.match(exc.message)
        detail = f"{stage} ({enhanced[1]})" if enhanced else stage
        return Failure(PROVIDER, FailureKind.SMTP, status=exc.code, detail=detail)
    if isinstance(exc, SMTPTimeoutError | TimeoutError):
        return Failure(PROVIDER, FailureKind.TIMEOUT, detail=f"no answer from {where} in time")
    if isinstance(exc, SMTPNotSupported):
        return Failure(PROVIDER, FailureKind.SMTP, detail="the server does not support SMTPUTF8")
    if isinstance(exc, SMTPServerDisconnected):
        return Failure(PROVIDER, FailureKind.CONNECTION, detail=f"{where} closed the connection")
    reason = _os_reason(exc)
    return Failure(PROVIDER, FailureKind.CONNECTION, detail=f"cannot connect to {where}: {reason}")


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps: aiosmtplib wraps TLS errors on connect (implicit TLS)
    but lets them through from STARTTLS."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def _os_reason(exc: BaseException) -> str:
    for cause in _causes(exc):
        if isinstance(cause, OSError) and cause.strerror:
            return cause.strerror
    return type(exc).__name__
