"""config/delivery_failures.yaml -> FailureTable, or every problem found."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..domain.failure_rules import FailureRule, FailureTable, StatusPattern
from ..domain.failures import FailureKind
from .problems import ConfigError, ConfigProblem, check_keys, read_yaml

RULE_FIELDS = {"provider", "kind", "status", "code", "opt_out", "meaning"}
CLASSES = {"permanent": True, "temporary": False}


def load_failure_table(path: Path) -> FailureTable:
    problems: list[ConfigProblem] = []
    file = str(path)
    data = read_yaml(path, problems)
    if problems:
        raise ConfigError(problems)
    if not isinstance(data, dict) or not check_keys(
        data, {"rules", "default"}, set(), file, "", problems
    ):
        problems = problems or [ConfigProblem(file, "", "", "expected 'rules' and 'default'")]
        raise ConfigError(problems)
    default = _class(data["default"], file, "", "default", problems)
    rules: list[FailureRule] = []
    if not isinstance(data["rules"], list):
        problems.append(ConfigProblem(file, "", "rules", "must be a list of rules"))
    else:
        for number, raw in enumerate(data["rules"], 1):
            rule = _rule(raw, file, f"rule {number}", problems)
            if rule is not None:
                rules.append(rule)
    if problems:
        raise ConfigError(problems)
    return FailureTable(tuple(rules), default_permanent=bool(default))


def _rule(raw: Any, file: str, where: str, problems: list[ConfigProblem]) -> FailureRule | None:
    if not isinstance(raw, dict):
        problems.append(ConfigProblem(file, where, "", "must be a mapping"))
        return None
    if not check_keys(raw, {"class"}, RULE_FIELDS, file, where, problems):
        return None
    before = len(problems)
    permanent = _class(raw["class"], file, where, "class", problems)
    kind = None
    if "kind" in raw:
        try:
            kind = FailureKind(str(raw["kind"]))
        except ValueError:
            known = ", ".join(k.value for k in FailureKind)
            problems.append(ConfigProblem(file, where, "kind", f"unknown kind (known: {known})"))
    status = None
    if "status" in raw:
        try:
            status = StatusPattern.parse(raw["status"])
        except ValueError as exc:
            problems.append(ConfigProblem(file, where, "status", str(exc)))
    opt_out = raw.get("opt_out", False)
    if not isinstance(opt_out, bool):
        problems.append(ConfigProblem(file, where, "opt_out", "must be true or false"))
    provider = raw.get("provider")
    if len(problems) > before or permanent is None:
        return None
    return FailureRule(
        permanent=permanent,
        meaning=str(raw.get("meaning", "")),
        provider=None if provider in (None, "any") else str(provider),
        kind=kind,
        status=status,
        code=None if raw.get("code") is None else str(raw["code"]),
        opt_out=bool(opt_out),
    )


def _class(
    value: Any, file: str, where: str, field: str, problems: list[ConfigProblem]
) -> bool | None:
    if value in CLASSES:
        return CLASSES[value]
    problems.append(ConfigProblem(file, where, field, "must be 'permanent' or 'temporary'"))
    return None
