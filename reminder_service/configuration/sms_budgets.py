"""config/sms_budgets.yaml -> SmsBudgets: how many segments each SMS template may cost.

The file is optional: without it every SMS gets one segment (160 GSM-7 characters).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .problems import ConfigError, ConfigProblem, check_keys, read_yaml

FIELDS = {"default", "languages", "templates"}
# Twilio advises against more than 10 segments; a larger budget is a typo, not a plan.
MAX_SEGMENTS = 10
_LANGUAGE = r"[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*"
LANGUAGE_TAG = re.compile(rf"^{_LANGUAGE}$")
TEMPLATE_KEY = re.compile(rf"^[A-Za-z0-9_]+/{_LANGUAGE}/[A-Za-z0-9_]+$")
SEGMENTS_MESSAGE = f"must be a whole number of segments from 1 to {MAX_SEGMENTS}"


@dataclass(frozen=True, slots=True)
class SmsBudgets:
    default: int = 1
    languages: Mapping[str, int] = field(default_factory=dict)  # "es", "es-US"
    templates: Mapping[str, int] = field(default_factory=dict)  # "<protocol>/<language>/<name>"

    def segments(self, protocol_id: str, language: str, template: str) -> int:
        """The most specific budget: the template's, its language's, its base language's, the
        default."""
        key = f"{protocol_id}/{language}/{template}"
        if key in self.templates:
            return self.templates[key]
        for tag in (language, language.split("-", maxsplit=1)[0]):
            if tag in self.languages:
                return self.languages[tag]
        return self.default


def load_sms_budgets(path: Path) -> SmsBudgets:
    if not path.exists():
        return SmsBudgets()
    problems: list[ConfigProblem] = []
    file = str(path)
    data = read_yaml(path, problems)
    if data is None and not problems:
        return SmsBudgets()  # an empty file
    if problems:
        raise ConfigError(problems)
    if not isinstance(data, dict):
        message = "must be a mapping with default, languages and templates"
        raise ConfigError([ConfigProblem(file, "", "", message)])
    check_keys(data, set(), FIELDS, file, "", problems)
    default = _segments(data.get("default", 1), file, "default", problems)
    languages = _mapping(data.get("languages", {}), "languages", LANGUAGE_TAG, file, problems)
    templates = _mapping(data.get("templates", {}), "templates", TEMPLATE_KEY, file, problems)
    if problems:
        raise ConfigError(problems)
    return SmsBudgets(default=default or 1, languages=languages, templates=templates)


_KEY_MESSAGES = {
    "languages": "is not a language tag such as es or es-US",
    "templates": "is not <protocol>/<language>/<template>, e.g. bone_marrow_biopsy/es/booked",
}


def _mapping(
    value: Any, name: str, key_pattern: re.Pattern[str], file: str, problems: list[ConfigProblem]
) -> dict[str, int]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.append(ConfigProblem(file, "", name, "must map names to segments"))
        return {}
    found: dict[str, int] = {}
    for key, raw in value.items():
        where = f"{name}.{key}"
        if not isinstance(key, str) or not key_pattern.match(key):
            problems.append(ConfigProblem(file, "", where, _KEY_MESSAGES[name]))
            continue
        segments = _segments(raw, file, where, problems)
        if segments is not None:
            found[key] = segments
    return found


def _segments(value: Any, file: str, field: str, problems: list[ConfigProblem]) -> int | None:
    # bool is an int in Python, and YAML reads a bare "yes" as True.
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SEGMENTS:
        problems.append(ConfigProblem(file, "", field, f"{SEGMENTS_MESSAGE}, not {value!r}"))
        return None
    return value
