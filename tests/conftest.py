"""Shared fixtures: a settable clock, and a database that is SQLite or the real PostgreSQL."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from sqlalchemy import text
from sqlalchemy.engine import make_url

from reminder_service import bootstrap
from reminder_service.settings import Settings
from reminder_service.store.engine import make_engine
from reminder_service.store.tables import metadata
from tests.factories import CONFIG_DIR, TEMPLATES_DIR, local
from tests.fakes import FakeClock

POSTGRES_ENV = "REMINDER_TEST_POSTGRES_URL"

# Property-based tests: bounded so the suite stays fast ("ci", the default); `make fuzz` runs the
# same properties far longer ("fuzz"). No deadline: a slow example on a busy machine is no bug.
hypothesis_settings.register_profile(
    "ci",
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
hypothesis_settings.register_profile(
    "fuzz",
    max_examples=20_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
hypothesis_settings.load_profile(os.environ.get("REMINDER_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(local("Europe/London", 2026, 11, 19, 11, 0))


def _reset_postgres(url: str) -> None:
    engine = make_engine(url)
    with engine.begin() as conn:
        metadata.drop_all(conn)
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str | None]:
    """The PostgreSQL database, in a schema of this run's own (dropped at the end), so two runs
    on one machine, or one run and a service, never reset each other's tables."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        yield None
        return
    schema = f"test_run_{os.getpid()}_{secrets.token_hex(4)}"
    admin = make_engine(url)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_url: str | None
) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'reminders.db'}"
        return
    if not postgres_url:
        pytest.skip(
            f"PostgreSQL tests need {POSTGRES_ENV} (e.g. postgresql://postgres@127.0.0.1/test)"
        )
    _reset_postgres(postgres_url)
    yield postgres_url


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url,
        outbox_dir=tmp_path / "outbox",
        config_dir=CONFIG_DIR,
        templates_dir=TEMPLATES_DIR,
    )


@pytest.fixture
def service(settings: Settings, clock: FakeClock) -> Iterator[bootstrap.Service]:
    built = bootstrap.build(settings, clock)
    yield built
    built.engine.dispose()


@pytest.fixture
def whole_plan_service(settings: Settings, clock: FakeClock) -> Iterator[bootstrap.Service]:
    """A planning horizon of 90 days: an import stores every reminder of the test appointments
    (weeks ahead), for tests about how whole plans are reconciled."""
    built = bootstrap.build(replace(settings, planning_horizon_hours=90 * 24), clock)
    yield built
    built.engine.dispose()
