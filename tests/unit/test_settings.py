from pathlib import Path

import pytest

from reminder_service.channels.bounces import bounce_address
from reminder_service.settings import Settings, SettingsError


def test_defaults_are_the_embedded_sqlite_and_file_outbox():
    settings = Settings.from_env({})
    assert settings.database_url == "sqlite:///./var/reminders.db"
    assert settings.outbox_dir == Path("./var/outbox")
    assert settings.config_dir == Path("./config") and settings.templates_dir == Path("./templates")


def test_environment_overrides_and_converts():
    settings = Settings.from_env(
        {
            "REMINDER_DATABASE_URL": "postgresql://svc:s3cret@db.internal/reminders",
            "REMINDER_OUTBOX_DIR": "/data/outbox",
            "REMINDER_LEASE_SECONDS": "5",
            "REMINDER_WATCH_SECONDS": "0.5",
            "REMINDER_DATABASE_WAIT_SECONDS": "30",
        }
    )
    assert settings.database_wait_seconds == 30.0
    assert settings.outbox_dir == Path("/data/outbox")
    assert settings.lease_seconds == 5 and settings.watch_seconds == 0.5
    shown = settings.describe()
    assert "s3cret" not in str(shown) and shown["database_url"].startswith("postgresql://svc:***@")


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REMINDER_LEASE_SECONDS": "soon"}, "REMINDER_LEASE_SECONDS: 'soon' is not a number"),
        ({"REMINDER_DISPATCH_BATCH": "0"}, "REMINDER_DISPATCH_BATCH: must be 1 or more"),
        ({"REMINDER_MAX_IN_FLIGHT": "0"}, "REMINDER_MAX_IN_FLIGHT: must be 1 or more"),
        ({"REMINDER_RETRY_BASE_SECONDS": "0"}, "REMINDER_RETRY_BASE_SECONDS: must be 1 or more"),
        ({"REMINDER_DATABASE_URL": "not a url"}, "REMINDER_DATABASE_URL: not a database URL"),
        (
            {"REMINDER_DATABASE_WAIT_SECONDS": "-1"},
            "REMINDER_DATABASE_WAIT_SECONDS: must be 0 or more",
        ),
        (
            {"REMINDER_PLANNING_HORIZON_HOURS": "0"},
            "REMINDER_PLANNING_HORIZON_HOURS: must be 1 or more",
        ),
        (
            {"REMINDER_PLANNING_HORIZON_HOURS": "2", "REMINDER_MATERIALIZE_MINUTES": "31"},
            "REMINDER_MATERIALIZE_MINUTES: must be at most a quarter",
        ),
    ],
)
def test_bad_settings_name_the_variable(env, message):  # type: ignore[no-untyped-def]
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


SMTP_ENV = {
    "REMINDER_EMAIL_CHANNEL": "smtp",
    "SMTP_HOST": "mail.clinic.example",
    "SMTP_FROM": "reminders@clinic.example",
}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"SMTP_BOUNCE_ADDRESS": "bounces"}, "SMTP_BOUNCE_ADDRESS: must be an address"),
        ({"SMTP_BOUNCE_ADDRESS": "b+x@mail.example"}, "SMTP_BOUNCE_ADDRESS: must be an address"),
        ({"SMTP_BOUNCE_ADDRESS": "b@mail.example"}, "SMTP_BOUNCE_SECRET: required"),
        (
            {"SMTP_BOUNCE_ADDRESS": "b@mail.example", "SMTP_BOUNCE_SECRET": "short"},
            "SMTP_BOUNCE_SECRET: required",
        ),
    ],
)
def test_bounce_settings_are_checked(extra, message):  # type: ignore[no-untyped-def]
    with pytest.raises(SettingsError, match=message):
        Settings.from_env({**SMTP_ENV, **extra}).validate()


def test_the_bounce_secret_is_never_shown():  # type: ignore[no-untyped-def]
    env = {**SMTP_ENV, "SMTP_BOUNCE_ADDRESS": "b@mail.example", "SMTP_BOUNCE_SECRET": "k" * 20}
    settings = Settings.from_env(env)
    settings.validate()
    assert settings.smtp is not None and bounce_address(settings.smtp) is not None
    assert "k" * 20 not in str(settings.describe())


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"REMINDER_UNSUBSCRIBE_SECRET": "short"}, "REMINDER_UNSUBSCRIBE_SECRET: at least 16"),
        ({"REMINDER_UNSUBSCRIBE_MAILBOX": "staff"}, "REMINDER_UNSUBSCRIBE_MAILBOX: must be"),
        ({"REMINDER_UNSUBSCRIBE_MAILBOX": "a b@x.example"}, "REMINDER_UNSUBSCRIBE_MAILBOX"),
    ],
)
def test_unsubscribe_settings_are_checked(env, message):  # type: ignore[no-untyped-def]
    with pytest.raises(SettingsError, match=message):
        Settings.from_env(env)


def test_the_unsubscribe_secret_is_never_shown_and_the_sender_is_smtps():  # type: ignore[no-untyped-def]
    settings = Settings.from_env({**SMTP_ENV, "REMINDER_UNSUBSCRIBE_SECRET": "u" * 20})
    assert settings.unsubscribe_secret == "u" * 20
    assert "u" * 20 not in str(settings.describe())
    assert settings.sender_address == "reminders@clinic.example"  # SMTP_FROM, with SMTP
    assert Settings.from_env({}).sender_address == "reminders@localhost"  # REMINDER_EMAIL_FROM


def test_fhir_caregiver_copies_is_off_unless_said_and_must_be_a_boolean():
    assert Settings.from_env({}).fhir_caregiver_copies is False
    assert Settings.from_env({"REMINDER_FHIR_CAREGIVER_COPIES": "true"}).fhir_caregiver_copies
    assert not Settings.from_env({"REMINDER_FHIR_CAREGIVER_COPIES": "no"}).fhir_caregiver_copies
    with pytest.raises(SettingsError, match="REMINDER_FHIR_CAREGIVER_COPIES: 'maybe' is not"):
        Settings.from_env({"REMINDER_FHIR_CAREGIVER_COPIES": "maybe"})
