"""Health: whether the service can reach its database."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..store.engine import ping

if TYPE_CHECKING:
    from sqlalchemy import Engine


def check_database(engine: Engine) -> None:
    """One trivial query; raises whatever the database raises. A read: it never waits behind a
    writer (an import holding SQLite's write lock)."""
    ping(engine)
