"""GSM-7 / UCS-2 detection, septet counting, segment maths and typographic normalisation."""

from __future__ import annotations

import pytest

from reminder_service.rendering.sms_encoding import (
    GSM7_BASIC,
    GSM7_EXTENSION,
    analyse,
    normalise_for_sms,
)


def test_alphabet_tables_have_the_gsm_03_38_sizes() -> None:
    # 128 code points minus the escape; ten extension characters including form feed.
    assert len(GSM7_BASIC) == 127
    assert len(GSM7_EXTENSION) == 10
    assert not GSM7_BASIC & GSM7_EXTENSION


def test_plain_text_is_gsm7_and_counts_one_septet_per_character() -> None:
    result = analyse("Riverside Haematology: call 020 7946 0123.")
    assert result.encoding == "GSM-7"
    assert result.units == 42
    assert result.segments == 1
    assert result.characters_outside_gsm == ()


@pytest.mark.parametrize("char", ["£", "é", "è", "Ä", "ñ", "ü", "à", "¿", "¡", "Δ", "Ç", "§", "@"])
def test_latin_and_greek_characters_in_the_basic_set_stay_gsm7(char: str) -> None:
    assert analyse(f"Price {char}").encoding == "GSM-7"


@pytest.mark.parametrize("char", ["^", "{", "}", "\\", "[", "]", "~", "|", "€"])
def test_extension_characters_count_as_two_septets(char: str) -> None:
    result = analyse(f"a{char}b")
    assert result.encoding == "GSM-7"
    assert result.units == 4


@pytest.mark.parametrize(
    "char", ["á", "í", "ó", "ú", "ç", "ã", "õ", "â", "ê", "\u00b0", "\u2019", "\u2013", "\u2026"]
)
def test_characters_outside_gsm_force_ucs2(char: str) -> None:
    result = analyse(f"Hello {char} there")
    assert result.encoding == "UCS-2"
    assert result.characters_outside_gsm == (char,)


def test_offending_characters_are_reported_once_in_order_of_appearance() -> None:
    assert analyse("mañana á las 9 — á").characters_outside_gsm == ("á", "—")


def test_emoji_count_two_utf16_code_units() -> None:
    result = analyse("ok 👍")
    assert result.encoding == "UCS-2"
    assert result.units == 5


@pytest.mark.parametrize(
    ("length", "segments"), [(1, 1), (160, 1), (161, 2), (306, 2), (307, 3), (459, 3), (460, 4)]
)
def test_gsm7_segments_at_the_160_and_153_boundaries(length: int, segments: int) -> None:
    result = analyse("a" * length)
    assert (result.encoding, result.units, result.segments) == ("GSM-7", length, segments)


def test_an_extension_character_can_push_gsm7_over_one_segment() -> None:
    assert analyse("a" * 158 + "€").segments == 1  # 160 septets
    assert analyse("a" * 159 + "€").segments == 2  # 161 septets


@pytest.mark.parametrize(
    ("length", "segments"), [(1, 1), (70, 1), (71, 2), (134, 2), (135, 3), (201, 3), (202, 4)]
)
def test_ucs2_segments_at_the_70_and_67_boundaries(length: int, segments: int) -> None:
    result = analyse("á" * length)
    assert (result.encoding, result.units, result.segments) == ("UCS-2", length, segments)


def test_one_accented_letter_turns_a_160_character_message_into_three_ucs2_segments() -> None:
    result = analyse("a" * 159 + "á")
    assert (result.encoding, result.segments) == ("UCS-2", 3)


def test_empty_text_has_no_segments() -> None:
    result = analyse("")
    assert (result.encoding, result.units, result.segments) == ("GSM-7", 0, 0)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("It\u2019s \u2018fine\u2019", "It's 'fine'"),
        ("\u201cquoted\u201d", '"quoted"'),
        ("9\u201310 \u2014 later", "9-10 - later"),
        ("wait\u2026", "wait..."),
        ("\u2022 item", "- item"),
        ("9:30\u202fAM", "9:30 AM"),
        ("020\u00a07946\u20090123", "020 7946 0123"),
        ("38\u00b0C or 100.4\u00b0F", "38C or 100.4F"),
        ("38\u00b0 C", "38C"),
        ("soft\u00adhyphen\u200b", "softhyphen"),
    ],
)
def test_normalise_replaces_typography_with_gsm7_equivalents(raw: str, expected: str) -> None:
    normalised = normalise_for_sms(raw)
    assert normalised == expected
    assert analyse(normalised).encoding == "GSM-7"


def test_normalise_leaves_letters_alone() -> None:
    spanish = "Su próxima cita es el miércoles a las 9:30. ¿Preguntas? Llame."
    assert normalise_for_sms(spanish) == spanish
    assert analyse(normalise_for_sms(spanish)).encoding == "UCS-2"


def test_normalise_keeps_a_lone_degree_sign_for_analyse_to_report() -> None:
    assert analyse(normalise_for_sms("turn 90°")).characters_outside_gsm == ("°",)
