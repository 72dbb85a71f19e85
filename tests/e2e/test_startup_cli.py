"""The real command line at start-up: read-only commands never create, migrate or write the
database; a locked or unreachable database is waited for with a log line, then given up on with
a clear error, never a traceback."""

from __future__ import annotations

import hashlib
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from alembic import command
from alembic.script import ScriptDirectory

from reminder_service.store.engine import alembic_config, make_engine
from tests.factories import CONFIG_DIR, ROOT, TEMPLATES_DIR, free_port, run_cli

pytestmark = pytest.mark.slow

READ_ONLY = [
    ("status",),
    ("audit", "APT1"),
    ("preview", "APT1", "--json"),
]
NO_DATABASE = [("check-config",), ("check-templates",)]
HINT = "run `reminder-service migrate`"
NEWEST = ScriptDirectory.from_config(alembic_config()).get_current_head()


@pytest.fixture
def database(tmp_path: Path) -> Path:
    return tmp_path / "var" / "reminders.db"


@pytest.fixture
def env(tmp_path: Path, database: Path) -> dict[str, str]:
    return {
        **os.environ,
        "REMINDER_DATABASE_URL": f"sqlite:///{database}",
        "REMINDER_DATABASE_WAIT_SECONDS": "2",
        "REMINDER_OUTBOX_DIR": str(tmp_path / "outbox"),
        "REMINDER_CONFIG_DIR": str(CONFIG_DIR),
        "REMINDER_TEMPLATES_DIR": str(TEMPLATES_DIR),
        "REMINDER_LOG_LEVEL": "INFO",
        "REMINDER_HTTP_PORT": str(free_port()),  # never bound: these starts give up first
    }


cli = run_cli


def at_revision(path: Path, revision: str) -> None:
    engine = make_engine(f"sqlite:///{path}")
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), revision)
    finally:
        engine.dispose()


def stamp(path: Path, revision: str) -> None:
    """Write `revision` as the schema's, as a release this version does not know would."""
    with closing(sqlite3.connect(path)) as conn, conn:
        conn.execute("UPDATE alembic_version SET version_num = ?", (revision,))


def revision_of(path: Path) -> tuple[str, ...]:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return tuple(r[0] for r in conn.execute("SELECT version_num FROM alembic_version"))


def fingerprint(path: Path) -> tuple[str, int, tuple[str, ...]]:
    """The file's bytes, its mtime and its schema revision."""
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest, path.stat().st_mtime_ns, revision_of(path)


@pytest.fixture
def lock_holder(database: Path) -> Iterator[sqlite3.Connection]:
    """Another process's view: a connection that takes the write lock (BEGIN EXCLUSIVE, as an
    import or a `sqlite3` shell might) when the test says so."""
    database.parent.mkdir(parents=True, exist_ok=True)
    holder = sqlite3.connect(database, isolation_level=None)
    yield holder
    holder.close()


@pytest.mark.parametrize("args", READ_ONLY + NO_DATABASE, ids=" ".join)
def test_read_only_commands_never_create_a_missing_database(env, database, args) -> None:  # type: ignore[no-untyped-def]
    result = cli(env, *args)
    assert not database.parent.exists()  # neither the file nor its directory
    assert "Traceback" not in result.stderr
    if args in NO_DATABASE:
        assert result.returncode == 0, result.stderr  # they never open the database
    else:
        assert result.returncode == 2
        assert result.stderr.strip() == f"database: no file at {database}: {HINT} to create it"


@pytest.mark.parametrize("args", READ_ONLY + NO_DATABASE, ids=" ".join)
def test_read_only_commands_never_migrate_an_older_database(env, database, args) -> None:  # type: ignore[no-untyped-def]
    at_revision(database, "0009")
    before = fingerprint(database)
    result = cli(env, *args)
    assert fingerprint(database) == before
    assert "Traceback" not in result.stderr
    if args in NO_DATABASE:
        assert result.returncode == 0, result.stderr
    else:
        assert result.returncode == 2
        assert result.stderr.strip() == (
            f"database: the schema is at revision 0009; this version needs {NEWEST}: {HINT} "
            "(only migrate, run and serve change the schema)"
        )


@pytest.mark.parametrize("args", [("import", "CSV"), ("replan",), ("api-key", "create", "k")])
def test_writing_commands_need_the_newest_schema_and_never_change_it(  # type: ignore[no-untyped-def]
    env, database, tmp_path, args
) -> None:
    at_revision(database, "0009")
    before = fingerprint(database)
    upload = tmp_path / "in.csv"
    upload.write_text("appointment_id\n")
    result = cli(env, *(str(upload) if a == "CSV" else a for a in args))
    assert fingerprint(database) == before
    assert result.returncode == 2
    assert f"the schema is at revision 0009; this version needs {NEWEST}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", READ_ONLY, ids=" ".join)
def test_read_only_commands_read_a_locked_database_without_writing(  # type: ignore[no-untyped-def]
    env, database, lock_holder, args
) -> None:
    at_revision(database, "head")
    before = fingerprint(database)
    lock_holder.execute("BEGIN EXCLUSIVE")  # WAL, as the service leaves it: readers go on
    lock_holder.execute("DELETE FROM api_keys")
    result = cli(env, *args)
    lock_holder.execute("ROLLBACK")
    assert fingerprint(database) == before
    assert "Traceback" not in result.stderr
    if args[0] == "status":
        assert result.returncode == 0, result.stderr
    else:  # read fine, and found nothing
        assert (result.returncode, result.stderr.strip()) == (2, "no appointment with id 'APT1'")


@pytest.mark.parametrize("args", READ_ONLY, ids=" ".join)
def test_read_only_commands_give_up_on_a_file_locked_against_readers(  # type: ignore[no-untyped-def]
    env, database, lock_holder, args
) -> None:
    at_revision(database, "head")
    lock_holder.execute("PRAGMA journal_mode=DELETE")  # another tool's file: a lock stops readers
    before = fingerprint(database)
    lock_holder.execute("BEGIN EXCLUSIVE")
    lock_holder.execute("DELETE FROM api_keys")
    result = cli(env, *args)
    lock_holder.execute("ROLLBACK")
    assert fingerprint(database) == before
    assert result.returncode == 2
    assert "is locked by another process; trying again in 0.5 s" in result.stderr
    assert f"database: sqlite:///{database} is still locked by another process after" in (
        result.stderr
    )
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [("run", "--no-http"), ("serve",), ("migrate",)], ids=" ".join)
def test_a_start_on_a_locked_database_gives_up_with_a_clear_error(  # type: ignore[no-untyped-def]
    env, database, lock_holder, args
) -> None:
    at_revision(database, "0009")
    lock_holder.execute("BEGIN EXCLUSIVE")
    result = cli(env, *args)
    lock_holder.execute("ROLLBACK")
    assert result.returncode == 2
    assert "WARNING reminder_service.store.startup: database sqlite:///" in result.stderr
    assert "is locked by another process; trying again in 0.5 s (waited" in result.stderr
    assert "is still locked by another process after" in result.stderr
    assert "Traceback" not in result.stderr
    assert revision_of(database) == ("0009",)


@pytest.mark.parametrize("args", [("migrate",), ("run", "--no-http")], ids=" ".join)
def test_a_start_on_a_database_a_newer_release_migrated_says_so(env, database, args) -> None:  # type: ignore[no-untyped-def]
    at_revision(database, "head")
    stamp(database, "0099")
    before = fingerprint(database)
    result = cli(env, *args)
    assert fingerprint(database) == before
    assert (result.returncode, result.stderr.strip()) == (
        2,
        f"database: the schema is at revision 0099, newer than this version knows (its newest "
        f"is {NEWEST}): use the release that migrated it",
    )


def test_migrate_waits_for_the_lock_and_then_migrates(env, database, lock_holder) -> None:  # type: ignore[no-untyped-def]
    at_revision(database, "0009")
    lock_holder.execute("BEGIN EXCLUSIVE")
    process = subprocess.Popen(
        [sys.executable, "-m", "reminder_service", "migrate"],
        env={**env, "REMINDER_DATABASE_WAIT_SECONDS": "600"},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip
    try:
        assert process.stderr is not None
        first = process.stderr.readline()  # blocks until migrate says it is waiting
        assert "is locked by another process; trying again" in first, first
        lock_holder.execute("ROLLBACK")
        out, rest = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, rest
    assert "database is at the newest schema revision" in out
    assert revision_of(database) == (NEWEST,)


def test_run_gives_up_on_an_unreachable_postgresql_with_a_clear_error(env) -> None:  # type: ignore[no-untyped-def]
    port = free_port()
    url = f"postgresql://reminders:s3cret@127.0.0.1:{port}/reminders"
    result = cli({**env, "REMINDER_DATABASE_URL": url}, "run", "--no-http")
    assert result.returncode == 2
    where = f"postgresql://reminders:***@127.0.0.1:{port}/reminders"
    assert f"database {where} is unavailable (connection failed:" in result.stderr
    assert "Connection refused" in result.stderr
    assert f"database: {where} is still unavailable" in result.stderr
    assert "Traceback" not in result.stderr and "s3cret" not in result.stderr
