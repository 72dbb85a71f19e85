"""Problems are collected, not raised one by one, so a clinic sees them all at once."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    file: str
    where: str  # "step 'escort'", "clinic 'riverside'", or "" for the file itself
    field: str
    message: str

    def __str__(self) -> str:
        parts = [self.file, self.where, f"field '{self.field}'" if self.field else ""]
        return ": ".join(p for p in parts if p) + f": {self.message}"


class ConfigError(Exception):
    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def read_yaml(path: Path, problems: list[ConfigProblem]) -> Any:
    try:
        return parse_yaml(path.read_bytes(), str(path), problems)
    except FileNotFoundError:
        problems.append(ConfigProblem(str(path), "", "", "file not found"))
    return None


def parse_yaml(data: bytes, source: str, problems: list[ConfigProblem]) -> Any:
    """YAML text (UTF-8) from anywhere, a file or an upload, named `source` in problems."""
    try:
        return yaml.safe_load(data.decode("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        problems.append(ConfigProblem(source, "", "", f"not valid YAML: {exc}"))
    return None


def check_keys(
    data: dict[str, Any],
    required: set[str],
    optional: set[str],
    file: str,
    where: str,
    problems: list[ConfigProblem],
) -> bool:
    """Report missing and unknown keys (a typo'd key must not be silently ignored)."""
    ok = True
    for key in sorted(required - data.keys()):
        problems.append(ConfigProblem(file, where, key, "is required"))
        ok = False
    for key in sorted(data.keys() - required - optional, key=str):
        known = ", ".join(sorted(required | optional))
        problems.append(ConfigProblem(file, where, str(key), f"unknown field (known: {known})"))
        ok = False
    return ok
