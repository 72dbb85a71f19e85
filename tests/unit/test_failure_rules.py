"""The failure table decides retry or not; the shipped table says what the issue requires."""

from __future__ import annotations

from pathlib import Path

import pytest

from reminder_service.configuration.delivery_failures import load_failure_table
from reminder_service.configuration.problems import ConfigError
from reminder_service.domain.failures import Failure, FailureKind
from tests.factories import CONFIG_DIR

TABLE = load_failure_table(CONFIG_DIR / "delivery_failures.yaml")


def twilio(status: int, code: str | None = None) -> Failure:
    return Failure("twilio", FailureKind.HTTP, status=status, code=code)


@pytest.mark.parametrize(
    ("failure", "permanent", "opt_out"),
    [
        (twilio(400, "21211"), True, False),  # invalid number
        (twilio(400, "21614"), True, False),  # not a mobile
        (twilio(400, "21610"), True, True),  # unsubscribed recipient
        (twilio(400, "21999"), True, False),  # another request error: retrying cannot fix it
        (twilio(429, "20429"), False, False),
        (twilio(429), False, False),
        (twilio(500), False, False),
        (twilio(503), False, False),
        (twilio(401, "20003"), False, False),  # our credentials: keep the message for the fix
        (Failure("twilio", FailureKind.TIMEOUT), False, False),
        (Failure("twilio", FailureKind.CONNECTION), False, False),
        (Failure("smtp", FailureKind.SMTP, status=550), True, False),  # a bounce
        (Failure("smtp", FailureKind.SMTP, status=451), False, False),
        (Failure("smtp", FailureKind.TIMEOUT), False, False),
    ],
)
def test_the_shipped_table(failure: Failure, permanent: bool, opt_out: bool) -> None:
    verdict = TABLE.classify(failure)
    assert (verdict.permanent, verdict.opt_out) == (permanent, opt_out)
    assert verdict.meaning


def test_a_failure_no_rule_matches_takes_the_default(tmp_path: Path) -> None:
    path = tmp_path / "failures.yaml"
    path.write_text(
        "rules:\n  - {provider: twilio, status: 500, class: temporary}\ndefault: permanent\n"
    )
    table = load_failure_table(path)
    assert table.classify(twilio(500)).permanent is False
    verdict = table.classify(Failure("smtp", FailureKind.SMTP, status=421))
    assert verdict.permanent is True and "not in the failure table" in verdict.meaning


def test_a_bad_table_names_the_rule_and_field(tmp_path: Path) -> None:
    path = tmp_path / "failures.yaml"
    path.write_text(
        "rules:\n"
        "  - {provider: twilio, status: 6xx, class: permanent}\n"
        "  - {kind: slow, class: maybe, colour: red}\n"
        "default: temporary\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_failure_table(path)
    text = str(caught.value)
    assert f"{path}: rule 1: field 'status'" in text
    assert "rule 2: field 'colour': unknown field" in text
