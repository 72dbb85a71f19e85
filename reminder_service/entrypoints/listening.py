"""A TCP listener on the running event loop (the MLLP and bounce listeners), and the loop that
serves one until Ctrl-C or SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import signal

log = logging.getLogger(__name__)


class Listener:
    """Start, serve until closed, close. Subclasses say how to listen (`_listen`)."""

    name = "listener"

    def __init__(self, host: str, port: int) -> None:
        self._host = host
        self._port = port
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one chosen when asked for port 0)."""
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await self._listen(self._host, self._port)
        log.info("%s on %s:%d", self.name, self._host, self.port)

    async def serve_forever(self) -> None:
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _listen(self, host: str, port: int) -> asyncio.Server:
        raise NotImplementedError


async def serve_until_signalled(listener: Listener) -> None:
    await listener.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    serving = asyncio.create_task(listener.serve_forever())
    await stop.wait()
    serving.cancel()
    await listener.close()
