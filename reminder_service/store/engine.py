"""Engines for SQLite and PostgreSQL, and schema migration to the newest revision."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sqlalchemy import Engine, create_engine, event, inspect, text
from sqlalchemy.engine import URL, Connection, make_url

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest revision in migrations/versions (a test checks it against Alembic's reading of the
# scripts). A database already there is read with one query: start-up then never loads Alembic,
# which with Mako and Pygments costs about 0.1 s of CPU.
NEWEST_REVISION = "0016"
VERSION_TABLE = "alembic_version"
READ_ONLY = "reminder_read_only"
BUSY_SECONDS = 30.0  # how long a SQLite statement waits for another writer's lock
CONNECT_SECONDS = 10  # PostgreSQL: an unreachable host fails in this, not the OS's minutes
# Serialises migrations on PostgreSQL (two services starting at once): any fixed 64-bit number.
MIGRATION_LOCK_KEY = 0x72656D696E646572  # "reminder"
# SQLite's page cache, per pooled connection, in KiB: it fills up to its size and stays full,
# so each connection the pool keeps would hold this much for good. A small one for the service's
# own reads and writes (about SQLite's default); an import asks for a large one (its index pages
# stay hot) for its transaction only (`import_cache`).
CACHE_KIB = 2048
IMPORT_CACHE_KIB = 65536
_IMPORT_CACHE = "reminder_import_cache"  # in a pooled connection's info while it has one


@contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection for queries that write nothing."""
    with engine.connect() as conn:
        yield conn.execution_options(**{READ_ONLY: True})


def import_cache(conn: Connection) -> None:
    """SQLite: a large page cache for this connection until it returns to the pool (an import's
    transaction: its index pages stay hot)."""
    if conn.dialect.name != "sqlite":
        return
    conn.exec_driver_sql(f"PRAGMA cache_size=-{IMPORT_CACHE_KIB}")
    conn.connection.info[_IMPORT_CACHE] = True


def ping(engine: Engine) -> None:
    """One trivial read; raises whatever the database raises."""
    with reading(engine) as conn:
        conn.execute(text("SELECT 1"))


def make_engine(url: str, *, read_only: bool = False, busy_seconds: float = BUSY_SECONDS) -> Engine:
    """An engine for `url`. `read_only`: the database refuses every write (SQLite opens the file
    read-only and never creates it; PostgreSQL makes every transaction READ ONLY)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed, read_only=read_only, busy_seconds=busy_seconds)
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    # The URL object, never str(): SQLAlchemy writes a URL's password as "***" in its text.
    return create_engine(parsed, pool_pre_ping=True, connect_args=_postgres_args(parsed, read_only))


def _postgres_args(url: URL, read_only: bool) -> dict[str, Any]:
    if url.get_driver_name() != "psycopg":
        return {}
    args: dict[str, Any] = {}
    if "connect_timeout" not in url.query:
        args["connect_timeout"] = CONNECT_SECONDS
    if read_only:
        # Added to the URL's own options (a search_path, say), which this argument replaces.
        given = url.query.get("options", "")
        given = given if isinstance(given, str) else " ".join(given)
        args["options"] = f"{given} -c default_transaction_read_only=on".strip()
    return args


def _sqlite_engine(url: URL, *, read_only: bool, busy_seconds: float) -> Engine:
    database = url.database
    on_disk = bool(database) and database != ":memory:" and not url.query.get("uri")
    if on_disk and read_only:
        # mode=ro: SQLite refuses writes and never creates the file (nor a missing parent).
        absolute = Path(str(database)).resolve()
        url = url.set(database="file:" + quote(str(absolute))).update_query_dict(
            {"mode": "ro", "uri": "true"}
        )
    elif on_disk:
        Path(str(database)).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": busy_seconds})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is deferred and late).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if read_only:
            cursor.execute("PRAGMA query_only=ON")
        else:
            cursor.execute("PRAGMA journal_mode=WAL")  # readers never block the dispatcher's writes
            cursor.execute("PRAGMA synchronous=FULL")  # a recorded send survives a power cut
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_seconds * 1000)}")
        cursor.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        cursor.close()

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: Any, record: Any) -> None:
        # Back to the small cache as the import's connection returns to the pool: SQLite frees
        # the pages over the new size at once.
        if record.info.pop(_IMPORT_CACHE, False) and dbapi_connection is not None:
            dbapi_connection.execute(f"PRAGMA cache_size=-{CACHE_KIB}")

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # IMMEDIATE takes the write lock up front, so two dispatchers can never both claim a row
        # and no transaction fails half-way when upgrading a read lock. Reads (see `reading`)
        # take no lock: under WAL they never wait for a writer, even a long import.
        if read_only or connection.get_execution_options().get(READ_ONLY):
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def schema_revisions(connection: Connection) -> tuple[str, ...]:
    """The revisions the schema is at, as Alembic records them; () for a database without one."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return ()
    query = text(f"SELECT version_num FROM {VERSION_TABLE}")  # noqa: S608 - a constant name
    return tuple(connection.execute(query).scalars())


def alembic_config(connection: Connection | None = None) -> Config:
    from alembic.config import Config  # noqa: PLC0415 - only to migrate (see NEWEST_REVISION)

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


def migrate(engine: Engine, *, lock_seconds: float | None = None) -> None:
    """Bring the schema to the newest revision (idempotent; safe at every start).

    On PostgreSQL, migrations take turns (an advisory lock), and `lock_seconds` bounds the wait
    for that lock and for each table's: past it, LockNotAvailable is raised (and the caller may
    try again) rather than waiting with no end behind another session's transaction.

    The revision is read after the lock is taken (another process may be migrating), and at the
    newest one Alembic has nothing to do, so it is not loaded."""
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            limit_lock_wait(connection, lock_seconds)
            connection.execute(
                text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
            )
        if schema_revisions(connection) == (NEWEST_REVISION,):
            return
        from alembic import command  # noqa: PLC0415 - see NEWEST_REVISION

        command.upgrade(alembic_config(connection), "head")


def limit_lock_wait(connection: Connection, seconds: float | None) -> None:
    """PostgreSQL: for the rest of this transaction, a lock not granted within `seconds` raises
    LockNotAvailable. (SQLite's equivalent is the engine's busy timeout.)"""
    if seconds is not None and connection.dialect.name == "postgresql":
        timeout = f"{max(1, int(seconds * 1000))}ms"
        connection.execute(text("SELECT set_config('lock_timeout', :t, true)"), {"t": timeout})
