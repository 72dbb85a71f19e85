"""`reminder-service check-templates` in a subprocess: 0 on the shipped templates, 1 on a broken
copy (naming the file and language), 2 when the configuration cannot be loaded."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import CONFIG_DIR, ROOT, TEMPLATES_DIR

pytestmark = pytest.mark.slow


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "REMINDER_DATABASE_URL": f"sqlite:///{tmp_path / 'reminders.db'}",
        "REMINDER_CONFIG_DIR": str(CONFIG_DIR),
        "REMINDER_TEMPLATES_DIR": str(TEMPLATES_DIR),
        "REMINDER_LOG_LEVEL": "WARNING",
        "COLUMNS": "120",  # the table's width, whatever the terminal running the tests
    }


def check_templates(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "reminder_service", "check-templates"],
        env=env, capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
    )  # fmt: skip


def table_rows(stdout: str, title: str = "SMS: ") -> list[list[str]]:
    """The rows of the table whose title starts with `title` (SMS, or Reading grade)."""
    rows, inside = [], False
    for line in stdout.splitlines():
        if line.strip().startswith(("SMS: ", "Reading grade: ")):
            inside = line.strip().startswith(title)
        elif inside and line.startswith("│"):
            rows.append([cell.strip() for cell in line.strip("│ ").split("│")])
    return rows


def test_the_shipped_templates_pass(env: dict[str, str]) -> None:
    result = check_templates(env)
    assert result.returncode == 0, result.stderr
    rows = table_rows(result.stdout)
    # Two clinics ship (UK and US), so each row names its clinic.
    by_key = {tuple(row[:3]): row[3:] for row in rows}
    assert by_key[("booked", "en", "riverside")][:1] == ["GSM-7"]
    assert by_key[("booked", "es", "riverside")][0] == "GSM-7/UCS-2"  # a Saturday: sábado
    assert by_key[("next_day", "es", "lakeside")][0] == "UCS-2"
    for _encoding, _units, segments, budget, ok in by_key.values():
        assert int(segments) <= int(budget) and ok == "yes"
    assert {row[2] for row in rows} == {"riverside", "lakeside"}
    assert len(rows) == 24 and all(row[-1] == "yes" for row in rows)
    grades = table_rows(result.stdout, "Reading grade: ")
    # Every email and SMS template, in English and Spanish; each at grade 8 or below.
    assert len(grades) == (10 + 6) * 2
    for _template, _part, language, _clinic, measure, grade, maximum, ok in grades:
        assert measure.startswith("FK" if language == "en" else "FH ")
        assert float(grade) <= 8 and (maximum, ok) == ("8", "yes")
    assert "every message reads at grade 8 or below" in " ".join(result.stdout.split())


def test_a_broken_copy_fails_naming_the_file_and_language(
    env: dict[str, str], tmp_path: Path
) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, templates)
    sms = templates / "bone_marrow_biopsy" / "es" / "after_care.sms.j2"
    sms.write_text(sms.read_text(encoding="utf-8") * 3, encoding="utf-8")
    result = check_templates({**env, "REMINDER_TEMPLATES_DIR": str(templates)})
    assert result.returncode == 1, result.stdout + result.stderr
    rows = table_rows(result.stdout)
    assert ["after_care", "es", "riverside", "GSM-7", "756", "5", "2", "NO"] in rows
    assert "template problems (2):" in result.stderr  # once for each clinic
    assert f"{sms} (es, clinic riverside): 5 segments (GSM-7, 756 units), over its budget" in (
        result.stderr
    )


def test_a_bad_budgets_file_is_a_configuration_error(env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config)
    (config / "sms_budgets.yaml").write_text("default: 1\nlanguages: {es: many}\n")
    result = check_templates({**env, "REMINDER_CONFIG_DIR": str(config)})
    assert result.returncode == 2
    unwrapped = result.stderr.replace("\n", "")  # check-config's printer wraps long problems
    assert "sms_budgets.yaml: field 'languages.es': must be a whole number of segments" in (
        unwrapped
    )


def test_a_maximum_grade_below_the_shipped_text_fails_naming_template_and_grade(
    env: dict[str, str],
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "reminder_service", "check-templates", "--max-grade", "4"],
        env=env, capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    grades = {(row[0], row[1], row[2]): row for row in table_rows(result.stdout, "Reading grade")}
    booked = grades[("booked", "email", "en")]
    assert booked[-2:] == ["4", "NO"]
    problems = result.stderr.replace("\n", " ")
    assert (
        f"bone_marrow_biopsy/en/booked.email.txt.j2 (en, clinic {booked[3]}): reads at grade "
        in (" ".join(problems.split()))
    )
    assert "above the maximum of grade 4" in problems
