"""The MLLP listener: HL7 v2 over TCP, as interface engines send it.

Each message is framed 0x0B ... 0x1C 0x0D. A frame may arrive split across packets, or several
in one; each gets an ACK on the same connection (AA applied, AE understood but not applied, AR
unreadable), in order, whatever the frame holds. Bytes outside frames are dropped; a frame over
the size limit is discarded and answered AR; a connection that drops mid-frame loses only that
frame. Many connections are served at once; each message is applied in its own transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable

from ..services.hl7_feed import build_ack
from .listening import Listener

log = logging.getLogger(__name__)

START, END, CR = b"\x0b", b"\x1c", b"\r"
MAX_FRAME = 1024 * 1024  # a SIU message is a few kilobytes

# message bytes -> (ACK code, reason); runs in a worker thread (it writes to the database)
Handler = Callable[[bytes], tuple[str, str]]


class MllpServer(Listener):
    name = "MLLP listener"

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 2575) -> None:
        super().__init__(host, port)
        self._handler = handler

    async def _listen(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._serve, host, port)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async for frame in _frames(reader):
                if frame is None:  # too large: discarded
                    ack = build_ack(b"", "AR", f"message over {MAX_FRAME} bytes")
                else:
                    ack = await asyncio.to_thread(self._acknowledge, frame)
                writer.write(START + ack + END + CR)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            log.info("MLLP connection dropped")
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _acknowledge(self, frame: bytes) -> bytes:
        try:
            code, reason = self._handler(frame)
        except Exception:  # never let one message take the listener down
            log.exception("MLLP message could not be applied")
            code, reason = "AE", "the message could not be applied; it will need to be resent"
        try:
            return build_ack(frame, code, reason)
        except Exception:  # build_ack takes any bytes; should it ever fail, still answer
            log.exception("MLLP acknowledgement could not be built from the message")
            return build_ack(b"", "AR" if code == "AR" else "AE", reason)


async def _frames(reader: asyncio.StreamReader) -> AsyncIterator[bytes | None]:
    """Yield each framed message (None for one over the size limit), ignoring bytes outside."""
    buffer = bytearray()
    inside = oversized = False
    while chunk := await reader.read(65536):
        for byte in chunk:
            if not inside:
                if byte == START[0]:
                    inside, oversized = True, False
                    buffer.clear()
                continue
            if byte == END[0]:
                inside = False
                yield None if oversized else bytes(buffer)
                buffer.clear()
                continue
            if byte == START[0]:  # a new frame before this one ended: drop the broken one
                buffer.clear()
                oversized = False
                continue
            if not oversized:
                buffer.append(byte)
                if len(buffer) > MAX_FRAME:
                    oversized = True
                    buffer.clear()
