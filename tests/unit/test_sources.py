"""docs/SOURCES.md keeps up with the templates: every macro and template of the biopsy protocol
has a section, no section names one that is gone, and every section cites listed sources (with a
URL) or says it makes no clinical claim."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.factories import ROOT, TEMPLATES_DIR

SOURCES = ROOT / "docs" / "SOURCES.md"
PROTOCOL = "bone_marrow_biopsy"
_SOURCE = re.compile(r"^- \*\*\[(?P<id>S\d+)\]\*\* (?P<title>.+?)\. (?P<url>https?://\S+)$", re.M)
_MACRO = re.compile(r"\{%-?\s*macro\s+(\w+)\s*\(")
_CITATION = re.compile(r"\[(S\d+)\]")
NO_CLAIM = "No clinical claim."


def sections(text: str, part: str) -> dict[str, str]:
    """`### \\`name\\`` sections under `## <part>`, each with its body."""
    start = text.index(f"\n## {part}\n")
    end = text.find("\n## ", start + 1)
    body = text[start : end if end != -1 else len(text)]
    found: dict[str, str] = {}
    for chunk in re.split(r"\n### ", body)[1:]:
        heading, _, rest = chunk.partition("\n")
        found[heading.strip().strip("`")] = rest
    return found


def macro_names() -> set[str]:
    names: set[str] = set()
    for path in (TEMPLATES_DIR / "_macros").glob(f"*/{PROTOCOL}.j2"):
        names |= set(_MACRO.findall(path.read_text(encoding="utf-8")))
    return names


def template_ids() -> set[str]:
    return {
        path.name.split(".", maxsplit=1)[0] for path in (TEMPLATES_DIR / PROTOCOL).glob("*/*.j2")
    }


TEXT = SOURCES.read_text(encoding="utf-8")
LISTED = {m["id"]: m for m in _SOURCE.finditer(TEXT)}


def test_the_readme_points_at_the_sources_file() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "docs/SOURCES.md" in readme
    assert "CLINICAL.md" not in readme and "../shared" not in readme


def test_every_source_has_a_title_and_a_public_url() -> None:
    assert len(LISTED) >= 10
    numbers = sorted(int(key[1:]) for key in LISTED)
    assert numbers == list(range(1, len(numbers) + 1))  # S1, S2, ... none skipped or repeated
    for source in LISTED.values():
        assert source["title"].strip() and source["url"].startswith(("https://", "http://"))


@pytest.mark.parametrize(
    ("part", "names"),
    [("Macros", macro_names()), ("Templates", template_ids())],
    ids=["macros", "templates"],
)
def test_every_macro_and_template_has_a_section_and_no_section_is_stale(
    part: str, names: set[str]
) -> None:
    documented = set(sections(TEXT, part))
    assert names, part
    assert names - documented == set(), f"no section in {SOURCES.name} for these {part.lower()}"
    assert documented - names == set(), f"{SOURCES.name} has sections for {part.lower()} now gone"


@pytest.mark.parametrize("part", ["Macros", "Templates"])
def test_every_section_cites_listed_sources_or_makes_no_claim(part: str) -> None:
    for name, body in sections(TEXT, part).items():
        cited = set(_CITATION.findall(body))
        assert cited or body.strip().startswith(NO_CLAIM), f"{name}: cites no source"
        assert cited <= LISTED.keys(), f"{name}: cites {sorted(cited - LISTED.keys())}, not listed"


def test_every_listed_source_is_cited() -> None:
    before, _, after = TEXT.partition("\n## Sources\n")
    outside_the_list = before + after[after.index("\n## ") :]
    assert LISTED.keys() == set(_CITATION.findall(outside_the_list))


def test_a_new_macro_without_a_section_fails(tmp_path: Path) -> None:
    """The check itself: a macro added to the templates and not to the sources is found."""
    text = (TEMPLATES_DIR / "_macros" / "en" / f"{PROTOCOL}.j2").read_text(encoding="utf-8")
    added = set(_MACRO.findall(text + "\n{% macro hydration() %}Drink water.{% endmacro %}"))
    assert added - set(sections(TEXT, "Macros")) == {"hydration"}
