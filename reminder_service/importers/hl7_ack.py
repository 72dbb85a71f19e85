"""HL7 v2 acknowledgements (ACK) for received messages: MSA-1 AA, AE or AR with MSA-2 the
message's control id, and an ERR segment carrying the reason when it is not AA.

Built from the received MSH by position (its field separator and encoding characters), so even
a message too broken to map still gets an answer its sender can match."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from uuid import uuid4

DEFAULT_SEPARATORS = ("|", "^~\\&")
_UNSAFE = re.compile(r"[\r\n]")


def build_ack(message: bytes, code: str, text: str = "", now: datetime | None = None) -> bytes:
    """The ACK for `message` (one HL7 message, segments joined by CR)."""
    msh = _msh_fields(message) or []
    sep, encoding = (msh[0], msh[1]) if len(msh) > 1 else DEFAULT_SEPARATORS

    def field(n: int) -> str:
        return msh[n] if len(msh) > n else ""

    component = encoding[0]
    trigger = field(8).split(component)[1] if component in field(8) else ""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S+0000")
    header = [
        "MSH", encoding, field(4), field(5), field(2), field(3), stamp, "",
        f"ACK{component}{trigger}{component}ACK" if trigger else "ACK",
        uuid4().hex[:20], field(10) or "P", field(11) or "2.5",
    ]  # fmt: skip
    reason = _clean(text, sep, encoding)
    segments = [sep.join(header), sep.join(["MSA", code, field(9), reason])]
    if code != "AA" and reason:
        # ERR-4 severity E (error); ERR-8 the message for the sender's staff.
        segments.append(sep.join(["ERR", "", "", "", "E", "", "", "", reason]))
    return ("\r".join(segments) + "\r").encode("utf-8")


def _msh_fields(message: bytes) -> list[str] | None:
    """MSH's fields, numbered as HL7 does: [0] is MSH-1 (the separator), [1] MSH-2, ..."""
    start = message.find(b"MSH")
    if start < 0 or len(message) < start + 8:
        return None
    line = message[start:].split(b"\r", 1)[0].split(b"\n", 1)[0].decode("utf-8", "replace")
    sep = line[3]
    parts = line.split(sep)
    return [sep, *parts[1:]]  # parts[0] is "MSH"; parts[1] MSH-2


def _clean(text: str, sep: str, encoding: str) -> str:
    """Text safe inside one field: no separators, no line breaks."""
    for char in sep + encoding:
        text = text.replace(char, " ")
    return _UNSAFE.sub(" ", text)[:200]
