"""Check templates: render every message of every protocol, in every language directory and for
every clinic, as it would be sent, and hold each SMS to its segment budget, every text to clean
typography, and every message to a reading grade.

Every template is rendered with `sample_context`'s longest realistic values and with every
combination of the flags and `rescheduled`, since any of them can change the text. An SMS is also
rendered for each patient language that uses the directory (es, es-US: "12:30 p.m." is longer
than "12:30"), and on the longest date whose weekday or month forces UCS-2 ("sábado"): one such
character more than doubles the cost of the whole message, though the name is shorter.

Typography: every rendered SMS, subject and email (text and HTML) is searched for doubled
punctuation ("p.m.." where a sentence ends on a time), double spaces, a space before punctuation
and a repeated word ("the the"), in every variant; a slip usually comes from joining a variable to
the text around it, so only rendering finds it.

Reading grade (readability.py): each SMS and each email's text, for each clinic, with the flags
all "unknown" (the wordiest advice), all "yes" and all "no"; the highest counts. Above the maximum
(8 by default) is a problem naming the template and its grade.

Pure, apart from reading the templates directory.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from html import unescape
from itertools import product
from pathlib import Path

from babel import localedata

from ..catalog import Catalog
from ..configuration.reading_grade import DEFAULT_MAX_GRADE
from ..configuration.sms_budgets import SmsBudgets
from ..domain.appointment import FLAG_NAMES, Appointment, AppointmentStatus, Patient, Tristate
from ..domain.clinic import Clinic
from ..domain.protocol import Channel, Protocol
from ..domain.timing import local_to_utc, zone
from .flag_memo import FlagMemo
from .layout import BASE_LANGUAGE, PARTS, template_name
from .readability import ReadingGrade, reading_grade
from .renderer import (
    SAMPLE_LOCAL_START,
    RenderedMessage,
    Renderer,
    RenderError,
    message_context,
    sample_context,
)
from .sms_encoding import SmsAnalysis, analyse

# Never in an SMS, nor in an email subject (docs/SOURCES.md, "SMS rules"). "medula" for a missing
# accent.
PROCEDURE_WORDS = ("biopsy", "biopsia", "marrow", "médula", "medula")
ALL_PARTS = tuple(part for parts in PARTS.values() for part in parts)
Context = dict[str, object]
DATE_FIELDS = ("date", "time", "when")
# RenderError names the innermost file first: "template <file>, line <n>: <problem>".
_ERROR_FILE = re.compile(r"^template (?P<file>[^,:]+)")
# The flag variants a reading grade is taken on: every flag "unknown", "yes", then "no".
GRADED_FLAGS = tuple(
    {**dict.fromkeys(FLAG_NAMES, value.value), "rescheduled": False} for value in Tristate
)
# Typographic slips, in any language. An ellipsis is three full stops, not a doubled one; a full
# stop before a comma ends an abbreviation ("1:05 p.m., Day Unit").
TYPOGRAPHY: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("doubled punctuation", re.compile(r"(?<!\.)\.\.(?!\.)|([,;:!?])\1|[,;:][.,;:!?]|[!?][.,;:]")),
    ("double space", re.compile(r"(?<=\S) {2,}(?=\S)")),
    ("space before punctuation", re.compile(r"(?<=\S)[ \t]+[.,;:!?](?=\s|$)")),
    ("repeated word", re.compile(r"\b([^\W\d_]+)\s+\1\b", re.IGNORECASE)),
)
_TAG = re.compile(r"<[^>]+>")


@dataclass(frozen=True, slots=True)
class SmsResult:
    """The costliest rendering of one SMS template, in one language, for one clinic."""

    protocol_id: str
    template: str
    language: str  # the template directory: "en", "es"
    clinic_id: str
    encoding: str  # of the costliest rendering
    encodings: tuple[str, ...]  # every encoding seen across the variants
    units: int
    segments: int
    budget: int
    text: str
    variant: str  # the patient language, date and flags that produced it

    @property
    def ok(self) -> bool:
        return self.segments <= self.budget

    @property
    def file(self) -> str:
        return template_name(self.protocol_id, self.language, self.template, "sms")


@dataclass(frozen=True, slots=True)
class TemplateProblem:
    file: str  # relative to the templates directory
    language: str
    clinic_id: str | None  # None when it does not depend on the clinic
    reason: str

    def __str__(self) -> str:
        clinic = f", clinic {self.clinic_id}" if self.clinic_id else ""
        return f"{self.file} ({self.language}{clinic}): {self.reason}"


@dataclass(frozen=True, slots=True)
class GradeResult:
    """The highest reading grade of one message part ("sms" or "email"), in one language."""

    protocol_id: str
    template: str
    part: str
    language: str  # the template directory
    clinic_id: str  # whose rendering read hardest
    grade: ReadingGrade
    max_grade: float
    variant: str

    @property
    def ok(self) -> bool:
        return self.grade.grade <= self.max_grade

    @property
    def file(self) -> str:
        part = "email.txt" if self.part == "email" else self.part
        return template_name(self.protocol_id, self.language, self.template, part)


@dataclass(frozen=True, slots=True)
class TemplateReport:
    sms: tuple[SmsResult, ...]
    problems: tuple[TemplateProblem, ...]
    grades: tuple[GradeResult, ...] = ()

    @property
    def ok(self) -> bool:
        return not self.problems


def check_templates(
    catalog: Catalog,
    renderer: Renderer,
    budgets: SmsBudgets,
    max_grade: float = DEFAULT_MAX_GRADE,
) -> TemplateReport:
    return _Check(catalog, renderer, budgets, max_grade).run()


def typography_slips(text: str) -> list[tuple[str, str]]:
    """Each slip in `text` as (kind, the words around it), in the order of TYPOGRAPHY."""
    found = []
    for kind, pattern in TYPOGRAPHY:
        for line in text.splitlines():
            match = pattern.search(line)
            if match:
                start, end = max(0, match.start() - 20), min(len(line), match.end() + 20)
                found.append((kind, line[start:end].strip()))
                break
    return found


def html_as_text(html: str) -> str:
    """The words of an HTML email, one block per line, as a reader sees them."""
    return unescape(_TAG.sub("\n", html))


# --- what to render ----------------------------------------------------------------------------


def flag_variants() -> list[dict[str, object]]:
    """Every combination of the flags and of `rescheduled` (162 of them)."""
    values = [tuple(t.value for t in Tristate)] * len(FLAG_NAMES) + [(False, True)]
    return [
        dict(zip((*FLAG_NAMES, "rescheduled"), combo, strict=True)) for combo in product(*values)
    ]


def templates_of(protocol: Protocol, root: Path) -> dict[str, set[Channel]]:
    """Each template and the channels it is sent on: the protocol's steps (an SMS that cannot be
    delivered falls back to email), then templates only the service uses (the cancellation), which
    are found on disk."""
    found: dict[str, set[Channel]] = {}
    for step in protocol.steps:
        channels = {rule.channel for rule in step.channels}
        if step.email_fallback and Channel.SMS in channels:
            channels.add(Channel.EMAIL)
        found.setdefault(step.template, set()).update(channels)
    on_disk: dict[str, set[Channel]] = {}
    for path in sorted((root / protocol.id).glob("*/*.j2")):
        parsed = _parse_name(path.name)
        if parsed is not None and parsed[0] not in found:
            channel = Channel.SMS if parsed[1] == "sms" else Channel.EMAIL
            on_disk.setdefault(parsed[0], set()).add(channel)
    return found | dict(sorted(on_disk.items()))


def _parse_name(name: str) -> tuple[str, str] | None:
    """'booked.email.txt.j2' -> ('booked', 'email.txt')."""
    stem = name.removesuffix(".j2")
    for part in sorted(ALL_PARTS, key=len, reverse=True):
        if stem.endswith(f".{part}"):
            return stem.removesuffix(f".{part}"), part
    return None


def languages_of(protocol_id: str, root: Path) -> list[str]:
    """The language directories present, English first."""
    names = sorted(
        p.name for p in (root / protocol_id).iterdir() if p.is_dir() and p.name[0] not in "._"
    )
    return sorted(names, key=lambda name: name != BASE_LANGUAGE)


def patient_languages(language: str, clinics: list[Clinic]) -> list[str]:
    """The patient languages a directory serves: itself, and its regional forms that clinics here
    would see (es-US for a US clinic), where CLDR formats them."""
    base = language.split("-", maxsplit=1)[0]
    tags = [language]
    for clinic in clinics:
        for tag in (f"{base}-{clinic.phone_region}", clinic.default_language):
            if tag.split("-")[0] != base or tag in tags:
                continue
            if localedata.exists(tag.replace("-", "_")):
                tags.append(tag)
    return tags


def costliest_ucs2_start(clinic: Clinic, language: str) -> datetime | None:
    """The local start (at the sample's time) whose `when` is longest among those that need
    UCS-2, over a year of dates; None when no weekday or month name in this language does."""
    best: tuple[int, datetime] | None = None
    first = SAMPLE_LOCAL_START.replace(month=1, day=1)
    for offset in range(366):
        start = first + timedelta(days=offset)
        when = str(_date_fields(clinic, language, start)["when"])
        if not analyse(when).is_gsm7:
            units = len(when.encode("utf-16-le")) // 2
            if best is None or units > best[0]:
                best = (units, start)
    return None if best is None else best[1]


def _date_fields(clinic: Clinic, language: str, local_start: datetime) -> Context:
    """The context's date fields for an appointment at this local start."""
    patient = Patient(
        external_id="SAMPLE-PATIENT",
        first_name="Sample",
        last_name="Patient",
        mobile=None,
        email=None,
        language=language,
        timezone=clinic.timezone,
    )
    appointment = Appointment(
        external_id="SAMPLE-APPOINTMENT",
        clinic_id=clinic.id,
        patient=patient,
        procedure="SAMPLE",
        start=local_to_utc(local_start.date(), local_start.time(), zone(clinic.timezone)),
        duration_minutes=60,
        location="",
        status=AppointmentStatus.BOOKED,
    )
    context = message_context(appointment, clinic, language)
    details = _details(context)
    return {key: details[key] for key in DATE_FIELDS} | {"results_by": context["results_by"]}


def sample_contexts(
    clinic: Clinic, language: str, ucs2_start: datetime | None
) -> Iterator[tuple[str, Context]]:
    """sample_context, then the same on the costliest UCS-2 date when there is one."""
    base = sample_context(clinic, language)
    yield str(_details(base)["date"]), base
    if ucs2_start is not None:
        dated = _date_fields(clinic, language, ucs2_start)
        details = _details(base) | {key: dated[key] for key in DATE_FIELDS}
        yield str(dated["date"]), base | {"appointment": details, "results_by": dated["results_by"]}


def _details(context: Context) -> dict[str, object]:
    details = context["appointment"]
    assert isinstance(details, dict)
    return details


def with_flags(context: Context, flags: Mapping[str, object]) -> Context:
    return context | {"appointment": _details(context) | dict(flags)}


def _flags_text(flags: Mapping[str, object]) -> str:
    return ", ".join(f"{k}={str(v).lower()}" for k, v in flags.items())


# --- the check ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Rendered:
    analysis: SmsAnalysis
    text: str
    variant: str


class _Check:
    def __init__(
        self, catalog: Catalog, renderer: Renderer, budgets: SmsBudgets, max_grade: float
    ) -> None:
        self.catalog = catalog
        self.renderer = renderer
        self.budgets = budgets
        self.max_grade = max_grade
        self.grades: dict[tuple[str, str, str, str], GradeResult] = {}
        # Most flag variants render some part identically: each text is read once per file.
        self.read: set[tuple[str, str, str]] = set()
        self.root = renderer.templates_dir
        self.clinics = sorted(catalog.clinics.by_id.values(), key=lambda c: c.id)
        self.flags = flag_variants()
        self.results: list[SmsResult] = []
        self.problems: dict[tuple[str, ...], TemplateProblem] = {}  # ordered, one of each
        self.ucs2_starts: dict[tuple[str, str], datetime | None] = {}
        # Variants that render the same text share these.
        self.analysed: dict[str, SmsAnalysis] = {}
        self.html_texts: dict[str, str] = {}
        self.reading: dict[tuple[str, str], ReadingGrade] = {}

    def run(self) -> TemplateReport:
        for protocol in self.catalog.protocols:
            templates = templates_of(protocol, self.root)
            for language in languages_of(protocol.id, self.root):
                for template, channels in templates.items():
                    usable = self._complete_channels(protocol.id, language, template, channels)
                    for clinic in self.clinics:
                        if Channel.EMAIL in usable:
                            self._check_email(protocol.id, template, language, clinic)
                        if Channel.SMS in usable:
                            self._check_sms(protocol.id, template, language, clinic)
        for result in self.grades.values():
            if not result.ok:
                reason = (
                    f"reads at {result.grade}, above the maximum of grade {self.max_grade:g} "
                    f"({result.variant}): use shorter sentences and plainer words"
                )
                problem = TemplateProblem(result.file, result.language, result.clinic_id, reason)
                self._problem("grade", problem)
        return TemplateReport(
            tuple(self.results), tuple(self.problems.values()), tuple(self.grades.values())
        )

    def _check_typography(
        self, file: str, language: str, clinic: Clinic, text: str, variant: str
    ) -> None:
        if (file, clinic.id, text) in self.read:
            return
        self.read.add((file, clinic.id, text))
        for kind, excerpt in typography_slips(text):
            reason = f"{kind}: {excerpt!r} ({variant})"
            self._problem(kind, TemplateProblem(file, language, clinic.id, reason))

    def _grade(
        self,
        key: tuple[str, str, str],
        language: str,
        clinic: Clinic,
        text: str,
        variant: str,
    ) -> None:
        protocol_id, template, part = key
        grade = self.reading.get((text, language))
        if grade is None:
            grade = self.reading[text, language] = reading_grade(text, language)
        current = self.grades.get((*key, language))
        if current is None or grade.grade > current.grade.grade:
            self.grades[(*key, language)] = GradeResult(
                protocol_id, template, part, language, clinic.id, grade, self.max_grade, variant
            )

    def _problem(self, kind: str, problem: TemplateProblem) -> None:
        key = (problem.file, problem.language, problem.clinic_id or "", kind)
        self.problems.setdefault(key, problem)

    def _complete_channels(
        self, protocol_id: str, language: str, template: str, channels: set[Channel]
    ) -> set[Channel]:
        """The channels with every part in this language. A language that has some parts of a
        template but not all would send that channel in another language: a problem. A language
        with none of a template falls back whole, as designed (English must have them all)."""
        names = {part: template_name(protocol_id, language, template, part) for part in ALL_PARTS}
        if language != BASE_LANGUAGE and not any((self.root / n).is_file() for n in names.values()):
            return set()
        complete = set()
        for channel in sorted(channels):
            missing = [names[p] for p in PARTS[channel] if not (self.root / names[p]).is_file()]
            if not missing:
                complete.add(channel)
            for name in missing:
                reason = f"missing: the {channel.value} message '{template}' needs it"
                self._problem("missing", TemplateProblem(name, language, None, reason))
        return complete

    def _render(
        self,
        protocol_id: str,
        template: str,
        channel: Channel,
        language: str,
        clinic: Clinic,
        context: Context,
    ) -> RenderedMessage | None:
        try:
            return self.renderer.render(protocol_id, template, channel, language, language, context)
        except RenderError as exc:
            default = template_name(protocol_id, language, template, PARTS[channel][0])
            matched = _ERROR_FILE.match(str(exc))
            file = matched["file"] if matched else default
            reason = f"'{template}' {channel.value} does not render: {exc}"
            self._problem(str(exc), TemplateProblem(file, language, clinic.id, reason))
            return None

    def _render_variant(
        self,
        memo: FlagMemo,
        protocol_id: str,
        template: str,
        channel: Channel,
        language: str,
        clinic: Clinic,
        context: Context,
        flags: Mapping[str, object],
    ) -> RenderedMessage | None:
        """`context` with these flags rendered, or the same rendering of an earlier variant that
        agrees on every flag it read (flag_memo.py): the text, and any failure, are the same."""
        return memo.render(
            _details(context),
            flags,
            lambda details: self._render(
                protocol_id, template, channel, language, clinic, context | {"appointment": details}
            ),
        )

    def _analyse(self, sms: str) -> SmsAnalysis:
        found = self.analysed.get(sms)
        if found is None:
            found = self.analysed[sms] = analyse(sms)
        return found

    def _html_text(self, html: str) -> str:
        found = self.html_texts.get(html)
        if found is None:
            found = self.html_texts[html] = html_as_text(html)
        return found

    def _check_email(self, protocol_id: str, template: str, language: str, clinic: Clinic) -> None:
        base = sample_context(clinic, language)
        subject_file = template_name(protocol_id, language, template, "subject")
        memo = FlagMemo(self.flags[0])
        for flags in self.flags:
            message = self._render_variant(
                memo, protocol_id, template, Channel.EMAIL, language, clinic, base, flags
            )
            if message is not None:
                variant = _flags_text(flags)
                for part, text in (
                    ("subject", message.subject or ""),
                    ("email.txt", message.text or ""),
                    ("email.html", self._html_text(message.html or "")),
                ):
                    file = template_name(protocol_id, language, template, part)
                    self._check_typography(file, language, clinic, text, variant)
                if flags in GRADED_FLAGS:
                    key = (protocol_id, template, "email")
                    self._grade(key, language, clinic, message.text or "", variant)
            subject = (message.subject or "") if message else ""
            word = _procedure_word(subject)
            if word:
                reason = f"the subject names the procedure ({word!r}): {subject!r}"
                self._problem(
                    "procedure", TemplateProblem(subject_file, language, clinic.id, reason)
                )

    def _check_sms(self, protocol_id: str, template: str, language: str, clinic: Clinic) -> None:
        file = template_name(protocol_id, language, template, "sms")
        rendered: list[_Rendered] = []
        for patient_language in patient_languages(language, self.clinics):
            ucs2_start = self._ucs2_start(clinic, patient_language)
            for day, dated in sample_contexts(clinic, patient_language, ucs2_start):
                memo = FlagMemo(self.flags[0])
                for flags in self.flags:
                    message = self._render_variant(
                        memo, protocol_id, template, Channel.SMS, language, clinic, dated, flags
                    )
                    if message is None or message.sms is None:
                        continue
                    variant = f"patient language {patient_language}, {day}, {_flags_text(flags)}"
                    self._check_sms_text(file, language, clinic, message.sms, variant)
                    self._check_typography(file, language, clinic, message.sms, variant)
                    if flags in GRADED_FLAGS:
                        key = (protocol_id, template, "sms")
                        self._grade(key, language, clinic, message.sms, variant)
                    rendered.append(_Rendered(self._analyse(message.sms), message.sms, variant))
        if rendered:
            self._record(protocol_id, template, language, clinic, rendered)

    def _ucs2_start(self, clinic: Clinic, language: str) -> datetime | None:
        key = (clinic.id, language)
        if key not in self.ucs2_starts:
            self.ucs2_starts[key] = costliest_ucs2_start(clinic, language)
        return self.ucs2_starts[key]

    def _check_sms_text(
        self, file: str, language: str, clinic: Clinic, text: str, variant: str
    ) -> None:
        word = _procedure_word(text)
        if word:
            reason = f"names the procedure ({word!r}), which no SMS may ({variant})"
            self._problem("procedure", TemplateProblem(file, language, clinic.id, reason))
        if clinic.name not in text:
            reason = f"does not name the clinic ({clinic.name!r}) ({variant})"
            self._problem("clinic", TemplateProblem(file, language, clinic.id, reason))
        if clinic.phone not in text and clinic.out_of_hours_phone not in text:
            reason = f"gives none of the clinic's phone numbers ({variant})"
            self._problem("phone", TemplateProblem(file, language, clinic.id, reason))

    def _record(
        self,
        protocol_id: str,
        template: str,
        language: str,
        clinic: Clinic,
        rendered: list[_Rendered],
    ) -> None:
        worst = max(rendered, key=lambda r: (r.analysis.segments, r.analysis.units))
        budget = self.budgets.segments(protocol_id, language, template)
        analysis = worst.analysis
        result = SmsResult(
            protocol_id=protocol_id,
            template=template,
            language=language,
            clinic_id=clinic.id,
            encoding=analysis.encoding,
            encodings=tuple(sorted({r.analysis.encoding for r in rendered})),
            units=analysis.units,
            segments=analysis.segments,
            budget=budget,
            text=worst.text,
            variant=worst.variant,
        )
        self.results.append(result)
        if not result.ok:
            reason = (
                f"{analysis.segments} segments ({analysis.encoding}, {analysis.units} units), "
                f"over its budget of {budget} ({worst.variant}): {worst.text!r}"
            )
            self._problem("budget", TemplateProblem(result.file, language, clinic.id, reason))


def _procedure_word(text: str) -> str | None:
    lowered = text.lower()
    return next((word for word in PROCEDURE_WORDS if word in lowered), None)
