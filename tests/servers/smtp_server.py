"""Local SMTP servers (aiosmtpd) for tests and benchmarks, on 127.0.0.1 with ephemeral ports.

Four kinds, by the arguments to `serve_in_thread`:

- plain: no TLS (what SMTP_SECURITY=none talks to);
- `tls=make_tls(dir), starttls=True`: STARTTLS offered and required before MAIL;
- `tls=..., implicit_tls=True`: TLS from the first byte (SMTP_SECURITY=tls);
- `tls=..., starttls=True, login=("user", "password")`: AUTH (PLAIN, LOGIN) offered only after
  STARTTLS, and required before MAIL.

Certificates come from `trustme`: `make_tls` writes the test CA to a file (for SMTP_CA_FILE) and
can sign the server's certificate with another CA, to test that it is refused.

`RecordingHandler` records every message (envelope, bytes, whether over TLS, whether logged in),
answers scripted recipients with a refusal (`refuse={"x@example.org": 550}`), counts connections
(and the most open at once) and QUITs, and can hang up: at the next MAIL (`drop_at_mail`), or
after taking a message but before answering (`drop_after_data`).
`SmtpServer.drop_connections()` closes every open session, as a server does with idle ones.

In a test, in a thread of the test process:

    with serve_in_thread(RecordingHandler()) as server:
        channel = SmtpEmailChannel(server.settings(connections=1))
        ...; server.handler.received, server.handler.connections

For a benchmark, in its own process (so its CPU does not compete with the client for the GIL):

    with serve_in_process() as server:
        ...; server.stats()  # {"messages", "connections", "bytes", "cpu_seconds"}

or from a shell: `python -m tests.servers.smtp_server --port 8025` (plain; messages are counted,
not kept).
"""

from __future__ import annotations

import argparse
import asyncio
import email
import json
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from email.message import EmailMessage
from email.policy import default
from pathlib import Path
from typing import Any

import trustme
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from reminder_service.settings import SmtpSettings

ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
SERVER_NAME = "smtp.test"  # the greeting's name; given, so aiosmtpd does not look up the FQDN
SENDER = "reminders@example.org"
REFUSALS = {
    550: "550 5.1.1 <{address}>: Recipient address rejected: User unknown",
    451: "451 4.3.0 <{address}>: Temporary lookup failure, try again later",
    552: "552 5.2.2 <{address}>: Mailbox full",
}
STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class Received:
    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    tls: bool  # the session was encrypted (STARTTLS or implicit)
    authenticated: bool

    def message(self) -> EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=default)
        assert isinstance(parsed, EmailMessage)
        return parsed


@dataclass
class RecordingHandler:
    """aiosmtpd handler hooks. They run on the server's thread; tests read the results after
    their sends have been answered."""

    refuse: dict[str, int] = field(default_factory=dict)  # recipient -> reply code
    keep: bool = True  # keep each message; False only counts (for benchmarks)
    queue_ids: bool = False  # answer "250 2.0.0 Ok: queued as Q<n>", as Postfix does
    drop_at_mail: int = 0  # hang up, without a reply, on this many coming MAIL commands
    drop_after_data: int = 0  # take this many coming messages, then hang up without a reply
    received: list[Received] = field(default_factory=list)
    accepted: int = 0
    accepted_bytes: int = 0
    connections: int = 0
    open_now: int = 0  # sessions open at this moment
    most_open: int = 0  # the most sessions open at one time
    quits: int = 0

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.quits += 1
        return "221 Bye"

    async def handle_MAIL(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if self.drop_at_mail > 0:
            self.drop_at_mail -= 1
            await _hang_up(server)
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        code = self.refuse.get(address)
        if code is not None:
            return REFUSALS[code].format(address=address)
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data = envelope.original_content or b""
        self.accepted += 1
        self.accepted_bytes += len(data)
        if self.keep:
            assert envelope.mail_from is not None
            tls = server.transport is not None and (
                server.transport.get_extra_info("sslcontext") is not None
            )
            self.received.append(
                Received(
                    envelope.mail_from,
                    tuple(envelope.rcpt_tos),
                    data,
                    tls=tls,
                    authenticated=bool(session.authenticated),
                )
            )
        if self.drop_after_data > 0:
            self.drop_after_data -= 1
            await _hang_up(server)
        return f"250 2.0.0 Ok: queued as Q{self.accepted:06d}" if self.queue_ids else "250 OK"


async def _hang_up(server: SMTP) -> None:
    """Close the session without answering; the session's task is cancelled as it closes."""
    assert isinstance(server.transport, asyncio.Transport)
    server.transport.abort()
    await asyncio.get_running_loop().create_future()  # never set: cancelled by connection_lost


@dataclass(frozen=True)
class ServerTls:
    ca_file: str  # the CA the client is told to trust (SMTP_CA_FILE)
    server_context: ssl.SSLContext


def make_tls(directory: Path, *, signed_by_trusted_ca: bool = True) -> ServerTls:
    """A test CA (written to `directory`) and a server certificate for 127.0.0.1/localhost,
    signed by that CA, or by another one when `signed_by_trusted_ca` is False."""
    trusted = trustme.CA()
    ca_file = directory / "smtp-test-ca.pem"
    trusted.cert_pem.write_to_path(ca_file)
    issuer = trusted if signed_by_trusted_ca else trustme.CA()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    issuer.issue_cert(HOST, "localhost").configure_cert(context)
    return ServerTls(str(ca_file), context)


class _Session(SMTP):
    """aiosmtpd's session, tracked so that the server can close it (and wait until it has)."""

    def __init__(self, handler: RecordingHandler, open_sessions: set[_Session], **kw: Any):
        super().__init__(handler, **kw)
        self._open_sessions = open_sessions
        self.lost = asyncio.Event()
        open_sessions.add(self)
        self._handler = handler
        self._counted = False
        handler.connections += 1

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Made again after STARTTLS, on the same connection; a session whose TLS handshake
        # fails is never made (nor lost).
        if not self._counted:
            self._counted = True
            self._handler.open_now += 1
            self._handler.most_open = max(self._handler.most_open, self._handler.open_now)
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        super().connection_lost(error)
        self._open_sessions.discard(self)
        if self._counted and not self.lost.is_set():
            self._handler.open_now -= 1
        self.lost.set()


class _Controller(Controller):
    def __init__(self, handler: RecordingHandler, **kw: Any) -> None:
        super().__init__(handler, hostname=HOST, port=0, server_hostname=SERVER_NAME, **kw)
        self.sessions: set[_Session] = set()

    def factory(self) -> _Session:
        return _Session(self.handler, self.sessions, **self.SMTP_kwargs)

    def _trigger_server(self) -> None:
        # Bound to port 0: aiosmtpd's start-up probe must use the port the OS chose.
        assert isinstance(self.server, asyncio.Server)
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()  # type: ignore[no-untyped-call]


class SmtpServer:
    """A running server: where it listens, its handler, and settings to reach it."""

    def __init__(self, controller: _Controller, security: str, ca_file: str) -> None:
        self._controller = controller
        self.handler: RecordingHandler = controller.handler
        self.host = HOST
        self.port = controller.port
        self.security = security
        self.ca_file = ca_file

    def settings(self, **changes: Any) -> SmtpSettings:
        """SmtpSettings for this server; short timeouts, so a broken test fails fast."""
        base = SmtpSettings(
            host=self.host,
            port=self.port,
            security=self.security,
            from_=SENDER,
            timeout_seconds=10.0,
            ca_file=self.ca_file,
        )
        return replace(base, **changes)

    def drop_connections(self) -> int:
        """Close every open session at once (as a server does with idle ones, or when it
        restarts) and return when they are closed; returns how many there were."""
        return asyncio.run_coroutine_threadsafe(self._drop(), self._controller.loop).result(
            STOP_TIMEOUT
        )

    async def _drop(self) -> int:
        # Only sessions that started: one whose TLS handshake failed never had a transport.
        sessions = [s for s in self._controller.sessions if s.transport is not None]
        for session in sessions:
            assert isinstance(session.transport, asyncio.Transport)
            # abort: no TLS close_notify exchange, which an idle client would have to answer
            session.transport.abort()
        for session in sessions:
            await session.lost.wait()
        return len(sessions)

    def stop(self) -> None:
        self.drop_connections()  # no transport is left open when the loop closes
        self._controller.stop()


@contextmanager
def serve_in_thread(
    handler: RecordingHandler | None = None,
    *,
    tls: ServerTls | None = None,
    starttls: bool = False,
    implicit_tls: bool = False,
    login: tuple[str, str] | None = None,
) -> Iterator[SmtpServer]:
    """A server on its own event loop in a background thread (aiosmtpd's Controller); yields it
    once it answers, and stops it afterwards. `handler.connections` starts from 0."""
    handler = handler or RecordingHandler()
    if (starttls or implicit_tls or login) and tls is None:
        raise ValueError("STARTTLS, implicit TLS and AUTH need tls=make_tls(...)")
    if login and not starttls:
        raise ValueError("AUTH is offered after STARTTLS only")
    kw: dict[str, Any] = {}
    if starttls:
        assert tls is not None
        kw.update(tls_context=tls.server_context, require_starttls=True)
    if implicit_tls:
        assert tls is not None
        kw.update(ssl_context=tls.server_context)
    if login:
        kw.update(auth_required=True, auth_require_tls=True, authenticator=_authenticator(*login))
    controller = _Controller(handler, **kw)
    controller.start()
    security = "tls" if implicit_tls else "starttls" if starttls else "none"
    server = SmtpServer(controller, security, tls.ca_file if tls else "")
    server.drop_connections()  # the start-up probe's, if the server has not seen it close yet
    handler.connections = handler.most_open = 0  # the counts start after the probe
    try:
        yield server
    finally:
        server.stop()


def _authenticator(username: str, password: str) -> Any:
    def check(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = (
            isinstance(data, LoginPassword)
            and data.login == username.encode()
            and data.password == password.encode()
        )
        return AuthResult(success=ok, handled=False)  # a failure answers 535 5.7.8

    return check


# -- in a separate process, for benchmarks -----------------------------------------------------


class ServerProcess:
    """A plain server in a child process, driven over its stdin (one command a line)."""

    def __init__(self, process: subprocess.Popen[str], port: int) -> None:
        self.process = process
        self.host = HOST
        self.port = port

    def settings(self, **changes: Any) -> SmtpSettings:
        base = SmtpSettings(
            host=self.host, port=self.port, security="none", from_=SENDER, timeout_seconds=30.0
        )
        return replace(base, **changes)

    def stats(self) -> dict[str, Any]:
        """{"messages", "bytes", "connections", "cpu_seconds"} since the start (the CPU is the
        server process's own, to tell whether it, not the client, is what limits a bench)."""
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("stats\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())  # type: ignore[no-any-return]

    def stop(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.close()  # end of commands: it stops
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


@contextmanager
def serve_in_process() -> Iterator[ServerProcess]:
    """A plain server in a child process (`python -m tests.servers.smtp_server`) that counts
    messages without keeping them; yields once it listens, and stops it afterwards."""
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.servers.smtp_server", "--port", "0"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # "listening 127.0.0.1:PORT", or EOF if it failed
    port = int(line.rsplit(":", 1)[-1]) if line.startswith("listening ") else 0
    server = ServerProcess(process, port)
    try:
        if not port:
            raise RuntimeError(f"the SMTP server did not start (exit {process.wait()})")
        yield server
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A plain local SMTP server that counts messages.")
    parser.add_argument("--port", type=int, default=0, help="0: any free port")
    args = parser.parse_args(argv)
    handler = RecordingHandler(keep=False)
    controller = (
        _Controller(handler) if args.port == 0 else _FixedPortController(handler, args.port)
    )
    controller.start()
    handler.connections = 0
    server = SmtpServer(controller, "none", "")
    print(f"listening {server.host}:{server.port}", flush=True)
    try:
        for command in sys.stdin:  # until stdin closes
            if command.strip() == "stats":
                stats = {
                    "messages": handler.accepted,
                    "bytes": handler.accepted_bytes,
                    "connections": handler.connections,
                    "cpu_seconds": time.process_time(),
                }
                print(json.dumps(stats), flush=True)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


class _FixedPortController(_Controller):
    def __init__(self, handler: RecordingHandler, port: int) -> None:
        super().__init__(handler)
        self.port = port


if __name__ == "__main__":
    main()
