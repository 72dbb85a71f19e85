"""Settings from the environment (see config/example.env). Frozen; secrets masked when shown."""

from __future__ import annotations

import os
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
    dispatch_batch: int = 100
    lease_seconds: int = 60
    max_idle_seconds: int = 30  # the dispatcher re-checks at least this often
    watch_seconds: float = 1.0  # how often it looks for rows added by other processes
    # Reminders due within this many hours are stored; later ones are added as they come within
    # it, every `materialize_minutes` (see services/materializing.py).
    planning_horizon_hours: int = 48
    materialize_minutes: int = 5

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f"REMINDER_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f.name, raw, f.type)
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        try:
            make_url(self.database_url)
        except Exception as exc:
            raise SettingsError(f"REMINDER_DATABASE_URL: not a database URL ({exc})") from None
        for name in (
            "dispatch_batch",
            "lease_seconds",
            "max_idle_seconds",
            "planning_horizon_hours",
            "materialize_minutes",
        ):
            if getattr(self, name) < 1:
                raise SettingsError(f"REMINDER_{name.upper()}: must be 1 or more")
        if self.materialize_minutes * 4 > self.planning_horizon_hours * 60:
            raise SettingsError(
                "REMINDER_MATERIALIZE_MINUTES: must be at most a quarter of "
                "REMINDER_PLANNING_HORIZON_HOURS, so reminders are stored well before they are due"
            )

    def describe(self) -> dict[str, str]:
        """For logs and `status`: the database password never appears."""
        shown = {f.name: str(getattr(self, f.name)) for f in fields(self)}
        shown["database_url"] = make_url(self.database_url).render_as_string(hide_password=True)
        return shown


def _convert(name: str, raw: str, kind: object) -> object:
    text = raw.strip()
    try:
        if kind in ("int", int):
            return int(text)
        if kind in ("float", float):
            return float(text)
    except ValueError:
        raise SettingsError(f"REMINDER_{name.upper()}: {text!r} is not a number") from None
    if kind in ("Path", Path):
        return Path(text)
    return text
