"""SQLite's page cache: small on every pooled connection, large only for an import's transaction,
so the connections the dispatcher keeps never grow to an import's cache."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Connection, Engine

from reminder_service.store.appointments import AppointmentStore
from reminder_service.store.engine import CACHE_KIB, IMPORT_CACHE_KIB, make_engine, reading


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'cache.db'}")
    yield engine
    engine.dispose()


def cache_kib(conn: Connection) -> int:
    return -int(conn.exec_driver_sql("PRAGMA cache_size").scalar_one())


def dbapi_id(conn: Connection) -> int:
    return id(conn.connection.dbapi_connection)


def test_a_connection_has_the_small_cache(engine: Engine) -> None:
    with reading(engine) as conn:
        assert cache_kib(conn) == CACHE_KIB
    with engine.begin() as conn:
        assert cache_kib(conn) == CACHE_KIB


def test_an_import_has_the_large_cache_for_its_transaction_only(engine: Engine) -> None:
    with engine.begin() as conn:
        AppointmentStore(conn).one_import_at_a_time()
        assert cache_kib(conn) == IMPORT_CACHE_KIB
        used = dbapi_id(conn)
    assert engine.pool.checkedin() == 1  # the import's connection is the one taken next
    with reading(engine) as conn:
        assert dbapi_id(conn) == used
        assert cache_kib(conn) == CACHE_KIB


def test_an_import_that_fails_gives_the_cache_back_too(engine: Engine) -> None:
    with pytest.raises(RuntimeError), engine.begin() as conn:
        AppointmentStore(conn).one_import_at_a_time()
        raise RuntimeError("a row the import rejects")
    with engine.begin() as conn:
        assert cache_kib(conn) == CACHE_KIB
