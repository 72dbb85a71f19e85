"""Command line: translates arguments into service calls and results into text. No rules here.

Each command imports what it uses when it runs: the service's parts (SQLAlchemy, FastAPI, the
channels, Alembic) would cost `--help`, and every command that does not need them, over a second
of CPU at start.
"""

from __future__ import annotations

import getpass
import json
import logging
import shlex
import shutil
import signal
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.console import Console
from rich.table import Table

from ..configuration.reading_grade import DEFAULT_MAX_GRADE
from ..services.reply_limits import MAX_LIST

if TYPE_CHECKING:
    from types import FrameType

    from rich.progress import Progress

    from .. import bootstrap
    from ..configuration.problems import ConfigError
    from ..rendering.template_check import TemplateReport
    from ..services import hl7_feed
    from ..services.hl7_import import SiuResult
    from ..services.importing import ImportSummary
    from ..services.reply_inbox import InboundReply
    from ..settings import Settings

# No local variables in tracebacks: they could hold patient data.
app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
    help="Patient reminder service.",
)
out = Console()
err = Console(stderr=True)

EXIT_ROWS_REJECTED = 1
EXIT_UNUSABLE = 2  # bad configuration, or a file rejected whole


def main() -> None:
    app()


def _settings() -> Settings:
    from ..settings import Settings, SettingsError

    try:
        return Settings.from_env()
    except SettingsError as exc:
        err.print(f"[red]settings:[/red] {exc}")
        raise typer.Exit(EXIT_UNUSABLE) from None


def _service(use: Literal["migrate", "write", "read"]) -> bootstrap.Service:
    """The service on a database ready for `use` (a store.startup.DatabaseUse): only migrate, run
    and serve change the schema; read-only commands open it read-only."""
    from .. import bootstrap
    from ..configuration.problems import ConfigError
    from ..store.startup import DatabaseUse, StartupError
    from . import log_masking

    settings = _settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log_masking.install()
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    try:
        return bootstrap.build(settings, use=DatabaseUse(use))
    except ConfigError as exc:
        _config_problems(exc)
        raise typer.Exit(EXIT_UNUSABLE) from None
    except StartupError as exc:
        err.print(f"database: {exc}", markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(EXIT_UNUSABLE) from None


def _config_problems(exc: ConfigError) -> None:
    err.print("[red]configuration errors:[/red]")
    for problem in exc.problems:
        err.print(f"  {problem}", markup=False, highlight=False, soft_wrap=True)


@app.command("check-config")
def check_config() -> None:
    """Validate clinics, protocols and their templates; print the problems or "ok"."""
    from .. import bootstrap
    from ..configuration.problems import ConfigError

    try:
        bootstrap.load_catalog(_settings())
    except ConfigError as exc:
        _config_problems(exc)
        raise typer.Exit(EXIT_UNUSABLE) from None
    out.print("ok")


@app.command("check-templates")
def check_templates_command(
    max_grade: Annotated[
        float,
        typer.Option(
            "--max-grade",
            min=1.0,
            help="The highest reading grade a message may have (Flesch-Kincaid for English, "
            "Fernández-Huerta for Spanish, as a US school grade).",
        ),
    ] = DEFAULT_MAX_GRADE,
) -> None:
    """Render every template in every language for every clinic with the longest values; print
    each SMS's encoding and segments against its budget (config/sms_budgets.yaml) and each
    message's reading grade; fail on a typographic slip ("p.m..", double spaces, "the the")."""
    from .. import bootstrap
    from ..configuration.problems import ConfigError

    settings = _settings()
    try:
        report = bootstrap.template_report(settings, max_grade)
    except ConfigError as exc:
        _config_problems(exc)
        raise typer.Exit(EXIT_UNUSABLE) from None
    several_clinics = len({r.clinic_id for r in report.sms}) > 1
    for protocol_id in dict.fromkeys(r.protocol_id for r in report.sms):
        table = Table(title=f"SMS: {protocol_id}")
        columns = ["template", "language", *(["clinic"] if several_clinics else [])]
        for name in [*columns, "encoding", "units", "segments", "budget", "ok"]:
            table.add_column(
                name, justify="right" if name in {"units", "segments", "budget"} else "left"
            )
        for r in (r for r in report.sms if r.protocol_id == protocol_id):
            cells = [r.template, r.language, *([r.clinic_id] if several_clinics else [])]
            # Several encodings: the date or flags decide; units and segments are the costliest.
            cells += ["/".join(r.encodings), str(r.units), str(r.segments), str(r.budget)]
            table.add_row(*cells, "yes" if r.ok else "NO")
        out.print(table)
    _print_grades(report)
    if report.ok:
        out.print(
            "ok: every template renders, every SMS is within its budget, the typography is "
            f"clean, and every message reads at grade {max_grade:g} or below"
        )
        return
    err.print(f"[red]template problems ({len(report.problems)}):[/red]")
    for problem in report.problems:  # each starts with its file, relative to the templates
        line = f"  {settings.templates_dir}/{problem}"
        err.print(line, markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(1)  # like a rejected row: the templates load, some fail their checks


def _print_grades(report: TemplateReport) -> None:
    for protocol_id in dict.fromkeys(g.protocol_id for g in report.grades):
        table = Table(
            title=f"Reading grade: {protocol_id}",
            caption="FK: Flesch-Kincaid grade. FH: Fernández-Huerta reading ease (100 is "
            "easiest), read as a grade.",
        )
        for name in ("template", "part", "language", "clinic", "measure", "grade", "max", "ok"):
            table.add_column(name, justify="right" if name in {"grade", "max"} else "left")
        for g in (g for g in report.grades if g.protocol_id == protocol_id):
            measure = "FK" if g.grade.measure == "Flesch-Kincaid" else f"FH {g.grade.score:.1f}"
            cells = [g.template, g.part, g.language, g.clinic_id, measure]
            cells += [f"{g.grade.grade:.1f}", f"{g.max_grade:g}", "yes" if g.ok else "NO"]
            table.add_row(*cells)
        out.print(table)


@app.command()
def migrate() -> None:
    """Create or upgrade the database schema (run and serve also do at every start)."""
    _service("migrate")
    out.print("database is at the newest schema revision")


@app.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
    mapping: Annotated[Path | None, typer.Option(help="Column mapping file (YAML).")] = None,
    encoding: Annotated[str | None, typer.Option(help="e.g. windows-1252; default UTF-8.")] = None,
    clinic: Annotated[str | None, typer.Option(help="Clinic for rows without one.")] = None,
    workers: Annotated[int | None, typer.Option(help="Validation processes (0: none).")] = None,
    errors_csv: Annotated[Path | None, typer.Option(help="Write every row error here.")] = None,
) -> None:
    """Import a CSV export (or an HL7 v2 SIU batch file, *.hl7) and (re)plan the reminders."""
    from .. import bootstrap
    from ..configuration.problems import ConfigError
    from ..importers.csv_rows import FileRejected
    from ..services import hl7_feed
    from ..services.csv_import import import_csv_file

    service = _service("write")
    if hl7_feed.is_hl7(file):
        _import_hl7(service, file, clinic, mapping)
        return
    if service.catalog.clinics.get(clinic) is None:
        err.print(f"[red]--clinic:[/red] no clinic {clinic!r} in the configuration")
        raise typer.Exit(EXIT_UNUSABLE)
    defaults = service.import_defaults(clinic)
    try:
        parsed_mapping = bootstrap.load_csv_mapping(mapping) if mapping else None
        # Redrawn as rows are applied, not by a thread of its own: with no other thread, the
        # validation workers can be forked, ready at once, instead of started afresh.
        with _progress(auto_refresh=False) as progress:
            task = progress.add_task("importing", total=None)

            def advance(rows: int) -> None:
                progress.advance(task, rows)
                progress.refresh()

            summary = import_csv_file(
                file,
                service.importer,
                defaults,
                mapping=parsed_mapping,
                encoding=encoding,
                workers=workers,
                on_total=lambda n: progress.update(task, total=n),
                progress=advance,
            )
    except ConfigError as exc:
        _config_problems(exc)
        raise typer.Exit(EXIT_UNUSABLE) from None
    except FileRejected as exc:
        err.print(f"[red]rejected, nothing imported:[/red] {exc}", highlight=False)
        raise typer.Exit(EXIT_UNUSABLE) from None
    _print_summary(summary, errors_csv)
    if summary.rejected:
        raise typer.Exit(EXIT_ROWS_REJECTED)


def _siu_feed(
    service: bootstrap.Service, clinic: str | None, mapping: Path | None
) -> hl7_feed.SiuFeed:
    """The feed with its SIU mapping, its clinic (or the facility map's) and every clinic."""
    from ..configuration.problems import ConfigError

    try:
        feed, problems = service.siu_feed(clinic, mapping)
    except ConfigError as exc:
        _config_problems(exc)
        raise typer.Exit(EXIT_UNUSABLE) from None
    for problem in problems:  # each names its place: the clinic asked for, or `facilities`
        err.print(f"[red]which clinic the feed is for:[/red] {problem}", highlight=False)
    if problems:
        raise typer.Exit(EXIT_UNUSABLE)
    return feed


def _import_hl7(
    service: bootstrap.Service, file: Path, clinic: str | None, mapping: Path | None
) -> None:
    from ..services import hl7_feed
    from ..services.hl7_import import apply_siu

    feed = _siu_feed(service, clinic, mapping)
    results, summary = apply_siu(
        service.importer,
        file.read_bytes(),
        feed.defaults,
        mapping=feed.mapping,
        label=file.name,
        clinics=feed.clinics,
    )
    if not results:
        err.print(f"[red]rejected, nothing imported:[/red] {file}: no HL7 message", highlight=False)
        raise typer.Exit(EXIT_UNUSABLE)
    labels = {r.change.index: f"message {r.change.index} ({_control_id(r)})" for r in results}
    _print_summary(summary, None, lambda index: labels.get(index, f"message {index}"))
    rejected = hl7_feed.rejected(results)
    for result in rejected:
        out.print(
            f"message {result.change.index} ({_control_id(result)}): {result.ack} {result.text}",
            markup=False,
            highlight=False,
        )
    if rejected:
        raise typer.Exit(EXIT_ROWS_REJECTED)


def _control_id(result: SiuResult) -> str:
    return result.change.control_id or "no control id"


def _progress(*, auto_refresh: bool = True) -> Progress:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        auto_refresh=auto_refresh,
    )


def _print_summary(
    summary: ImportSummary,
    errors_csv: Path | None,
    place: Callable[[int], str] = lambda line: f"line {line}",
) -> None:
    from .spreadsheet_safety import write_rows

    table = Table(title="Import summary")
    table.add_column("outcome")
    table.add_column("count", justify="right")
    for name, count in summary.counts().items():
        table.add_row(name.replace("_", " "), str(count))
    out.print(table)
    if summary.reminders_planned:
        out.print(
            "Reminders planned: those due within the planning horizon, stored now; later ones "
            "are stored as their time comes. `preview APPOINTMENT_ID` shows every one.",
            markup=False,
        )
    shown = summary.errors[:50]
    for error in shown:
        out.print(
            f"line {error.line}, column {error.column}: {error.reason}",
            markup=False,
            highlight=False,
        )
    for warning in summary.warnings[:50]:
        out.print(
            f"line {warning.line}, column {warning.column}: warning: {warning.reason}",
            markup=False,
            highlight=False,
        )
    if len(summary.warnings) > 50:
        out.print(f"... and {len(summary.warnings) - 50} more warnings")
    if len(summary.errors) > len(shown):
        out.print(
            f"... and {len(summary.errors) - len(shown)} more row errors"
            + (f" (all in {errors_csv})" if errors_csv else " (use --errors-csv FILE)")
        )
    for warning in summary.warnings[:50]:
        out.print(
            f"warning: {place(warning.line)}, {warning.column}: {warning.reason}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    if len(summary.warnings) > 50:
        out.print(f"... and {len(summary.warnings) - 50} more warnings", highlight=False)
    if errors_csv:
        rows = [(e.line, e.column, e.reason) for e in summary.errors]
        with errors_csv.open("w", newline="", encoding="utf-8") as handle:
            write_rows(handle, [("line", "column", "reason"), *rows])


@app.command()
def replan() -> None:
    """Re-plan upcoming appointments after protocols or clinic settings changed."""
    service = _service("write")
    summary = service.importer.replan()
    count = summary.updated + summary.unchanged
    checked = f"{count} appointment{'' if count == 1 else 's'}"
    if not (summary.updated or summary.reminders_planned or summary.reminders_cancelled):
        out.print(f"re-planned {checked}: nothing changed", highlight=False)
        return
    out.print(
        f"re-planned {checked}: {summary.updated} changed, {summary.unchanged} "
        f"unchanged; {summary.reminders_cancelled} reminders cancelled, "
        f"{summary.reminders_planned} planned (`audit APPOINTMENT_ID` shows each change)",
        highlight=False,
        soft_wrap=True,
    )


def _import_sample_data(service: bootstrap.Service) -> None:
    """Import the sample appointments (those stored already come back unchanged) and print
    each one's id with the command that previews it."""
    from ..domain.timing import zone
    from .sample_data import SAMPLE_IDS, sample_appointments

    clinic = service.catalog.clinics.default
    stored = service.importer.stored(SAMPLE_IDS)
    appointments = sample_appointments(clinic, service.clock(), stored)
    summary = service.importer.apply(
        enumerate(appointments, 1), source="sample", label="sample data"
    )
    outcomes = ", ".join(
        f"{count} {name.replace('_', ' ')}"
        for name, count in summary.counts().items()
        if count and not name.startswith("reminders_")
    )
    out.print(
        f"sample data: {len(appointments)} appointments ({outcomes}); "
        f"{summary.reminders_planned} reminders planned, {summary.reminders_cancelled} cancelled",
        highlight=False,
        soft_wrap=True,
    )
    command = _invocation()
    for appointment in appointments:
        tz = zone(appointment.patient.timezone)
        when = appointment.start.astimezone(tz).strftime("%a %d %b %Y %H:%M")
        out.print(
            f"  {appointment.external_id}  {when} {appointment.patient.timezone}  "
            f"try: {command} preview {appointment.external_id}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
    out.print(f"outbox: {service.settings.outbox_dir.resolve()}", highlight=False, soft_wrap=True)


def _invocation() -> str:
    """How this command was started, to print commands the user can paste: the console script
    as it was typed (`.venv/bin/reminder-service` from `make run`), or `python -m`."""
    script = Path(sys.argv[0])
    if script.name != "reminder-service":
        return f"{shlex.quote(sys.executable)} -m reminder_service"
    found = shutil.which(script.name)
    if found and Path(found).resolve() == script.resolve():
        return script.name  # on the PATH: the bare name is what the user typed
    return shlex.quote(sys.argv[0])


@app.command()
def run(
    sample_data: Annotated[
        bool, typer.Option("--sample-data", help="First import synthetic sample appointments.")
    ] = False,
    http: Annotated[
        bool,
        typer.Option(
            "--http/--no-http",
            help="Also serve the webhooks and health on REMINDER_HTTP_PORT ('serve' runs them "
            "alone, in a process of their own).",
        ),
    ] = True,
) -> None:
    """Run the dispatcher (and the HTTP endpoints) in the foreground until Ctrl-C or SIGTERM."""
    from ..services.gc_pause import tune_for_long_run
    from .http_server import HttpServerError

    service = _service("migrate")
    logging.getLogger(__name__).info("settings: %s", service.settings.describe())
    if sample_data:
        _import_sample_data(service)
    timer = service.dispatch_timer()
    tune_for_long_run()

    def stop(signum: int, _frame: FrameType | None) -> None:
        logging.getLogger(__name__).info("signal %s: stopping after in-flight sends", signum)
        timer.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server = None
    if http:
        server = service.http_server()
        try:
            server.start()
        except HttpServerError as exc:
            err.print(f"{exc}; set REMINDER_HTTP_PORT, or run with --no-http", markup=False)
            service.close()
            raise typer.Exit(EXIT_UNUSABLE) from None
    try:
        timer.run_until_stopped()
    finally:
        if server is not None:
            server.stop()
        service.close()


@app.command()
def mllp(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (MLLP's usual is 2575).")] = 2575,
    mapping: Annotated[Path | None, typer.Option(help="HL7 SIU mapping file (YAML).")] = None,
    clinic: Annotated[
        str | None,
        typer.Option(help="The clinic this feed is for (its numbers are read in its country)."),
    ] = None,
) -> None:
    """Receive HL7 v2 SIU messages over MLLP until Ctrl-C or SIGTERM; each is applied and
    acknowledged (AA, AE with the reason, or AR)."""
    import asyncio

    from .listening import serve_until_signalled

    service = _service("write")
    feed = _siu_feed(service, clinic, mapping)
    asyncio.run(serve_until_signalled(service.mllp_server(feed, host, port)))
    service.close()


@app.command()
def bounces(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port (route SMTP_BOUNCE_ADDRESS here).")] = 2525,
) -> None:
    """Receive bounces (delivery status notifications) for SMTP_BOUNCE_ADDRESS until Ctrl-C or
    SIGTERM: an email that bounced for good is marked so, and staff are told when no channel of
    its step reached the patient. Unsubscribe emails sent to its List-Unsubscribe mailto (with
    REMINDER_UNSUBSCRIBE_SECRET set) stop reminder emails to their address."""
    import asyncio

    from .listening import serve_until_signalled

    service = _service("write")
    listener = service.bounce_listener(host, port)
    if listener is None:
        err.print(
            "bounces: needs REMINDER_EMAIL_CHANNEL=smtp with SMTP_BOUNCE_ADDRESS and "
            "SMTP_BOUNCE_SECRET set (each email's envelope sender then names it)"
        )
        raise typer.Exit(EXIT_UNUSABLE)

    asyncio.run(serve_until_signalled(listener))
    service.close()


EmailOption = Annotated[str, typer.Option("--email", help="The patient's email address.")]


def _email_address(address: str) -> str:
    from email_validator import EmailNotValidError, validate_email

    try:
        return validate_email(address, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        err.print(f"--email: not an email address ({exc})", markup=False)
        raise typer.Exit(EXIT_UNUSABLE) from None


@app.command("opt-out")
def opt_out(email: EmailOption) -> None:
    """Stop reminder emails to an address, as its List-Unsubscribe link would (for an
    unsubscribe email that reached the clinic's mailbox). Texts to the patient go on."""
    from ..services.email_opt_outs import STAFF as STAFF_OPT_OUT

    address = _email_address(email)
    service = _service("write")
    added = service.email_opt_outs().opt_out(address, STAFF_OPT_OUT)
    out.print(f"{address}: {'opted out' if added else 'already opted out'}", markup=False)


@app.command("opt-in")
def opt_in(email: EmailOption) -> None:
    """Send reminder emails to an address again after it opted out (when the patient asks)."""
    address = _email_address(email)
    service = _service("write")
    removed = service.email_opt_outs().opt_in(address)
    out.print(f"{address}: {'opted in' if removed else 'was not opted out'}", markup=False)


api_key_app = typer.Typer(help="Keys for the HTTP API (shown once; stored as a hash).")
app.add_typer(api_key_app, name="api-key")


@api_key_app.command("create")
def api_key_create(name: str) -> None:
    """Create a key named NAME and print it: the only time it is shown."""
    from ..services.api_keys import KeyExists

    service = _service("write")
    try:
        key = service.api_keys().create(name)
    except KeyExists as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(EXIT_UNUSABLE) from None
    sys.stdout.write(key + "\n")


@api_key_app.command("revoke")
def api_key_revoke(name: str) -> None:
    """Revoke the key named NAME at once."""
    service = _service("write")
    if not service.api_keys().revoke(name):
        err.print(f"no live API key named {name!r}", markup=False)
        raise typer.Exit(EXIT_UNUSABLE)
    out.print(f"revoked {name}", markup=False)


user_app = typer.Typer(help="Staff accounts for the console (passwords stored as argon2id hashes).")
app.add_typer(user_app, name="user")


class StaffRole(StrEnum):
    scheduler = "scheduler"
    admin = "admin"


@user_app.command("create")
def user_create(
    name: str,
    role: Annotated[
        StaffRole, typer.Option(help="scheduler: import, view, cancel; admin: also users and keys.")
    ],
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from standard input.")
    ] = False,
) -> None:
    """Create the account NAME; the password is asked for twice (never on the command line)."""
    from ..domain.staff import Role
    from ..services.staff_users import UserRefused

    password = _new_password(password_stdin)
    service = _service("write")
    try:
        service.staff_users().create(name, Role(role.value), password)
    except UserRefused as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(EXIT_UNUSABLE) from None
    out.print(f"created {name} ({role.value})", markup=False)


@user_app.command("disable")
def user_disable(name: str) -> None:
    """Disable the account NAME at once: it can no longer sign in (its name stays in the audit)."""
    service = _service("write")
    if not service.staff_users().disable(name):
        err.print(f"no enabled user named {name!r}", markup=False)
        raise typer.Exit(EXIT_UNUSABLE)
    out.print(f"disabled {name}", markup=False)


def _new_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("password: ")
    if getpass.getpass("again: ") != first:
        err.print("the two passwords differ; nothing created", markup=False)
        raise typer.Exit(EXIT_UNUSABLE)
    return first


@app.command()
def serve() -> None:
    """Serve only the HTTP endpoints (webhooks, health) until Ctrl-C or SIGTERM, so they can run
    in processes of their own beside `run --no-http`."""
    service = _service("migrate")
    try:
        service.http_server().run()
    finally:
        service.close()


@app.command()
def audit(
    appointment_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every decision about this appointment and its messages, oldest first, with reasons."""
    from ..services.auditing import audit_trail
    from ..services.previewing import NotFound

    service = _service("read")
    try:
        entries = audit_trail(service.engine, appointment_id)
    except NotFound as exc:
        err.print(str(exc))
        raise typer.Exit(EXIT_UNUSABLE) from None
    if as_json:
        sys.stdout.write(json.dumps([e.as_json() for e in entries], indent=2) + "\n")
        return
    for entry in entries:
        about = f"{entry.step}/{entry.channel}" if entry.step else "appointment"
        detail = f" {json.dumps(entry.detail)}" if entry.detail else ""
        out.print(
            f"{entry.at.isoformat()}  {about:<22} {entry.event:<18} {entry.reason}{detail}",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )


@app.command()
def preview(
    appointment_id: str,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Every message this appointment's patient gets: when, status, body, or why it is skipped."""
    from ..domain.planning import Recipient
    from ..domain.timing import zone
    from ..services.previewing import NotFound

    service = _service("read")
    try:
        result = service.previewer().preview(appointment_id)
    except NotFound as exc:
        err.print(str(exc))
        raise typer.Exit(EXIT_UNUSABLE) from None
    if as_json:
        sys.stdout.write(json.dumps([line.as_json() for line in result.lines], indent=2) + "\n")
        return
    appointment = result.appointment
    out.print(
        f"Appointment {appointment.external_id}: {appointment.procedure} at "
        f"{appointment.start.astimezone(zone(appointment.patient.timezone)).isoformat()} "
        f"({appointment.patient.timezone}), {appointment.status.value}, "
        f"protocol {result.protocol_id or 'none'}",
        highlight=False,
    )
    tz = zone(appointment.patient.timezone)
    confirmation = result.confirmation
    if result.confirmed_at:
        by = confirmation.confirmed_by if confirmation and confirmation.confirmed_by else "patient"
        at = result.confirmed_at.astimezone(tz).isoformat()
        out.print(f"Confirmed by {by} at {at}", markup=False, highlight=False)
    elif confirmation and confirmation.required_by:
        due = confirmation.required_by.astimezone(tz).isoformat()
        out.print(f"Not confirmed yet: confirmation required by {due}", highlight=False)
    if confirmation and confirmation.staff_alerted_at:
        alerted = confirmation.staff_alerted_at.astimezone(tz).isoformat()
        out.print(f"Listed to staff to phone (not confirmed in time) at {alerted}")
    if result.new_time_requested_at:
        asked = result.new_time_requested_at.astimezone(tz).isoformat()
        out.print(f"The patient asked for a new time at {asked}")
    for line in result.lines:
        when = line.due_at.isoformat() if line.due_at else "-"
        channel = line.channel
        if line.recipient != Recipient.PATIENT:  # a caregiver's copy
            channel = f"{channel} ({line.recipient})"
        out.print(f"\n[bold]{line.step}[/bold] {channel} {when} {line.status}: {line.reason}")
        # soft_wrap: message text is shown as written, never re-wrapped to the terminal.
        if line.subject:
            out.print(f"  Subject: {line.subject}", markup=False, highlight=False, soft_wrap=True)
        if line.body:
            body = "  " + line.body.replace("\n", "\n  ")
            out.print(body, markup=False, highlight=False, soft_wrap=True)


@app.command()
def replies(
    unhandled: Annotated[
        bool, typer.Option("--unhandled", help="Only replies waiting for a person.")
    ] = False,
    clinic: Annotated[str | None, typer.Option(help="Only this clinic's replies.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_LIST, help="At most this many.")] = 100,
    handle: Annotated[
        int | None, typer.Option("--handle", metavar="ID", help="Mark reply ID handled.")
    ] = None,
    by: Annotated[
        str | None, typer.Option(help="Who handled it (default: your login name).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """The replies patients texted, newest first, with the number and text to call back on (shown
    here, never logged); `--handle ID` marks one handled by you, now."""
    from ..services.previewing import NotFound

    service = _service("read" if handle is None else "write")
    inbox = service.inbox()
    if handle is not None:
        try:
            reply, marked = inbox.mark_handled(handle, _operator(by))
        except NotFound as exc:
            err.print(str(exc), markup=False)
            raise typer.Exit(EXIT_UNUSABLE) from None
        assert reply.handled_at is not None
        done = "handled" if marked else "already handled"
        out.print(
            f"reply {reply.id}: {done} by {reply.handled_by} at {reply.handled_at.isoformat()}",
            markup=False,
            highlight=False,
        )
        return
    if clinic is not None and service.catalog.clinics.get(clinic) is None:
        err.print(f"--clinic: no clinic {clinic!r} in the configuration", markup=False)
        raise typer.Exit(EXIT_UNUSABLE)
    found = inbox.list(unhandled=unhandled, clinic=clinic, limit=limit)
    if as_json:
        sys.stdout.write(json.dumps([r.as_json() for r in found], indent=2) + "\n")
        return
    if not found:
        out.print("no replies" + (" waiting for a person" if unhandled else ""))
    for reply in found:
        out.print(_reply_text(reply), markup=False, highlight=False, soft_wrap=True)


def _operator(by: str | None) -> str:
    """Who is acting: as given, else the login name."""
    if by:
        return by
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no login name (a container's user without a passwd entry)
        return "staff"


def _reply_text(reply: InboundReply) -> str:
    """One reply for the terminal: a header line, then the text indented; control characters
    in the text are shown as U+FFFD, so a message can never drive the operator's terminal."""
    about = "no appointment found"
    if reply.appointment_id:
        about = f"appointment {reply.appointment_id}"
        if reply.patient_id:
            about += f" (patient {reply.patient_id}, {reply.patient_name})"
    handled = (
        f"handled by {reply.handled_by} at {reply.handled_at.isoformat()}"
        if reply.handled_at
        else "UNHANDLED"
    )
    answered = f", answered {reply.answer}" if reply.answer else ""
    body = "".join(c if c.isprintable() or c == "\n" else "\ufffd" for c in reply.body)
    return (
        f"#{reply.id}  {reply.received_at.isoformat()}  from {reply.phone}  [{reply.clinic_id}] "
        f"{reply.kind}{answered}; {about}; {handled}\n    " + body.replace("\n", "\n    ")
    )


@app.command()
def confirm(
    appointment_id: str,
    by: Annotated[
        str | None, typer.Option(help="Who took the confirmation (default: your login name).")
    ] = None,
) -> None:
    """Record that the patient confirmed this appointment (by phone, say): it is then not listed
    to staff at its confirmation deadline."""
    from ..services.confirmations import AlreadyCancelled
    from ..services.previewing import NotFound

    service = _service("write")
    try:
        state = service.confirmations.confirm(appointment_id, _operator(by))
    except (NotFound, AlreadyCancelled) as exc:
        err.print(str(exc), markup=False)
        raise typer.Exit(EXIT_UNUSABLE) from None
    assert state.confirmed_at is not None
    out.print(
        f"appointment {appointment_id}: confirmed by {state.confirmed_by} at "
        f"{state.confirmed_at.isoformat()}",
        markup=False,
        highlight=False,
    )


@app.command()
def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Reminder counts by status, the next due time, recent failures."""
    from ..services.reporting import status_report

    service = _service("read")
    report = status_report(service.engine)
    if as_json:
        sys.stdout.write(json.dumps(report.as_json(), indent=2) + "\n")
        return
    table = Table(title="Reminders")
    table.add_column("status")
    table.add_column("count", justify="right")
    for name, count in report.reminders_by_status.items():
        table.add_row(name, str(count))
    out.print(table)
    out.print(f"appointments: {report.appointments_by_status}")
    out.print(f"next due: {report.next_due.isoformat() if report.next_due else 'nothing pending'}")
    out.print(f"replies by SMS: {report.replies}")
    if report.appointments_with_later_reminders:
        out.print(
            f"{report.appointments_with_later_reminders} appointments have later reminders, "
            "stored as they come within the planning horizon (preview shows them)"
        )
    for alert in report.staff_alerts:
        out.print(
            f"staff alert: appointment {alert['appointment_id']} at "
            f"{alert['at'].isoformat()}: {alert['reason']}",
            markup=False,
            highlight=False,
        )
    for failure in report.recent_failures:
        out.print(
            f"failed: reminder {failure['id']} ({failure['appointment_id']} "
            f"{failure['step_id']}/{failure['channel']}): {failure['reason']}",
            markup=False,
            highlight=False,
        )
