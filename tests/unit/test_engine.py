"""Building the database engine from REMINDER_DATABASE_URL (no connection is made here)."""

from __future__ import annotations

from reminder_service.store.engine import make_engine


def test_a_postgres_password_reaches_the_driver_intact() -> None:
    # SQLAlchemy writes a URL's password as "***" when it turns the URL into text; an engine
    # built from that text would log in with "***" wherever the database asks for a password.
    engine = make_engine("postgresql://reminders:s3cr%40t@db.example.org:5432/reminders")
    try:
        assert engine.url.drivername == "postgresql+psycopg"
        assert engine.url.password == "s3cr@t"
        assert (engine.url.host, engine.url.database) == ("db.example.org", "reminders")
    finally:
        engine.dispose()
