"""Reading grades: Flesch-Kincaid for English, Fernández-Huerta read as a grade for Spanish, and
messages read as a patient sees them (every line a sentence)."""

from __future__ import annotations

import pytest

from reminder_service.rendering.readability import as_sentences, reading_grade, spanish_grade


@pytest.mark.parametrize(
    ("score", "grade"),
    [
        (120.0, 4.0),
        (100.0, 4.0),
        (90.0, 5.0),
        (75.0, 6.5),
        (70.0, 7.0),
        (65.0, 8.0),
        (60.0, 9.0),
        (50.0, 12.0),
        (40.0, 14.0),
        (0.0, 18.0),
        (-20.0, 18.0),
    ],
)
def test_a_fernandez_huerta_score_reads_as_a_grade_on_fleschs_table(
    score: float, grade: float
) -> None:
    assert spanish_grade(score) == pytest.approx(grade)


def test_plain_english_reads_low_and_dense_english_reads_high() -> None:
    plain = reading_grade("Keep the dressing on for a day. If it bleeds, press on it.", "en-GB")
    dense = reading_grade(
        "Notwithstanding institutional heterogeneity, histopathological characterisation "
        "necessitates comprehensive interdisciplinary consideration.",
        "en",
    )
    assert plain.measure == dense.measure == "Flesch-Kincaid"
    assert plain.grade < 4 < 8 < dense.grade
    assert plain.score == plain.grade
    assert str(plain) == f"grade {plain.grade:.1f} (Flesch-Kincaid)"


def test_spanish_is_read_with_fernandez_huerta() -> None:
    result = reading_grade("Deje el vendaje puesto un día. Si sangra, presione.", "es-US")
    assert result.measure == "Fernández-Huerta"
    assert result.score > 65 and result.grade == pytest.approx(spanish_grade(result.score))
    assert str(result).startswith(f"grade {result.grade:.1f} (Fernández-Huerta ")


def test_every_line_is_a_sentence() -> None:
    text = "HEADING\n- a temperature of 38C or more\n- pain that gets worse\n\n--\nCall us."
    assert as_sentences(text) == (
        "HEADING. a temperature of 38C or more. pain that gets worse. Call us."
    )
    # A list without full stops is not one long sentence.
    items = "\n".join(f"- item number {n} on the list" for n in range(20))
    assert reading_grade(items, "en").grade < reading_grade(items.replace("\n", " "), "en").grade
