"""Health: whether the service can reach its database."""

from __future__ import annotations

from sqlalchemy import Engine

from ..store.engine import ping


def check_database(engine: Engine) -> None:
    """One trivial query; raises whatever the database raises. A read: it never waits behind a
    writer (an import holding SQLite's write lock)."""
    ping(engine)
