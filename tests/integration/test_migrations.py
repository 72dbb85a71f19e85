"""The Alembic migrations build exactly the schema the code declares, on SQLite and PostgreSQL."""

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text

from reminder_service.store.engine import make_engine, migrate
from reminder_service.store.tables import metadata


def test_migrations_match_the_tables(database_url: str) -> None:
    engine = make_engine(database_url)
    try:
        migrate(engine)
        migrate(engine)  # idempotent: every start runs it
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
        assert diff == []
    finally:
        engine.dispose()


def test_postgresql_runs_use_a_schema_of_their_own(postgres_url: str | None) -> None:
    """Two test runs on one machine must not reset each other's tables (see conftest)."""
    if postgres_url is None:
        pytest.skip("PostgreSQL tests need REMINDER_TEST_POSTGRES_URL")
    engine = make_engine(postgres_url)
    try:
        migrate(engine)
        with engine.connect() as conn:
            schema = conn.execute(text("SELECT current_schema()")).scalar_one()
            where = conn.execute(
                text("SELECT table_schema FROM information_schema.tables WHERE table_name = :t"),
                {"t": "reminders"},
            ).scalars()
            assert schema.startswith("test_run_")
            assert schema in set(where)
    finally:
        engine.dispose()
