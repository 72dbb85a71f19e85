"""`import` as a real process refuses an empty, BOM-only or header-only CSV (and an HL7 file
with no message) whole: exit code 2, the reason on stderr, no import recorded."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, select

from reminder_service.importers.csv_mapping import LAYOUT_FIELDS
from reminder_service.store.tables import imports
from tests.e2e.test_cli import cli, env  # noqa: F401 (env is a fixture)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(
    ("name", "data", "said"),
    [
        ("empty.csv", b"", "the file is empty"),
        ("bom.csv", b"\xef\xbb\xbf", "the file is empty"),
        ("header.csv", (",".join(LAYOUT_FIELDS) + "\r\n").encode(), "no appointment rows"),
        ("nothing.hl7", b"\r\n", "no HL7 message"),
    ],
)
def test_a_file_without_appointments_is_refused_whole(
    env: dict[str, str],  # noqa: F811
    tmp_path: Path,
    name: str,
    data: bytes,
    said: str,
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    result = cli(env, "import", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    stderr = " ".join(result.stderr.split())  # the console wraps long lines
    assert "rejected, nothing imported" in stderr and said in stderr
    engine = create_engine(env["REMINDER_DATABASE_URL"])
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(imports)).scalar_one() == 0
    engine.dispose()
