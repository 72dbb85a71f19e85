"""Opening the database at start-up: wait, within bounds, while it is locked or unreachable; then
migrate it, or check that it is at the newest schema revision.

Only `migrate`, `run` and `serve` change the schema. Every other command checks the revision and,
if the database is older (or newer) than this version, says what to run instead of changing it.
Commands that only read open it read-only, and never create a missing SQLite file.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from .engine import (
    NEWEST_REVISION,
    alembic_config,
    limit_lock_wait,
    make_engine,
    migrate,
    reading,
    schema_revisions,
)

if TYPE_CHECKING:
    from alembic.script import ScriptDirectory

log = logging.getLogger(__name__)

T = TypeVar("T")
MIGRATE_HINT = "run `reminder-service migrate`"


class DatabaseUse(Enum):
    MIGRATE = "migrate"  # brings the schema to the newest revision: migrate, run, serve
    WRITE = "write"  # writes rows, on the newest schema only; never changes the schema
    READ = "read"  # reads only: opened read-only, never created


class StartupError(RuntimeError):
    """The database cannot be used; the message says why and what to do."""


@dataclass(frozen=True)
class Patience:
    """How long start-up waits for a locked or unreachable database, and how it paces retries."""

    total_seconds: float = 300.0
    first_pause: float = 0.5
    longest_pause: float = 10.0
    # Each try waits this long for a lock (SQLite's busy timeout, PostgreSQL's lock_timeout)
    # before it gives way, so the log says what is happening instead of hanging silently.
    try_seconds: float = 2.0

    @classmethod
    def lasting(cls, total_seconds: float) -> Patience:
        """Waits of `total_seconds` in all (0: one try, no wait); a short total tries often."""
        return cls(total_seconds=total_seconds, try_seconds=min(2.0, total_seconds / 10))


def open_database(
    url: str,
    use: DatabaseUse,
    patience: Patience,
    *,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> Engine:
    """An engine for `url`, ready for `use`; raises StartupError (never a driver's traceback)."""
    where = make_url(url).render_as_string(hide_password=True)
    if use is not DatabaseUse.MIGRATE:
        _require_sqlite_file(url)  # only a migration creates the database
    # The check writes nothing, so its engine is read-only whatever the command does next.
    probe = make_engine(
        url, read_only=use is not DatabaseUse.MIGRATE, busy_seconds=patience.try_seconds
    )
    prepare = migrate_unless_newer if use is DatabaseUse.MIGRATE else require_newest_schema
    try:
        step = partial(prepare, probe, lock_seconds=patience.try_seconds)
        when_available(step, where, patience, sleep=sleep, monotonic=monotonic)
    finally:
        probe.dispose()
    return make_engine(url, read_only=use is DatabaseUse.READ)


def when_available(
    step: Callable[[], T],
    where: str,
    patience: Patience,
    *,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> T:
    """`step()`, tried again with growing pauses while the database is locked or unreachable,
    for up to `patience.total_seconds`; then StartupError."""
    started = monotonic()
    pause = patience.first_pause
    waited_for: str | None = None
    while True:
        try:
            result = step()
        except DBAPIError as exc:
            reason = _passing_reason(exc)
            if reason is None:
                raise StartupError(f"cannot use {where}: {_first_line(exc)}") from None
            elapsed = monotonic() - started
            if elapsed >= patience.total_seconds:
                raise StartupError(
                    f"{where} is still {reason} after {elapsed:.0f} s; giving up "
                    "(REMINDER_DATABASE_WAIT_SECONDS sets how long to wait)"
                ) from None
            pause = min(pause, patience.total_seconds - elapsed)
            log.warning(
                "database %s is %s; trying again in %.1f s (waited %.0f s of %.0f s)",
                where, reason, pause, elapsed, patience.total_seconds,
            )  # fmt: skip
            waited_for = reason
            sleep(pause)
            pause = min(pause * 2, patience.longest_pause)
            continue
        if waited_for is not None:
            log.warning("database %s is available again (it was %s)", where, waited_for)
        return result


def migrate_unless_newer(engine: Engine, *, lock_seconds: float | None = None) -> None:
    """Migrate to the newest revision; StartupError if a newer release has migrated it past
    what this version knows (Alembic would fail with its own traceback)."""
    current = _current_revisions(engine, lock_seconds)
    if current != (NEWEST_REVISION,):
        _refuse_unknown_revisions(current)
    migrate(engine, lock_seconds=lock_seconds)


def require_newest_schema(engine: Engine, *, lock_seconds: float | None = None) -> None:
    """Raises StartupError unless the schema is at the newest revision this version knows."""
    current = _current_revisions(engine, lock_seconds)
    newest = NEWEST_REVISION
    if current == (newest,):
        return
    if not current:
        raise StartupError(f"no schema yet: {MIGRATE_HINT} first")
    _refuse_unknown_revisions(current)
    raise StartupError(
        f"the schema is at revision {', '.join(current)}; this version needs {newest}: "
        f"{MIGRATE_HINT} (only migrate, run and serve change the schema)"
    )


def _current_revisions(engine: Engine, lock_seconds: float | None) -> tuple[str, ...]:
    with reading(engine) as conn:
        limit_lock_wait(conn, lock_seconds)
        return schema_revisions(conn)


def _refuse_unknown_revisions(current: tuple[str, ...]) -> None:
    scripts = _scripts()
    known = {revision.revision for revision in scripts.walk_revisions()}
    unknown = [revision for revision in current if revision not in known]
    if unknown:
        raise StartupError(
            f"the schema is at revision {', '.join(unknown)}, newer than this version knows "
            f"(its newest is {scripts.get_current_head()}): use the release that migrated it"
        )


def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory  # noqa: PLC0415 - see engine.NEWEST_REVISION

    return ScriptDirectory.from_config(alembic_config())


def _require_sqlite_file(url: str) -> None:
    parsed = make_url(url)
    database = parsed.database
    if parsed.get_backend_name() != "sqlite" or not database or database == ":memory:":
        return
    if parsed.query.get("uri"):
        return  # a SQLite URI names its own mode; SQLite itself reports a missing file
    if not Path(database).is_file():
        raise StartupError(f"no file at {database}: {MIGRATE_HINT} to create it")


def _passing_reason(exc: DBAPIError) -> str | None:
    """Why the database cannot be used yet, when waiting may help; None when it will not."""
    original = exc.orig
    if isinstance(original, sqlite3.OperationalError):
        primary = getattr(original, "sqlite_errorcode", 0) & 0xFF  # extended codes keep it
        if primary in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
            return "locked by another process"
        return None
    if not type(original).__module__.startswith("psycopg"):
        return None
    import psycopg  # noqa: PLC0415 - loaded already (the error is its own); SQLite needs none

    if isinstance(original, psycopg.errors.LockNotAvailable):
        return "locked by another session"
    if isinstance(original, psycopg.OperationalError):
        # Refused, timed out, starting up, shutting down, too many connections: all pass.
        return f"unavailable ({_first_line(exc)})"
    return None


def _first_line(exc: DBAPIError) -> str:
    lines = str(exc.orig).strip().splitlines()
    return lines[0] if lines else type(exc.orig).__name__
