"""The file outbox: each SMS as sms/<reminder id>.json, each email as email/<reminder id>.eml.

Files appear atomically (written aside, fsynced, renamed). A reminder that is sent again after a
crash finds its file already there and is not written twice, so each reminder lands exactly once.
A crash mid-write can leave a hidden `.<name>.*.tmp` file, never a message; readers ignore
dot-files, and the outbox sweeps old ones when it starts.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

from .base import OutgoingEmail, OutgoingSms, Receipt
from .email_mime import render_mime

# No write takes this long; a younger temp file may belong to another live dispatcher.
STALE_TEMP_AGE = 600.0


class OutboxChannel:
    def __init__(self, root: Path, from_address: str = "reminders@localhost") -> None:
        self._root = root
        self._from = from_address
        sweep_stale_temp_files(root)

    async def send_sms(self, message: OutgoingSms) -> Receipt:
        path = self._root / "sms" / f"{message.reminder_id}.json"
        document = {
            "to": message.to,
            "body": message.body,
            "reminder_id": message.reminder_id,
            "appointment_id": message.appointment_id,
            "step": message.step,
            "sent_at": message.sent_at.isoformat(),
        }
        data = (json.dumps(document, ensure_ascii=False, indent=2) + "\n").encode()
        await asyncio.to_thread(_write_once, path, data)  # fsync must not stall other sends
        return Receipt(provider_id=f"outbox:sms/{path.name}")

    async def send_email(self, message: OutgoingEmail) -> Receipt:
        path = self._root / "email" / f"{message.reminder_id}.eml"
        data = render_mime(message, self._from)
        await asyncio.to_thread(_write_once, path, data)
        return Receipt(provider_id=f"outbox:email/{path.name}")

    async def aclose(self) -> None:
        """Nothing is held open between sends."""


def _write_once(path: Path, data: bytes) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


def sweep_stale_temp_files(root: Path, older_than: float = STALE_TEMP_AGE) -> int:
    """Remove temp files that a crashed writer left behind; returns how many."""
    removed = 0
    cutoff = time.time() - older_than
    for path in root.glob("*/.*.tmp"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except FileNotFoundError:
            continue  # another process swept or renamed it first
    return removed
