"""Opening the database at start-up: waiting while it is locked or unreachable, migrating only
when asked, and never creating or changing it for a command that only reads.

Waiting uses a fake clock: each pause moves it, and may release the lock the test holds."""

from __future__ import annotations

import hashlib
import logging
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path

import pytest
from alembic import command
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, text
from sqlalchemy.exc import DBAPIError

from reminder_service.store.engine import (
    MIGRATION_LOCK_KEY,
    NEWEST_REVISION,
    alembic_config,
    make_engine,
    migrate,
)
from reminder_service.store.startup import DatabaseUse, Patience, StartupError, open_database
from tests.factories import free_port

NEWEST = ScriptDirectory.from_config(alembic_config()).get_current_head()
QUICK = Patience(total_seconds=60, try_seconds=0.05)


class Waits:
    """Stands in for time.sleep and time.monotonic; `on_pause(n)` runs at the n-th pause."""

    def __init__(self, on_pause: Callable[[int], None] | None = None) -> None:
        self.now = 0.0
        self.pauses: list[float] = []
        self._on_pause = on_pause

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds
        if self._on_pause is not None:
            self._on_pause(len(self.pauses))


def at_revision(url: str, revision: str) -> None:
    engine = make_engine(url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), revision)
    finally:
        engine.dispose()


def stamp(path: Path, revision: str) -> None:
    """Write `revision` as the schema's, as a release this version does not know would."""
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))


def revision_of(url: str) -> tuple[str, ...]:
    engine = make_engine(url)
    try:
        with engine.connect() as conn:
            return tuple(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()


def fingerprint(path: Path) -> tuple[str, int]:
    return hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'reminders.db'}"


@pytest.fixture
def exclusive(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """Another writer holding the file's lock, as an import or `sqlite3` shell with BEGIN
    EXCLUSIVE does; the test rolls it back when it wants the lock released."""
    holder = sqlite3.connect(tmp_path / "reminders.db", isolation_level=None)
    yield holder
    holder.close()


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_migrate_waits_while_sqlite_is_locked_then_goes_on(
    sqlite_url: str,
    exclusive: sqlite3.Connection,
    journal: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # wal: as the service leaves its file; delete: a file another tool made.
    if journal == "wal":
        at_revision(sqlite_url, "0009")
    else:
        exclusive.execute("PRAGMA journal_mode=DELETE")
    exclusive.execute("BEGIN EXCLUSIVE")
    waits = Waits(on_pause=lambda n: exclusive.execute("ROLLBACK") if n == 3 else None)
    caplog.set_level(logging.WARNING, "reminder_service.store.startup")

    engine = open_database(
        sqlite_url, DatabaseUse.MIGRATE, QUICK, sleep=waits.sleep, monotonic=waits.monotonic
    )
    engine.dispose()

    assert revision_of(sqlite_url) == (NEWEST,)
    assert waits.pauses == [0.5, 1.0, 2.0]  # growing pauses
    messages = [r.getMessage() for r in caplog.records]
    assert sum("is locked by another process; trying again in" in m for m in messages) == 3
    assert "is available again (it was locked by another process)" in messages[-1]
    assert not any(r.exc_info for r in caplog.records)  # a line each, never a traceback


def test_migrate_gives_up_when_the_wait_runs_out(
    sqlite_url: str, exclusive: sqlite3.Connection
) -> None:
    at_revision(sqlite_url, "0009")
    exclusive.execute("BEGIN EXCLUSIVE")
    waits = Waits()
    with pytest.raises(StartupError) as raised:
        open_database(
            sqlite_url,
            DatabaseUse.MIGRATE,
            Patience(total_seconds=5, try_seconds=0.05),
            sleep=waits.sleep,
            monotonic=waits.monotonic,
        )
    assert waits.pauses == [0.5, 1.0, 2.0, 1.5]  # the last pause ends at the deadline
    assert str(raised.value) == (
        f"{sqlite_url} is still locked by another process after 5 s; giving up "
        "(REMINDER_DATABASE_WAIT_SECONDS sets how long to wait)"
    )
    exclusive.execute("ROLLBACK")
    assert revision_of(sqlite_url) == ("0009",)


def test_a_file_that_is_no_database_fails_at_once(sqlite_url: str, tmp_path: Path) -> None:
    (tmp_path / "reminders.db").write_bytes(b"not a database, " * 100)
    waits = Waits()
    with pytest.raises(StartupError, match=r"cannot use .*: file is not a database"):
        open_database(
            sqlite_url, DatabaseUse.MIGRATE, QUICK, sleep=waits.sleep, monotonic=waits.monotonic
        )
    assert waits.pauses == []  # waiting would not help


@pytest.mark.parametrize("use", [DatabaseUse.READ, DatabaseUse.WRITE])
def test_only_migrate_creates_the_database(tmp_path: Path, use: DatabaseUse) -> None:
    path = tmp_path / "var" / "reminders.db"
    with pytest.raises(StartupError) as raised:
        open_database(f"sqlite:///{path}", use, QUICK)
    assert str(raised.value) == f"no file at {path}: run `reminder-service migrate` to create it"
    assert not path.parent.exists()


@pytest.mark.parametrize("use", [DatabaseUse.READ, DatabaseUse.WRITE])
@pytest.mark.parametrize(
    ("revision", "expected"),
    [
        (
            "0009",
            f"the schema is at revision 0009; this version needs {NEWEST}: run `reminder-service "
            "migrate` (only migrate, run and serve change the schema)",
        ),
        ("none", "no schema yet: run `reminder-service migrate` first"),
        (
            "0099",
            "the schema is at revision 0099, newer than this version knows (its newest is "
            f"{NEWEST}): use the release that migrated it",
        ),
    ],
)
def test_other_commands_leave_a_database_that_is_not_current_as_it_is(
    sqlite_url: str, tmp_path: Path, use: DatabaseUse, revision: str, expected: str
) -> None:
    path = tmp_path / "reminders.db"
    if revision == "none":
        sqlite3.connect(path).close()
    else:
        at_revision(sqlite_url, "0009")
    if revision == "0099":
        stamp(path, "0099")
    before = fingerprint(path)

    with pytest.raises(StartupError) as raised:
        open_database(sqlite_url, use, QUICK)

    assert str(raised.value) == expected
    assert fingerprint(path) == before  # the file's bytes and mtime


def test_migrate_refuses_a_database_a_newer_release_migrated(
    sqlite_url: str, tmp_path: Path
) -> None:
    at_revision(sqlite_url, "head")
    stamp(tmp_path / "reminders.db", "0099")
    with pytest.raises(StartupError) as raised:
        open_database(sqlite_url, DatabaseUse.MIGRATE, QUICK)
    assert str(raised.value) == (
        f"the schema is at revision 0099, newer than this version knows (its newest is "
        f"{NEWEST}): use the release that migrated it"
    )
    assert revision_of(sqlite_url) == ("0099",)


def test_a_read_only_database_refuses_writes(database_url: str) -> None:
    at_revision(database_url, "head")
    engine = open_database(database_url, DatabaseUse.READ, QUICK)
    try:
        with pytest.raises(DBAPIError, match=r"read-only|readonly"), engine.begin() as conn:
            conn.execute(text("UPDATE alembic_version SET version_num = '0001'"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == NEWEST
    finally:
        engine.dispose()


def test_an_unreachable_postgresql_is_retried_then_given_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()  # nobody listens on it: connections are refused
    url = f"postgresql://reminders:s3cret@127.0.0.1:{port}/reminders"
    waits = Waits()
    caplog.set_level(logging.WARNING, "reminder_service.store.startup")
    with pytest.raises(StartupError) as raised:
        open_database(
            url,
            DatabaseUse.MIGRATE,
            Patience(total_seconds=3),
            sleep=waits.sleep,
            monotonic=waits.monotonic,
        )
    where = f"postgresql://reminders:***@127.0.0.1:{port}/reminders"
    assert str(raised.value).startswith(f"{where} is still unavailable (connection failed:")
    assert "Connection refused" in str(raised.value)
    assert waits.pauses == [0.5, 1.0, 1.5]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 3
    assert all(line.startswith(f"database {where} is unavailable (") for line in lines)
    assert "s3cret" not in str(raised.value) + "".join(lines)


def _hold_the_version_table(conn: Connection) -> None:
    conn.execute(text("LOCK TABLE alembic_version IN ACCESS EXCLUSIVE MODE"))


def _hold_the_migration_lock(conn: Connection) -> None:
    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})


@pytest.mark.parametrize(
    ("use", "hold"),
    [
        (DatabaseUse.MIGRATE, _hold_the_version_table),
        (DatabaseUse.MIGRATE, _hold_the_migration_lock),  # another service migrating
        (DatabaseUse.READ, _hold_the_version_table),
    ],
)
def test_a_locked_postgresql_is_waited_for(
    postgres_url: str | None,
    use: DatabaseUse,
    hold: Callable[[Connection], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    if postgres_url is None:
        pytest.skip("PostgreSQL tests need REMINDER_TEST_POSTGRES_URL")
    engine = make_engine(postgres_url)
    holder = engine.connect()
    try:
        migrate(engine)
        transaction = holder.begin()
        hold(holder)
        waits = Waits(on_pause=lambda n: transaction.rollback() if n == 2 else None)
        caplog.set_level(logging.WARNING, "reminder_service.store.startup")
        opened: Engine = open_database(
            postgres_url, use, QUICK, sleep=waits.sleep, monotonic=waits.monotonic
        )
        opened.dispose()
        assert waits.pauses == [0.5, 1.0]
        lines = [r.getMessage() for r in caplog.records]
        assert sum("is locked by another session; trying again" in line for line in lines) == 2
    finally:
        holder.close()
        engine.dispose()


def test_the_newest_revision_start_up_knows_is_the_scripts_head() -> None:
    # Start-up reads a database at NEWEST_REVISION without loading Alembic: a new migration
    # must move it, or start-up would take an older schema for the newest.
    assert NEWEST_REVISION == NEWEST


@pytest.mark.parametrize("use", [DatabaseUse.MIGRATE, DatabaseUse.WRITE, DatabaseUse.READ])
def test_a_database_at_the_newest_revision_opens_without_loading_alembic(
    tmp_path: Path, use: DatabaseUse
) -> None:
    # A fresh interpreter: this one has Alembic loaded already. Nor is psycopg loaded for SQLite.
    url = f"sqlite:///{tmp_path / 'current.db'}"
    open_database(url, DatabaseUse.MIGRATE, QUICK).dispose()
    script = (
        "import sys\n"
        "from reminder_service.store.startup import DatabaseUse, Patience, open_database\n"
        f"open_database({url!r}, DatabaseUse.{use.name}, Patience(total_seconds=0)).dispose()\n"
        "print(sorted(m for m in ('alembic', 'psycopg') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True,
        cwd=Path(__file__).resolve().parents[2],
    )  # fmt: skip
    assert done.stdout.strip() == "[]"
