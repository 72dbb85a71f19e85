"""HL7 v2 acknowledgements (ACK) for received messages: MSA-1 AA, AE or AR with MSA-2 the
message's control id, and an ERR segment carrying the reason when it is not AA.

Built from the received MSH by position (its field separator and encoding characters), so even
a message too broken to map still gets an answer its sender can match. `build_ack` never raises:
whatever the bytes, the sender gets an ACK. When the MSH does not declare usable separators
(none, too few, repeated, or line breaks), the standard ones are used and every value echoed from
the message is cleaned of them, so the ACK is always well-formed."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from uuid import uuid4

DEFAULT_SEPARATORS = ("|", "^~\\&")
# Characters that must never reach an ACK's values: line breaks end a segment, and the MLLP
# framing bytes (0x0B, 0x1C) would end the frame the ACK travels in.
_UNSAFE = re.compile(r"[\x00-\x1f\x7f]")
_MAX_ECHO = 200  # characters of any one value echoed back (ids and names are far shorter)


def build_ack(message: bytes, code: str, text: str = "", now: datetime | None = None) -> bytes:
    """The ACK for `message` (one HL7 message, segments joined by CR)."""
    msh = _msh_fields(message)
    usable = len(msh) > 1 and _usable(msh[0], msh[1])
    sep, encoding = (msh[0], msh[1][:4]) if usable else DEFAULT_SEPARATORS
    # With the sender's own separators, a field's components are echoed as they came; with the
    # standard ones substituted, any of those characters in a value would split it wrongly.
    unsafe = "" if usable else sep + encoding

    def field(n: int) -> str:
        return _clean(msh[n], unsafe) if len(msh) > n else ""

    component = encoding[0]
    parts = field(8).split(component)
    trigger = parts[1] if len(parts) > 1 else ""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S+0000")
    header = [
        "MSH", encoding, field(4), field(5), field(2), field(3), stamp, "",
        f"ACK{component}{trigger}{component}ACK" if trigger else "ACK",
        uuid4().hex[:20], field(10) or "P", field(11) or "2.5",
    ]  # fmt: skip
    reason = _clean(text, sep + encoding)
    segments = [sep.join(header), sep.join(["MSA", code, field(9), reason])]
    if code != "AA" and reason:
        # ERR-4 severity E (error); ERR-8 the message for the sender's staff.
        segments.append(sep.join(["ERR", "", "", "", "E", "", "", "", reason]))
    return ("\r".join(segments) + "\r").encode("utf-8", "replace")


def _msh_fields(message: bytes) -> list[str]:
    """MSH's fields, numbered as HL7 does: [0] is MSH-1 (the separator), [1] MSH-2, ...; empty
    when there is no MSH with a separator after it."""
    start = message.find(b"MSH")
    if start < 0:
        return []
    line = message[start:].split(b"\r", 1)[0].split(b"\n", 1)[0].decode("utf-8", "replace")
    if len(line) < 4:
        return []
    sep = line[3]
    return [sep, *line.split(sep)[1:]]  # the first part is "MSH"; the next MSH-2


def _usable(sep: str, encoding: str) -> bool:
    """A separator and at least four encoding characters, distinct, and printable ASCII other
    than letters and digits: a byte outside ASCII (a Latin-1 section sign read as UTF-8, say)
    would come back as other bytes than the sender used, and its ACK would be unreadable."""
    chars = sep + encoding[:4]
    punctuation = all(c.isascii() and c.isprintable() and not c.isalnum() and c != " "
                      for c in chars)  # fmt: skip
    return len(encoding) >= 4 and len(set(chars)) == 5 and punctuation


def _clean(text: str, unsafe: str) -> str:
    """`text` without the `unsafe` characters, line breaks or other control characters."""
    for char in unsafe:
        text = text.replace(char, " ")
    return _UNSAFE.sub(" ", text)[:_MAX_ECHO]
