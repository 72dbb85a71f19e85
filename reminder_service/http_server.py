"""Run the HTTP app with uvicorn, in the foreground (`serve`) or beside the dispatcher (`run`)."""

from __future__ import annotations

import threading

import uvicorn
from fastapi import FastAPI


class HttpServer:
    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        config = uvicorn.Config(app, host=host, port=port, log_config=None, access_log=False)
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """In the foreground, until SIGINT or SIGTERM (uvicorn handles them)."""
        self._server.run()

    def start(self) -> None:
        """In a background thread; the caller owns the signals and calls stop()."""
        self._thread = threading.Thread(target=self._server.run, name="http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
