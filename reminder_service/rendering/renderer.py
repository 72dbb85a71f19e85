"""Render a step's message templates for one appointment.

Templates are edited by clinic staff, so they run in Jinja's sandbox (no attribute access to
internals, no calling arbitrary code) with StrictUndefined (a misspelt variable is an error, never
an empty gap in a clinical sentence). Only `.html.j2` templates are autoescaped.

Variables a template may use (names are stable; templates in the wild depend on them):

- `patient.first_name`, `patient.last_name`
- `clinic.name`, `clinic.phone` (in hours), `clinic.out_of_hours_phone` (24 h line),
  `clinic.address`, `clinic.fasting_hours`, `clinic.no_bath_days`, `clinic.results_typical_days`,
  `clinic.results_chase_days`, `clinic.emergency_number` (999 / 911), `clinic.fever_threshold`
  ("38C" / "100.4F"), `clinic.painkiller`, `clinic.local_only_driving_advice`,
  `clinic.bring_insurance_card` (true / false), `clinic.procedure_minutes_shortest` and
  `clinic.procedure_minutes_longest` (10 and 30), `clinic.meal_without_sedation` ("normal" or
  "light")
- `appointment.id` (the source system's id), `appointment.location`,
  `appointment.duration_minutes`, `appointment.sedation`, `appointment.anticoagulant`,
  `appointment.on_chemotherapy`, `appointment.diabetes_on_medication` (each "yes", "no" or
  "unknown"), `appointment.date` ("Thursday 10 December" en-GB, "Thursday, December 10" en-US,
  "jueves, 10 de diciembre" es), `appointment.time` ("09:30" en-GB, "9:30 AM" en-US),
  `appointment.when` ("Thursday 10 December at 09:30"; "jueves, 10 de diciembre a las 9:30"),
  `appointment.rescheduled` (true when the time changed since the first booking)
- `results_by`: the date to chase results if not heard (start + clinic.results_chase_days)

Dates and times are local to the patient's time zone, in the patient's language and in the
pattern of its locale (CLDR, through Babel): the patient's own region when their language names
one (en-US), else the clinic's `locale` (by default its language in its phone region, en-GB).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from pathlib import Path
from types import TracebackType

from babel import Locale, UnknownLocaleError, localedata
from babel.dates import format_date, format_time
from jinja2 import (
    FileSystemLoader,
    StrictUndefined,
    TemplateError,
    TemplateSyntaxError,
    select_autoescape,
)
from jinja2.sandbox import SandboxedEnvironment

from ..domain.appointment import Appointment, AppointmentStatus, Patient, Tristate
from ..domain.clinic import Clinic
from ..domain.protocol import Channel
from ..domain.timing import local_to_utc, zone
from .layout import PARTS, language_chain, template_name
from .sms_encoding import normalise_for_sms

# Errors a template expression itself can raise (e.g. `{{ 1 / 0 }}`, `{{ 'a' + 1 }}`).
_EXPRESSION_ERRORS = (ArithmeticError, TypeError, ValueError, LookupError, AttributeError)

# "weekday day month" in CLDR's order for the locale, most specific skeleton first; weekday and
# month are then written in full (en-US has only "E, MMM d": "Thu, Dec 10").
_DATE_SKELETONS = ("MMMMEEEEd", "MMMMEd", "MMMEd")
_FALLBACK_DATE_PATTERN = "EEEE d MMMM"
_WEEKDAY = re.compile(r"E+")
_SHORT_MONTH = re.compile(r"(?<!M)MMM(?!M)")
_WHITESPACE = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n[ \t]*(?:\n[ \t]*)+\n")


class RenderError(Exception):
    """A template could not be rendered; the message names the file and the problem."""


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    channel: Channel
    language: str  # the template language actually used (after fallback)
    sms: str | None = None
    subject: str | None = None
    text: str | None = None
    html: str | None = None


class Renderer:
    """Templates are read and compiled once, and which files exist is looked up once per name:
    rendering a message makes no filesystem call. An edited template takes effect at the next
    start (check-templates first): a file half-saved under a running service is never sent."""

    def __init__(self, templates_dir: Path) -> None:
        self.templates_dir = templates_dir
        self._merge_lines: dict[tuple[str, str, str, str], bool] = {}
        self._files: dict[str, bool] = {}
        self._languages: dict[tuple[str, str, Channel, str, str], str] = {}
        self.env = SandboxedEnvironment(
            loader=FileSystemLoader(templates_dir),
            auto_reload=False,
            cache_size=-1,  # every template stays compiled: a clinic has dozens, not thousands
            undefined=StrictUndefined,
            autoescape=select_autoescape(
                enabled_extensions=("html.j2",), default_for_string=False, default=False
            ),
            keep_trailing_newline=False,
            trim_blocks=True,
            lstrip_blocks=True,
        )

    def render(
        self,
        protocol_id: str,
        template: str,
        channel: Channel,
        language: str,
        fallback_language: str,
        context: Mapping[str, object],
    ) -> RenderedMessage:
        chosen = self._choose_language(protocol_id, template, channel, language, fallback_language)
        parts = {
            part: self._render_part(template_name(protocol_id, chosen, template, part), context)
            for part in PARTS[channel]
        }
        if channel is Channel.SMS:
            return RenderedMessage(channel, chosen, sms=_clean_sms(parts["sms"]))
        return RenderedMessage(
            channel,
            chosen,
            subject=_one_line(parts["subject"]),
            text=_clean_text(parts["email.txt"]),
            html=parts["email.html"].strip(),
        )

    def render_for(
        self,
        protocol_id: str,
        template: str,
        channel: Channel,
        appointment: Appointment,
        clinic: Clinic,
        rescheduled: bool,
    ) -> RenderedMessage:
        """An appointment's message in the patient's language, or the clinic's when that has no
        template; dates and times are formatted in the language the text is written in, so a
        fallback never mixes languages."""
        wanted = appointment.patient.language
        chosen = self._choose_language(
            protocol_id, template, channel, wanted, clinic.default_language
        )
        formatting = _formatting_language(chosen, wanted, clinic.default_language)
        context = message_context(appointment, clinic, formatting, rescheduled)
        return self.render(protocol_id, template, channel, wanted, clinic.default_language, context)

    def merge_line_for(
        self,
        protocol_id: str,
        template: str,
        appointment: Appointment,
        clinic: Clinic,
        rescheduled: bool,
    ) -> str:
        """The one line a step's skipped SMS adds to the next text (`<template>.merge.j2`)."""
        wanted = appointment.patient.language
        for candidate in language_chain(wanted, clinic.default_language):
            name = template_name(protocol_id, candidate, template, "merge")
            if self._is_file(name):
                formatting = _formatting_language(candidate, wanted, clinic.default_language)
                context = message_context(appointment, clinic, formatting, rescheduled)
                return _clean_sms(self._render_part(name, context))
        wanted_name = template_name(protocol_id, "<language>", template, "merge")
        raise RenderError(f"no merge line for {template!r}: need {wanted_name}")

    def has_merge_line(
        self, protocol_id: str, template: str, language: str, fallback_language: str
    ) -> bool:
        """Whether `merge_line_for` finds a merge line for this template and language chain.
        Remembered: the dispatcher asks for every text it weighs against the caps."""
        key = (protocol_id, template, language, fallback_language)
        known = self._merge_lines.get(key)
        if known is None:
            known = any(
                self._is_file(template_name(protocol_id, c, template, "merge"))
                for c in language_chain(language, fallback_language)
            )
            self._merge_lines[key] = known
        return known

    def _choose_language(
        self, protocol_id: str, template: str, channel: Channel, language: str, fallback: str
    ) -> str:
        """The first language in the chain with every part of the channel: never mix languages."""
        key = (protocol_id, template, channel, language, fallback)
        known = self._languages.get(key)
        if known is not None:
            return known
        chain = language_chain(language, fallback)
        for candidate in chain:
            names = [template_name(protocol_id, candidate, template, p) for p in PARTS[channel]]
            if all(self._is_file(name) for name in names):
                self._languages[key] = candidate
                return candidate
        wanted = ", ".join(
            template_name(protocol_id, "<language>", template, p) for p in PARTS[channel]
        )
        raise RenderError(
            f"no {channel.value} template for {template!r}: need {wanted} for one of the "
            f"languages {', '.join(chain)} under {self.templates_dir}"
        )

    def _is_file(self, name: str) -> bool:
        known = self._files.get(name)
        if known is None:
            known = self._files[name] = (self.templates_dir / name).is_file()
        return known

    def _render_part(self, name: str, context: Mapping[str, object]) -> str:
        try:
            return self.env.get_template(name).render(context)
        except (TemplateError, *_EXPRESSION_ERRORS) as exc:
            raise RenderError(self._describe(name, exc)) from exc

    def _describe(self, name: str, exc: Exception) -> str:
        """'template <file>, line <n>: <problem>', naming the innermost file (macro or layout)."""
        if isinstance(exc, TemplateSyntaxError):
            file, line = exc.name or name, exc.lineno
        else:
            file, line = _innermost_template_frame(exc.__traceback__) or (name, 0)
            file = self._relative(file)
        where = f"{file}, line {line}" if line else file
        problem = getattr(exc, "message", None) or str(exc) or "failed"
        return f"template {where}: {type(exc).__name__}: {problem}"

    def _relative(self, file: str) -> str:
        for root in (self.templates_dir, self.templates_dir.resolve()):
            if Path(file).is_relative_to(root):
                return Path(file).relative_to(root).as_posix()
        return file


def _innermost_template_frame(tb: TracebackType | None) -> tuple[str, int] | None:
    """Jinja rewrites tracebacks so that template frames carry the template's file and line."""
    found = None
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if filename.endswith(".j2"):
            found = (filename, tb.tb_lineno)
        tb = tb.tb_next
    return found


def _formatting_language(chosen: str, wanted: str, clinic_language: str) -> str:
    """Format dates in the language the text is written in: the patient's or the clinic's tag
    when it is that language (es-US for "es"), else the template's own."""
    base = chosen.split("-", maxsplit=1)[0].lower()
    for tag in (wanted, clinic_language):
        if tag.split("-")[0].lower() == base:
            return tag
    return chosen


def _clean_sms(text: str) -> str:
    return normalise_for_sms(_WHITESPACE.sub(" ", text).strip())


def _one_line(text: str) -> str:
    return _WHITESPACE.sub(" ", text).strip()


def _clean_text(text: str) -> str:
    """Conditional blocks leave blank runs; keep at most one blank line between paragraphs."""
    lines = "\n".join(line.rstrip() for line in text.splitlines())
    return _BLANK_LINES.sub("\n\n", lines).strip() + "\n"


# --- context ---------------------------------------------------------------------------------


def message_context(
    appointment: Appointment, clinic: Clinic, language: str, rescheduled: bool = False
) -> dict[str, object]:
    """The variables every template may use (see the module docstring). `language` is the
    language the text is written in; its dates follow
    `formatting_locale(language, clinic.date_locale)`."""
    locale = _locale(language, clinic.date_locale)
    local = appointment.start.astimezone(zone(appointment.patient.timezone))
    day, wall = local.date(), local.time().replace(tzinfo=None)
    results_by = day + timedelta(days=clinic.results_chase_days)
    return {
        "patient": {
            "first_name": appointment.patient.first_name,
            "last_name": appointment.patient.last_name,
        },
        "clinic": _clinic_context(clinic),
        "appointment": {
            "id": appointment.external_id,
            "location": appointment.location,
            "duration_minutes": appointment.duration_minutes,
            "sedation": appointment.sedation.value,
            "anticoagulant": appointment.anticoagulant.value,
            "on_chemotherapy": appointment.on_chemotherapy.value,
            "diabetes_on_medication": appointment.diabetes_on_medication.value,
            "date": _format_day(day, locale),
            "time": _format_wall(wall, locale),
            "when": _format_when(day, wall, locale),
            "rescheduled": rescheduled,
        },
        "results_by": _format_day(results_by, locale),
    }


def _clinic_context(clinic: Clinic) -> dict[str, object]:
    return {
        "name": clinic.name,
        "phone": clinic.phone,
        "out_of_hours_phone": clinic.out_of_hours_phone,
        "address": clinic.address,
        "fasting_hours": clinic.fasting_hours,
        "no_bath_days": clinic.no_bath_days,
        "results_typical_days": clinic.results_typical_days,
        "results_chase_days": clinic.results_chase_days,
        "emergency_number": clinic.emergency_number,
        "fever_threshold": clinic.fever_threshold,
        "painkiller": clinic.painkiller,
        "local_only_driving_advice": clinic.local_only_driving_advice,
        "bring_insurance_card": clinic.bring_insurance_card,
        "procedure_minutes_shortest": clinic.procedure_minutes[0],
        "procedure_minutes_longest": clinic.procedure_minutes[1],
        "meal_without_sedation": clinic.meal_without_sedation.value,
    }


# Formatting with Babel costs far more than rendering a template, and messages sent together
# share languages, days and times: each of these is pure, so memoised.
def formatting_locale(language: str, clinic_locale: str) -> Locale:
    """The CLDR locale a text in `language` formats its dates with: the language's own region when
    it names one CLDR knows (en-US at a UK clinic), else the clinic's locale when it is that
    language, else the language in the clinic's region (es at a US clinic: es-US), else the bare
    language; English when CLDR knows none of them."""
    return _locale(language, clinic_locale)


@lru_cache(maxsize=64)
def _locale(language: str, clinic_locale: str) -> Locale:
    tag = language.replace("-", "_")
    base = tag.split("_", maxsplit=1)[0].lower()
    clinic_tag = clinic_locale.replace("-", "_")
    clinic_base, _, territory = clinic_tag.partition("_")
    candidates = [tag] if "_" in tag else []
    if clinic_base.lower() == base:
        candidates.append(clinic_tag)
    if territory:
        candidates.append(f"{base}_{territory}")
    candidates += [base, clinic_tag]
    for candidate in candidates:
        try:
            if localedata.exists(candidate) or "_" not in candidate:
                return Locale.parse(candidate)
        except (UnknownLocaleError, ValueError, TypeError):
            continue
    return Locale.parse("en")


def _date_pattern(locale: Locale) -> str:
    for skeleton in _DATE_SKELETONS:
        found = locale.datetime_skeletons.get(skeleton)
        if found is not None:
            pattern = str(getattr(found, "pattern", found))
            return _WEEKDAY.sub("EEEE", _SHORT_MONTH.sub("MMMM", pattern))
    return _FALLBACK_DATE_PATTERN


@lru_cache(maxsize=4096)
def _format_day(day: date, locale: Locale) -> str:
    return _plain_spaces(format_date(day, _date_pattern(locale), locale=locale))


@lru_cache(maxsize=4096)
def _format_wall(wall: time, locale: Locale) -> str:
    return _plain_spaces(format_time(wall, format="short", locale=locale))


@lru_cache(maxsize=4096)
def _format_when(day: date, wall: time, locale: Locale) -> str:
    day_text, time_text = _format_day(day, locale), _format_wall(wall, locale)
    if locale.language == "en":
        return f"{day_text} at {time_text}"
    if locale.language == "es":
        # "a la 1:30", "a las 9:30": the article agrees with the hour as written.
        article = "la" if time_text.startswith("1:") else "las"
        return f"{day_text} a {article} {time_text}"
    pattern = str(locale.datetime_formats.get("long", "{1} {0}"))
    return pattern.replace("{1}", day_text).replace("{0}", time_text).replace("'", "")


def _plain_spaces(text: str) -> str:
    """CLDR uses no-break spaces (U+202F before AM/PM in en-US and es-US); they would force UCS-2
    in an SMS, and an email reads the same with a plain space."""
    return text.replace("\u202f", " ").replace("\u00a0", " ")


# --- sample values for template checks -------------------------------------------------------

# The longest realistic values, so a template that fits one SMS segment here fits in real life:
# Wednesday and September are the longest English weekday and month (miércoles, septiembre in
# Spanish), a two-digit day, and 12:30 (12:30 PM where the clock has 12 hours).
SAMPLE_FIRST_NAME = "Christopher-Jonathan"  # 20
SAMPLE_LAST_NAME = "Montgomery-Fitzwilliamson"  # 25
SAMPLE_LOCATION = "Day Unit 4B, Level 2, Riverside Hospital"  # 40
SAMPLE_LOCAL_START = datetime(2023, 9, 27, 12, 30)  # noqa: DTZ001 - wall clock, zone added below


def sample_context(clinic: Clinic, language: str) -> dict[str, object]:
    """A context with the longest realistic values; flags are "unknown" (the wordiest advice)."""
    patient = Patient(
        external_id="SAMPLE-PATIENT-0001",
        first_name=SAMPLE_FIRST_NAME,
        last_name=SAMPLE_LAST_NAME,
        mobile="+447700900123",
        email="christopher.jonathan@example.org",
        language=language,
        timezone=clinic.timezone,
    )
    start = local_to_utc(
        SAMPLE_LOCAL_START.date(), SAMPLE_LOCAL_START.time(), zone(clinic.timezone)
    )
    appointment = Appointment(
        external_id="SAMPLE-APPOINTMENT-0001",
        clinic_id=clinic.id,
        patient=patient,
        procedure="BMBX",
        start=start,
        duration_minutes=90,
        location=SAMPLE_LOCATION,
        status=AppointmentStatus.BOOKED,
        sedation=Tristate.UNKNOWN,
        anticoagulant=Tristate.UNKNOWN,
        on_chemotherapy=Tristate.UNKNOWN,
        diabetes_on_medication=Tristate.UNKNOWN,
    )
    return message_context(appointment, clinic, language)
