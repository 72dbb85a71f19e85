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


def test_0013_counts_the_replies_the_service_answered_as_handled_and_goes_back(
    database_url: str,
) -> None:
    from alembic import command  # noqa: PLC0415

    from reminder_service.store.engine import alembic_config  # noqa: PLC0415

    engine = make_engine(database_url)
    try:
        with engine.begin() as conn:
            command.upgrade(alembic_config(conn), "0012")
            for n, kind in enumerate(["opt_out", "confirm", "other", "new_time"]):
                conn.execute(
                    text(
                        "INSERT INTO inbound_messages (message_sid, received_at, phone, body, kind)"
                        " VALUES (:sid, '2026-11-19 11:00:00', '+447700900123', 'x', :kind)"
                    ),
                    {"sid": f"SM{n}", "kind": kind},
                )
        migrate(engine)
        with engine.connect() as conn:
            handled = conn.execute(
                text("SELECT kind, handled_by FROM inbound_messages ORDER BY id")
            ).all()
        assert [tuple(row) for row in handled] == [
            ("opt_out", "automatic"), ("confirm", "automatic"), ("other", None),
            ("new_time", None),
        ]  # fmt: skip
        with engine.begin() as conn:
            command.downgrade(alembic_config(conn), "0012")
            columns = conn.execute(text("SELECT * FROM inbound_messages")).keys()
        assert "handled_by" not in columns
        migrate(engine)
    finally:
        engine.dispose()
