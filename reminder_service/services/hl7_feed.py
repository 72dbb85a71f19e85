"""An HL7 v2 SIU feed as the command line and the MLLP listener take it: which files are HL7,
which clinic the feed is for, which messages count as rejected, and the one ACK a frame gets.

The messages themselves are applied by hl7_import.apply_siu.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ..importers import hl7_ack
from ..importers.base import ImportDefaults
from ..importers.hl7v2_siu import SiuMapping
from .hl7_import import SiuResult, apply_siu
from .importing import ImportService

ACCEPTED = "AA"
# From best to worst: applied; understood but not applied; unreadable.
ACK_RANK = (ACCEPTED, "AE", "AR")
HL7_SUFFIXES = frozenset({".hl7", ".er7"})
# What an HL7 batch file starts with, after any MLLP start byte, byte-order mark or blank lines.
HL7_STARTS = (b"MSH", b"FHS", b"BHS")


@dataclass(frozen=True)
class SiuFeed:
    """How a feed's messages are read: its mapping, its clinic's defaults (None: the mapping's
    facility map decides for each message) and every clinic's, for that map."""

    mapping: SiuMapping | None
    defaults: ImportDefaults | None
    clinics: Mapping[str, ImportDefaults]


def is_hl7(file: Path) -> bool:
    """An HL7 v2 file by its name, else by its first bytes (a CSV never starts so)."""
    if file.suffix.lower() in HL7_SUFFIXES:
        return True
    with file.open("rb") as handle:
        head = handle.read(8).lstrip(b"\x0b\xef\xbb\xbf \r\n")
    return head.startswith(HL7_STARTS)


def rejected(results: Iterable[SiuResult]) -> list[SiuResult]:
    """The messages not accepted as they were (AE or AR)."""
    return [result for result in results if result.ack != ACCEPTED]


def worst_ack(results: Iterable[SiuResult]) -> tuple[str, str]:
    """The acknowledgement for a frame of several messages: the worst of theirs (the first such),
    with its reason; AR when the frame held no message."""
    worst = max(results, key=lambda r: ACK_RANK.index(r.ack), default=None)
    return (worst.ack, worst.text) if worst else ("AR", "no HL7 message in the frame")


def build_ack(message: bytes, code: str, text: str = "", now: datetime | None = None) -> bytes:
    """The ACK for `message` (importers/hl7_ack.py), for the listeners that write it."""
    return hl7_ack.build_ack(message, code, text, now)


def acknowledge(importer: ImportService, feed: SiuFeed, frame: bytes) -> tuple[str, str]:
    """Apply one MLLP frame; its ACK code and reason."""
    results, _ = apply_siu(
        importer,
        frame,
        feed.defaults,
        mapping=feed.mapping,
        label="mllp",
        clinics=feed.clinics,
    )
    return worst_ack(results)
