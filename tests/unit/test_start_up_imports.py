"""What start-up loads: `--help` and the command line itself load none of the service's heavy
parts, and the service built on its defaults (SQLite, the file outbox) loads neither Twilio nor
Alembic. Each check runs in a fresh interpreter, whose modules are its own; how long start-up
takes is bench/startup.py's to measure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import typer.main

from reminder_service.entrypoints.cli import app
from tests.factories import CONFIG_DIR, ROOT, TEMPLATES_DIR, migrated, run_cli

# The service's heavy parts: none is needed to parse arguments or print help.
HEAVY = ("fastapi", "sqlalchemy", "alembic", "aiohttp", "twilio", "fhir.resources", "jinja2")
# What the default service (SQLite and the file outbox) never uses on a migrated database: the
# Twilio SDK's client (its webhooks' signature check is the HTTP app's), Alembic, SMTP, HL7, and
# the FHIR models (loaded by the first FHIR request).
UNUSED_BY_DEFAULT = (
    "alembic", "mako", "twilio.rest", "aiohttp", "aiosmtplib", "aiosmtpd", "hl7", "fhir.resources",
)  # fmt: skip


def loaded_after(
    code: str, watched: tuple[str, ...], env: dict[str, str] | None = None
) -> list[str]:
    """Which of `watched` a fresh interpreter has loaded after running `code`."""
    script = textwrap.dedent(code) + textwrap.dedent(f"""
        import json as _json, sys as _sys
        print(_json.dumps(sorted(m for m in {watched!r} if m in _sys.modules)))
        """)
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout.splitlines()[-1]))


def command_paths() -> list[list[str]]:
    root = typer.main.get_command(app)
    paths = []
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        if hasattr(command, "commands"):  # a group: api-key
            paths += [[name, sub] for sub in command.commands]
        paths.append([name])
    return paths


def test_the_command_line_loads_none_of_the_heavy_parts() -> None:
    assert loaded_after("import reminder_service.entrypoints.cli", HEAVY) == []


def test_help_for_every_command_loads_none_of_the_heavy_parts() -> None:
    runs = [["--help"]] + [[*path, "--help"] for path in command_paths()]
    code = f"""
        import contextlib, io, sys
        from reminder_service.entrypoints.cli import main
        for args in {runs!r}:
            sys.argv = ["reminder-service", *args]
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    main()
                except SystemExit as exit:
                    assert exit.code == 0, (args, exit.code)
        """
    assert loaded_after(code, HEAVY) == []


def test_help_lists_every_command() -> None:
    done = run_cli(dict(os.environ, COLUMNS="200"), "--help")
    assert done.returncode == 0, done.stderr
    names = [path[0] for path in command_paths()]
    assert len(names) > 10
    for name in names:
        assert f" {name} " in done.stdout, name
    group = run_cli(dict(os.environ, COLUMNS="200"), "api-key", "--help")
    assert " create " in group.stdout and " revoke " in group.stdout


def test_the_default_service_loads_neither_twilio_nor_alembic(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "REMINDER_DATABASE_URL": migrated(f"sqlite:///{tmp_path / 'reminders.db'}"),
        "REMINDER_OUTBOX_DIR": str(tmp_path / "outbox"),
        "REMINDER_CONFIG_DIR": str(CONFIG_DIR),
        "REMINDER_TEMPLATES_DIR": str(TEMPLATES_DIR),
    }
    code = """
        from reminder_service import bootstrap
        from reminder_service.settings import Settings
        service = bootstrap.build(Settings.from_env())
        service.http_app()
        service.dispatch_timer()
        service.close()
        """
    assert loaded_after(code, UNUSED_BY_DEFAULT, env) == []
