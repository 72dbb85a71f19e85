"""Reading grade of a message: Flesch-Kincaid for English, Fernández-Huerta for Spanish.

Health literacy guidance asks for patient text at about a US 8th-grade reading level or below.
Flesch-Kincaid gives a grade directly. Fernández-Huerta (1959) is Flesch's reading ease refitted
to Spanish, a score from 0 (hard) to 100 (easy) read on Flesch's table; the grade here is that
table, interpolated: 90 and up is 5th grade or below, 80 6th, 70 7th, 60-70 8th to 9th, 50-60
10th to 12th, 30-50 college. So grade 8 is a score of 65.

A message is read as a patient sees it: every line is a sentence (a list item, a heading or a
"Date:" line ends where it ends, though it has no full stop).

Pure: textstat counts syllables with the bundled CMU dictionary (English) and pyphen (Spanish).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import pairwise

from textstat.backend import metrics

# (Fernández-Huerta score, grade), easiest first; Flesch's table, the grade at each band's edge.
_SPANISH_GRADES: tuple[tuple[float, float], ...] = (
    (100.0, 4.0), (90.0, 5.0), (80.0, 6.0), (70.0, 7.0), (60.0, 9.0), (50.0, 12.0), (30.0, 16.0),
    (0.0, 18.0),
)  # fmt: skip
_BULLET = re.compile(r"^\s*(?:[-*•]\s+)")
_ENDS_A_SENTENCE = re.compile(r"[.!?:;]$")


@dataclass(frozen=True, slots=True)
class ReadingGrade:
    measure: str  # "Flesch-Kincaid" or "Fernández-Huerta"
    score: float  # the measure's own number: a grade, or the Spanish reading ease
    grade: float  # US school grade

    def __str__(self) -> str:
        if self.measure == "Flesch-Kincaid":
            return f"grade {self.grade:.1f} (Flesch-Kincaid)"
        return f"grade {self.grade:.1f} (Fernández-Huerta {self.score:.1f})"


def reading_grade(text: str, language: str) -> ReadingGrade:
    """The grade of `text`, written in `language` (a tag: "en-GB", "es"). Languages other than
    Spanish are read as English, the only other formula here."""
    prepared = as_sentences(text)
    if language.split("-", maxsplit=1)[0].lower() == "es":
        score = float(metrics.fernandez_huerta(prepared, "es"))
        return ReadingGrade("Fernández-Huerta", score, spanish_grade(score))
    grade = float(metrics.flesch_kincaid_grade(prepared, "en_US"))
    return ReadingGrade("Flesch-Kincaid", grade, grade)


def spanish_grade(score: float) -> float:
    """A Fernández-Huerta score read as a US school grade (see the module docstring)."""
    if score >= _SPANISH_GRADES[0][0]:
        return _SPANISH_GRADES[0][1]
    for (easier, low), (harder, high) in pairwise(_SPANISH_GRADES):
        if score >= harder:
            return low + (high - low) * (easier - score) / (easier - harder)
    return _SPANISH_GRADES[-1][1]


def as_sentences(text: str) -> str:
    """Each non-empty line a sentence: list markers dropped, a full stop where none ends it."""
    sentences = []
    for raw in text.splitlines():
        line = _BULLET.sub("", raw).strip()
        if not line or set(line) <= {"-"}:  # blank, or the "--" above a signature
            continue
        sentences.append(line if _ENDS_A_SENTENCE.search(line) else f"{line}.")
    return " ".join(sentences)
