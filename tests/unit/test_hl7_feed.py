"""The HL7 feed's rules: which files are HL7, which messages count as rejected, and the one ACK a
frame of several messages gets."""

from __future__ import annotations

from pathlib import Path

import pytest

from reminder_service.importers.hl7v2_siu import SiuChange
from reminder_service.services.hl7_feed import is_hl7, rejected, worst_ack
from reminder_service.services.hl7_import import SiuResult


def result(index: int, ack: str, text: str = "") -> SiuResult:
    change = SiuChange(index, "S12", None, f"C{index}", None, None)
    return SiuResult(change, ack, text)


def test_the_worst_ack_of_a_frame_wins_and_the_first_of_equals_gives_its_reason() -> None:
    results = [result(1, "AA"), result(2, "AE", "PID-3: missing"), result(3, "AE", "later")]
    assert worst_ack(results) == ("AE", "PID-3: missing")
    assert worst_ack([*results, result(4, "AR", "unreadable")]) == ("AR", "unreadable")
    assert worst_ack([result(1, "AA", "warning: in the past")]) == ("AA", "warning: in the past")


def test_a_frame_with_no_message_is_refused() -> None:
    assert worst_ack([]) == ("AR", "no HL7 message in the frame")


def test_every_message_not_accepted_counts_as_rejected() -> None:
    results = [result(1, "AA"), result(2, "AE"), result(3, "AR")]
    assert [r.change.index for r in rejected(results)] == [2, 3]


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("feed.hl7", b"anything", True),
        ("FEED.ER7", b"", True),
        ("export.csv", b"MSH|^~\\&|PAS", True),
        ("export.txt", b"\xef\xbb\xbfFHS|^~\\&", True),
        ("export.csv", b"appointment_id,patient_id", False),
    ],
)
def test_an_hl7_file_is_known_by_its_name_or_first_bytes(
    tmp_path: Path, name: str, content: bytes, expected: bool
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    assert is_hl7(path) is expected
