"""FlagMemo: a rendering is reused only for variants that agree on every flag it read."""

from __future__ import annotations

from typing import Any

import pytest
from jinja2 import StrictUndefined, UndefinedError
from jinja2.sandbox import SandboxedEnvironment

from reminder_service.rendering.flag_memo import FlagMemo

FLAGS = ("sedation", "anticoagulant")
DETAILS = {"id": "A1", "sedation": "unknown", "anticoagulant": "unknown"}
ENV = SandboxedEnvironment(undefined=StrictUndefined)


def renders(source: str, variants: list[dict[str, str]]) -> tuple[list[str], int]:
    """Each variant's text through one memo, and how many times the template really ran."""
    template = ENV.from_string(source)
    memo, runs = FlagMemo(FLAGS), []

    def render(details: dict[str, Any]) -> str:
        runs.append(1)
        return template.render(appointment=details)

    return [memo.render(DETAILS, flags, render) for flags in variants], len(runs)


def every_variant() -> list[dict[str, str]]:
    return [{"sedation": s, "anticoagulant": a} for s in ("yes", "no") for a in ("yes", "no")]


def test_a_flag_never_read_does_not_render_again() -> None:
    texts, runs = renders("{{ appointment.id }}: {{ appointment.sedation }}", every_variant())
    assert texts == ["A1: yes", "A1: yes", "A1: no", "A1: no"]
    assert runs == 2


def test_a_flag_read_only_on_one_branch_counts_only_there() -> None:
    source = (
        "{% if appointment['sedation'] == 'yes' %}{{ appointment.get('anticoagulant') }}{% endif %}"
    )
    texts, runs = renders(source, every_variant())
    assert texts == ["yes", "no", "", ""]
    assert runs == 3


@pytest.mark.parametrize(
    "source",
    [
        "{{ appointment }}",
        "{{ appointment|tojson }}",
        "{{ appointment|dictsort }}",
        "{% for key, value in appointment.items() %}{{ value }}{% endfor %}",
        "{{ appointment.values()|list }}",
        "{{ appointment == {} }}",
    ],
)
def test_a_look_at_the_whole_mapping_reads_every_flag(source: str) -> None:
    texts, runs = renders(source, every_variant())
    assert runs == 4
    plain = [ENV.from_string(source).render(appointment=DETAILS | v) for v in every_variant()]
    assert texts == plain


def test_errors_read_as_they_would_for_a_plain_dict() -> None:
    with pytest.raises(UndefinedError, match="'dict object' has no attribute 'missing'"):
        renders("{{ appointment.missing }}", every_variant())
