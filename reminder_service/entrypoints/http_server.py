"""Run the HTTP app with uvicorn, in the foreground (`serve`) or beside the dispatcher (`run`)."""

from __future__ import annotations

import contextlib
import threading
import time

import uvicorn
from fastapi import FastAPI


class HttpServerError(RuntimeError):
    pass


class HttpServer:
    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
        self._server = uvicorn.Server(config)
        self._where = f"{host}:{port}"
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port listened on (the one chosen when asked for port 0), once started."""
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    def run(self) -> None:
        """In the foreground, until SIGINT or SIGTERM (uvicorn handles them)."""
        self._server.run()

    def start(self, timeout: float = 30.0) -> None:
        """In a background thread; the caller owns the signals and calls stop(). Returns once
        listening; raises HttpServerError if it cannot (a port in use, say): webhooks that are
        silently down would lose delivery reports and STOP replies."""
        self._thread = threading.Thread(target=self._serve, name="http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise HttpServerError(
                    f"the HTTP server could not listen on {self._where} (see the log above)"
                )
            time.sleep(0.01)  # waiting for a real socket to be bound, not standing in for a clock

    def _serve(self) -> None:
        with contextlib.suppress(SystemExit):  # uvicorn exits when it cannot bind
            self._server.run()

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
