"""Settings from the environment (see config/example.env). Frozen; secrets masked when shown."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from sqlalchemy.engine import make_url


class SettingsError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = "sqlite:///./var/reminders.db"
    outbox_dir: Path = Path("./var/outbox")
    config_dir: Path = Path("./config")
    templates_dir: Path = Path("./templates")
    email_from: str = "reminders@localhost"
    log_level: str = "INFO"
    dispatch_batch: int = 200  # reminders claimed (and prepared) together
    lease_seconds: int = 60
    # Reminders one dispatcher process holds claimed and unrecorded at once. After a crash, at
    # most this many outcomes are unknown, each asked of the provider before a second send. A
    # reminder is held about 0.2 s from claim to record at 100 ms provider latency, so this
    # bounds one process at about 2,000 texts/s (with Twilio, the rate limit bounds it first).
    max_in_flight: int = 400
    retry_base_seconds: int = 30  # the first retry's delay; each next one doubles, with jitter,
    retry_cap_seconds: int = 3600  # up to this
    max_idle_seconds: int = 30  # the dispatcher re-checks at least this often
    watch_seconds: float = 1.0  # how often it looks for rows added by other processes
    # Reminders due within this many hours are stored; later ones are added as they come within
    # it, every `materialize_minutes` (see services/materializing.py).
    planning_horizon_hours: int = 48
    materialize_minutes: int = 5
    # Delivery: which channel sends each kind of message.
    sms_channel: str = "outbox"  # outbox | twilio
    email_channel: str = "outbox"  # outbox | smtp
    sms_concurrency: int = 200  # SMS requests in flight at once
    sms_rate_limit: float = 10.0  # per sender, messages per second (the provider's limit)
    email_concurrency: int = 50  # emails being handed to the mail server at once
    # HTTP: webhooks and health. The public URL is how the provider reaches us (Twilio signs it).
    http_host: str = "127.0.0.1"
    http_port: int = 8080
    public_url: str = ""
    twilio: TwilioSettings | None = None  # from TWILIO_*, when sms_channel is twilio
    smtp: SmtpSettings | None = None  # from SMTP_*, when email_channel is smtp
    # At start, how long to wait for a database that is locked or unreachable before giving up.
    # Last: settings are also built positionally, in the order above.
    database_wait_seconds: float = 300.0
    # List-Unsubscribe (see channels/unsubscribe.py): the HMAC key of the tokens in one-click
    # links and in mailto tags the bounce listener reads; and the mailbox staff read for
    # unsubscribe emails when the service reads none itself (default: the clinic's From).
    unsubscribe_secret: str = ""
    unsubscribe_mailbox: str = ""
    # A FHIR RelatedPerson carries no consent to texts: true says the clinic collects both (the
    # patient's choice of copies, the caregiver's own consent) before sending one. (Added after
    # the fields above for the same reason: positional construction.)
    fhir_caregiver_copies: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values = _read(cls, "REMINDER_", env, skip={"twilio", "smtp"})
        if values.get("sms_channel") == "twilio":
            values["twilio"] = TwilioSettings(**_read(TwilioSettings, "TWILIO_", env))  # type: ignore[arg-type]
        if values.get("email_channel") == "smtp":
            values["smtp"] = SmtpSettings(**_read(SmtpSettings, "SMTP_", env))  # type: ignore[arg-type]
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        try:
            make_url(self.database_url)
        except Exception as exc:
            raise SettingsError(f"REMINDER_DATABASE_URL: not a database URL ({exc})") from None
        if self.database_wait_seconds < 0:
            raise SettingsError("REMINDER_DATABASE_WAIT_SECONDS: must be 0 or more")
        for name in (
            "dispatch_batch",
            "lease_seconds",
            "max_in_flight",
            "retry_base_seconds",
            "retry_cap_seconds",
            "max_idle_seconds",
            "planning_horizon_hours",
            "materialize_minutes",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"REMINDER_{name.upper()}: must be 1 or more")
        self._validate_delivery()
        if self.materialize_minutes * 4 > self.planning_horizon_hours * 60:
            raise SettingsError(
                "REMINDER_MATERIALIZE_MINUTES: must be at most a quarter of "
                "REMINDER_PLANNING_HORIZON_HOURS, so reminders are stored well before they are due"
            )

    @property
    def sender_address(self) -> str:
        """The service-wide From address: SMTP_FROM with SMTP, else REMINDER_EMAIL_FROM."""
        if self.email_channel == "smtp" and self.smtp is not None and self.smtp.from_:
            return self.smtp.from_
        return self.email_from

    def _validate_delivery(self) -> None:
        if self.sms_channel not in SMS_CHANNELS:
            raise SettingsError(f"REMINDER_SMS_CHANNEL: must be one of {', '.join(SMS_CHANNELS)}")
        if self.email_channel not in EMAIL_CHANNELS:
            raise SettingsError(
                f"REMINDER_EMAIL_CHANNEL: must be one of {', '.join(EMAIL_CHANNELS)}"
            )
        for name in ("sms_concurrency", "email_concurrency", "http_port"):
            if getattr(self, name) < 1:
                raise SettingsError(f"REMINDER_{name.upper()}: must be 1 or more")
        if self.sms_rate_limit <= 0:
            raise SettingsError("REMINDER_SMS_RATE_LIMIT: must be more than 0")
        if self.public_url and not self.public_url.startswith(("https://", "http://")):
            raise SettingsError("REMINDER_PUBLIC_URL: must start with https:// (or http://)")
        if self.unsubscribe_secret and len(self.unsubscribe_secret) < 16:
            raise SettingsError("REMINDER_UNSUBSCRIBE_SECRET: at least 16 characters")
        if self.unsubscribe_mailbox and not re.fullmatch(
            r"[^@\s<>\"]+@[^@\s<>\"]+\.[^@\s<>\"]+", self.unsubscribe_mailbox
        ):
            raise SettingsError("REMINDER_UNSUBSCRIBE_MAILBOX: must be an address local@domain")
        if self.sms_channel == "twilio":
            if self.twilio is None:
                raise SettingsError("TWILIO_ACCOUNT_SID: required when REMINDER_SMS_CHANNEL=twilio")
            self.twilio.validate()
            if not self.public_url:
                raise SettingsError(
                    "REMINDER_PUBLIC_URL: required with Twilio, for its delivery status callbacks"
                )
        if self.email_channel == "smtp":
            if self.smtp is None:
                raise SettingsError("SMTP_HOST: required when REMINDER_EMAIL_CHANNEL=smtp")
            self.smtp.validate()

    def describe(self) -> dict[str, str]:
        """For logs and `status`: passwords and tokens never appear."""
        shown = {f.name: str(getattr(self, f.name)) for f in fields(self)}
        shown["database_url"] = make_url(self.database_url).render_as_string(hide_password=True)
        shown["unsubscribe_secret"] = MASK if self.unsubscribe_secret else ""
        for name, nested in (("twilio", self.twilio), ("smtp", self.smtp)):
            shown[name] = str(nested.describe()) if nested is not None else "None"
        return shown


SMS_CHANNELS = ("outbox", "twilio")
EMAIL_CHANNELS = ("outbox", "smtp")
MASK = "***"


@dataclass(frozen=True, slots=True)
class TwilioSettings:
    """TWILIO_*: the account, the sender, and optionally another API host (a staging proxy or a
    local test server)."""

    account_sid: str = ""
    auth_token: str = ""
    from_number: str = ""  # E.164; or a messaging service:
    messaging_service_sid: str = ""
    api_base_url: str = ""  # default Twilio's own
    timeout_seconds: float = 10.0  # per request: connect and answer

    def validate(self) -> None:
        if not self.account_sid:
            raise SettingsError("TWILIO_ACCOUNT_SID: required when REMINDER_SMS_CHANNEL=twilio")
        if not self.auth_token:
            raise SettingsError("TWILIO_AUTH_TOKEN: required when REMINDER_SMS_CHANNEL=twilio")
        if bool(self.from_number) == bool(self.messaging_service_sid):
            raise SettingsError(
                "TWILIO_FROM_NUMBER or TWILIO_MESSAGING_SERVICE_SID: set exactly one"
            )
        if self.api_base_url and not self.api_base_url.startswith(("https://", "http://")):
            raise SettingsError("TWILIO_API_BASE_URL: must be an http(s) URL")
        if self.timeout_seconds <= 0:
            raise SettingsError("TWILIO_TIMEOUT_SECONDS: must be more than 0")

    @property
    def sender(self) -> str:
        return self.messaging_service_sid or self.from_number

    def describe(self) -> dict[str, str]:
        shown = {f.name: str(getattr(self, f.name)) for f in fields(self)}
        shown["auth_token"] = MASK if self.auth_token else ""
        return shown


SMTP_SECURITY = ("starttls", "tls", "none")
SMTP_DEFAULT_PORTS = {"starttls": 587, "tls": 465, "none": 25}


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """SMTP_*: the mail server. Certificates are always verified (SMTP_CA_FILE adds a private
    CA); `none` sends in clear and is only for a relay on the same host."""

    host: str = ""
    port: int = 0  # 0: 587 for starttls, 465 for tls, 25 for none
    username: str = ""
    password: str = ""
    security: str = "starttls"
    from_: str = ""  # SMTP_FROM: the sender address
    timeout_seconds: float = 30.0
    connections: int = 4  # kept open and reused across sends
    ca_file: str = ""
    # Bounces (see channels/bounces.py): each email's envelope sender is this address tagged
    # with its reminder and an HMAC made with the secret; `reminder-service bounces` reads them.
    bounce_address: str = ""
    bounce_secret: str = ""

    def validate(self) -> None:
        if not self.host:
            raise SettingsError("SMTP_HOST: required when REMINDER_EMAIL_CHANNEL=smtp")
        if self.security not in SMTP_SECURITY:
            raise SettingsError(f"SMTP_SECURITY: must be one of {', '.join(SMTP_SECURITY)}")
        if not self.from_ or "@" not in self.from_:
            raise SettingsError("SMTP_FROM: required, an email address")
        if bool(self.username) != bool(self.password):
            raise SettingsError("SMTP_USERNAME and SMTP_PASSWORD: set both or neither")
        if self.connections < 1:
            raise SettingsError("SMTP_CONNECTIONS: must be 1 or more")
        if self.timeout_seconds <= 0:
            raise SettingsError("SMTP_TIMEOUT_SECONDS: must be more than 0")
        if self.ca_file and not Path(self.ca_file).is_file():
            raise SettingsError(f"SMTP_CA_FILE: no such file {self.ca_file!r}")
        if self.bounce_address and not re.fullmatch(r"[^@\s+]+@[^@\s]+", self.bounce_address):
            raise SettingsError("SMTP_BOUNCE_ADDRESS: must be an address local@domain, with no +")
        if self.bounce_address and len(self.bounce_secret) < 16:
            raise SettingsError("SMTP_BOUNCE_SECRET: required with SMTP_BOUNCE_ADDRESS, 16+ chars")

    @property
    def effective_port(self) -> int:
        return self.port or SMTP_DEFAULT_PORTS[self.security]

    def describe(self) -> dict[str, str]:
        shown = {f.name.rstrip("_"): str(getattr(self, f.name)) for f in fields(self)}
        shown["password"] = MASK if self.password else ""
        shown["bounce_secret"] = MASK if self.bounce_secret else ""
        return shown


def _read(
    cls: type, prefix: str, env: Mapping[str, str], skip: frozenset[str] | set[str] = frozenset()
) -> dict[str, object]:
    values: dict[str, object] = {}
    for f in fields(cls):
        if f.name in skip:
            continue
        variable = f"{prefix}{f.name.rstrip('_').upper()}"
        raw = env.get(variable)
        if raw is None or raw == "":
            continue
        values[f.name] = _convert(variable, raw, f.type)
    return values


def _convert(variable: str, raw: str, kind: object) -> object:
    text = raw.strip()
    if kind in ("bool", bool):
        if text.lower() in ("true", "yes", "1"):
            return True
        if text.lower() in ("false", "no", "0"):
            return False
        raise SettingsError(f"{variable}: {text!r} is not true or false")
    try:
        if kind in ("int", int):
            return int(text)
        if kind in ("float", float):
            return float(text)
    except ValueError:
        raise SettingsError(f"{variable}: {text!r} is not a number") from None
    if kind in ("Path", Path):
        return Path(text)
    return text
