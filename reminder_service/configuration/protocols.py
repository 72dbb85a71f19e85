"""config/protocols/*.yaml -> Protocol objects, or every problem found."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from ..domain.appointment import FLAG_NAMES, Tristate
from ..domain.protocol import (
    ALWAYS,
    Channel,
    ChannelRule,
    Condition,
    ConfirmationRule,
    LatePolicy,
    Priority,
    Protocol,
    Step,
)
from ..domain.timing import RelativeTime, parse_duration, parse_relative_time
from .problems import ConfigError, ConfigProblem, check_keys, read_yaml

STEP_REQUIRED = {"id", "send_at", "channels", "template"}
STEP_OPTIONAL = {"description", "when", "enabled", "late", "not_after", "min_notice"}
STEP_OPTIONAL |= {"email_fallback", "calendar", "sms_priority", "over_cap", "too_late", "priority"}
STEP_CHOICES = {
    "over_cap": ("email", "merge"),
    "too_late": ("skip", "merge"),
    "priority": tuple(p.value for p in Priority)[::-1],  # standard first: the default
}
PROTOCOL_REQUIRED = {"id", "name", "procedure_codes", "steps"}
PROTOCOL_OPTIONAL = {"confirmation"}
CONFIRMATION_REQUIRED = {"required_by"}
CONFIRMATION_OPTIONAL = {"when"}

E = TypeVar("E", LatePolicy, Channel)

# Checks that a step's template files exist: (protocol id, template, channel) -> missing names.
TemplateCheck = Callable[[str, str, Channel], list[str]]


def load_protocols(directory: Path, missing_templates: TemplateCheck) -> list[Protocol]:
    problems: list[ConfigProblem] = []
    protocols: list[Protocol] = []
    files = sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml"))
    if not files:
        problems.append(ConfigProblem(str(directory), "", "", "no protocol files (*.yaml)"))
    for path in files:
        protocol = _load_file(path, missing_templates, problems)
        if protocol is not None:
            protocols.append(protocol)
    _check_unique(protocols, problems, str(directory))
    if problems:
        raise ConfigError(problems)
    return protocols


def _check_unique(protocols: list[Protocol], problems: list[ConfigProblem], where: str) -> None:
    owner: dict[str, str] = {}
    ids: set[str] = set()
    for protocol in protocols:
        if protocol.id in ids:
            problems.append(ConfigProblem(where, f"protocol '{protocol.id}'", "id", "used twice"))
        ids.add(protocol.id)
        for code in sorted(protocol.procedure_codes):
            if code in owner:
                problems.append(
                    ConfigProblem(
                        where,
                        f"protocol '{protocol.id}'",
                        "procedure_codes",
                        f"{code} already belongs to protocol '{owner[code]}'",
                    )
                )
            owner[code] = protocol.id


def _load_file(
    path: Path, missing_templates: TemplateCheck, problems: list[ConfigProblem]
) -> Protocol | None:
    file = str(path)
    data = read_yaml(path, problems)
    if data is None:
        return None
    if not isinstance(data, dict):
        problems.append(ConfigProblem(file, "", "", "must be a mapping with id, name, steps"))
        return None
    before = len(problems)
    check_keys(data, PROTOCOL_REQUIRED, PROTOCOL_OPTIONAL, file, "", problems)
    codes = data.get("procedure_codes")
    if not isinstance(codes, list) or not codes or not all(isinstance(c, str) for c in codes):
        problems.append(ConfigProblem(file, "", "procedure_codes", "must be a list of codes"))
        codes = []
    protocol_id = str(data.get("id", path.stem))
    steps_data = data.get("steps")
    if not isinstance(steps_data, list) or not steps_data:
        problems.append(ConfigProblem(file, "", "steps", "must be a non-empty list of steps"))
        steps_data = []
    steps: list[Step] = []
    seen: set[str] = set()
    for index, raw in enumerate(steps_data, start=1):
        step = _load_step(raw, index, file, protocol_id, missing_templates, problems)
        if step is None:
            continue
        if step.id in seen:
            problems.append(ConfigProblem(file, f"step '{step.id}'", "id", "used twice"))
        seen.add(step.id)
        steps.append(step)
    confirmation = None
    if "confirmation" in data:
        confirmation = _confirmation(data["confirmation"], file, problems)
    if len(problems) > before:
        return None
    return Protocol(
        id=protocol_id,
        name=str(data["name"]),
        procedure_codes=frozenset(c.strip().upper() for c in codes),
        steps=tuple(steps),
        confirmation=confirmation,
    )


def _confirmation(raw: Any, file: str, problems: list[ConfigProblem]) -> ConfirmationRule | None:
    """`confirmation: {required_by: <moment>, when: <condition>}`: read as a step's `send_at`
    and `when`."""
    where = "confirmation"

    def problem(field: str, message: str) -> None:
        problems.append(ConfigProblem(file, where, field, message))

    if not isinstance(raw, dict):
        problem("", "must be a mapping with required_by (and when)")
        return None
    before = len(problems)
    check_keys(raw, CONFIRMATION_REQUIRED, CONFIRMATION_OPTIONAL, file, where, problems)
    required_by = None
    if "required_by" in raw:
        required_by = _moment(raw["required_by"], "required_by", problem)
    condition = _condition(raw.get("when", "always"), "when", problem)
    if required_by is None or len(problems) > before:
        return None
    return ConfirmationRule(required_by, condition)


def _load_step(
    raw: Any,
    index: int,
    file: str,
    protocol_id: str,
    missing_templates: TemplateCheck,
    problems: list[ConfigProblem],
) -> Step | None:
    if not isinstance(raw, dict):
        problems.append(ConfigProblem(file, f"step {index}", "", "must be a mapping"))
        return None
    where = f"step '{raw['id']}'" if isinstance(raw.get("id"), str) else f"step {index}"
    before = len(problems)

    def problem(field: str, message: str) -> None:
        problems.append(ConfigProblem(file, where, field, message))

    check_keys(raw, STEP_REQUIRED, STEP_OPTIONAL, file, where, problems)
    send_at = _moment(raw.get("send_at"), "send_at", problem)
    not_after = _moment(raw["not_after"], "not_after", problem) if "not_after" in raw else None
    condition = _condition(raw.get("when", "always"), "when", problem)
    channels = _channels(raw.get("channels"), problem)
    late = _choice(raw.get("late", LatePolicy.CATCH_UP.value), LatePolicy, "late", problem)
    flags = {name: raw.get(name, default) for name, default in STEP_FLAGS.items()}
    for name, value in flags.items():
        if not isinstance(value, bool):
            problem(name, "must be true or false")
    min_notice = None
    if "min_notice" in raw:
        try:
            min_notice = parse_duration(str(raw["min_notice"]))
        except ValueError as exc:
            problem("min_notice", str(exc))
    priority = raw.get("sms_priority", 1)
    if not isinstance(priority, int) or isinstance(priority, bool) or priority < 0:
        problem("sms_priority", "must be a whole number, 0 or more")
    choices = {name: str(raw.get(name, allowed[0])) for name, allowed in STEP_CHOICES.items()}
    for name, value in choices.items():
        if value not in STEP_CHOICES[name]:
            problem(name, f"must be one of {', '.join(STEP_CHOICES[name])}")
    template = raw.get("template")
    if not isinstance(template, str) or not template:
        problem("template", "must name a template")
    elif len(problems) == before:
        # An SMS step that may fall back to email needs the email parts too.
        wanted = {rule.channel for rule in channels}
        if flags["email_fallback"] and Channel.SMS in wanted:
            wanted.add(Channel.EMAIL)
        for channel in sorted(wanted):
            missing = missing_templates(protocol_id, template, channel)
            if missing:
                problem("template", f"unknown template '{template}': missing {', '.join(missing)}")
    if len(problems) > before or send_at is None or late is None:
        return None
    return Step(
        id=str(raw["id"]),
        send_at=send_at,
        channels=tuple(channels),
        template=str(template),
        condition=condition,
        enabled=bool(flags["enabled"]),
        email_fallback=bool(flags["email_fallback"]),
        calendar=bool(flags["calendar"]),
        priority=Priority(choices["priority"]),
        sms_priority=int(priority) if isinstance(priority, int) else 1,
        over_cap=choices["over_cap"],
        too_late=choices["too_late"],
        late=late,
        not_after=not_after,
        min_notice=min_notice,
        description=str(raw.get("description", "")),
    )


STEP_FLAGS = {"enabled": True, "email_fallback": True, "calendar": False}


def _moment(value: Any, field: str, problem: Callable[[str, str], None]) -> RelativeTime | None:
    if not isinstance(value, str):
        problem(field, "must be a moment such as '1 day before start at 18:00'")
        return None
    try:
        return parse_relative_time(value)
    except ValueError as exc:
        problem(field, str(exc))
        return None


def _choice(value: Any, kind: type[E], field: str, problem: Callable[[str, str], None]) -> E | None:
    try:
        return kind(str(value))
    except ValueError:
        problem(field, f"{value!r} is not one of {', '.join(k.value for k in kind)}")
        return None


def _tristate(value: Any) -> Tristate:
    # YAML 1.1 reads bare yes/no as booleans; accept both spellings.
    if value is True:
        return Tristate.YES
    if value is False:
        return Tristate.NO
    return Tristate(str(value).lower())


def _condition(value: Any, field: str, problem: Callable[[str, str], None]) -> Condition:
    if value in ("always", None):
        return ALWAYS
    if not isinstance(value, dict):
        problem(field, "must be 'always' or a mapping of flag: value(s)")
        return ALWAYS
    requirements = []
    for flag, allowed in value.items():
        if flag not in FLAG_NAMES:
            problem(field, f"unknown flag {flag!r} (flags: {', '.join(FLAG_NAMES)})")
            continue
        values = allowed if isinstance(allowed, list) else [allowed]
        try:
            requirements.append((str(flag), frozenset(_tristate(v) for v in values)))
        except ValueError:
            problem(field, f"{flag}: values must be yes, no or unknown, not {allowed!r}")
    return Condition(tuple(requirements))


def _channels(value: Any, problem: Callable[[str, str], None]) -> list[ChannelRule]:
    if not isinstance(value, dict) or not value:
        problem("channels", "must map each channel (sms, email) to 'always' or a condition")
        return []
    rules = []
    for name, when in value.items():
        channel = _choice(name, Channel, "channels", problem)
        if channel is not None:
            rules.append(ChannelRule(channel, _condition(when, f"channels.{name}", problem)))
    return rules
