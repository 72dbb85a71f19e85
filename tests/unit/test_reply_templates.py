"""Every answer to a patient's text renders in English and Spanish for each clinic, names the
clinic, and fits one GSM-7 segment with a 30-character clinic name (the longest clinics.yaml
allows); every staff alert renders its parts."""

from __future__ import annotations

from dataclasses import replace

import pytest

from reminder_service.configuration.clinics import load_clinics
from reminder_service.domain.protocol import Channel
from reminder_service.rendering.renderer import Renderer
from reminder_service.rendering.sms_encoding import analyse
from reminder_service.services.replies import REPLY_TEMPLATES
from tests.factories import CONFIG_DIR, TEMPLATES_DIR

CLINICS = load_clinics(CONFIG_DIR / "clinics.yaml").by_id
ANSWERS = sorted(p.name.split(".")[0] for p in (TEMPLATES_DIR / "_replies" / "en").glob("*.j2"))


def test_spanish_has_every_answer_english_has() -> None:
    spanish = sorted(p.name.split(".")[0] for p in (TEMPLATES_DIR / "_replies" / "es").glob("*.j2"))
    assert spanish == ANSWERS and "acknowledged" in ANSWERS


@pytest.mark.parametrize("clinic_id", sorted(CLINICS))
@pytest.mark.parametrize("language", ["en", "es"])
@pytest.mark.parametrize("answer", ANSWERS)
def test_each_answer_fits_one_gsm7_segment(clinic_id: str, language: str, answer: str) -> None:
    clinic = replace(CLINICS[clinic_id], name="X" * 30)
    context = {"clinic": {"name": clinic.name, "phone": clinic.phone,
                          "out_of_hours_phone": clinic.out_of_hours_phone,
                          "emergency_number": clinic.emergency_number}}  # fmt: skip
    message = Renderer(TEMPLATES_DIR).render(
        REPLY_TEMPLATES, answer, Channel.SMS, language, clinic.default_language, context
    )
    assert message.language == language and message.sms is not None
    assert message.sms.startswith("X" * 30 + ":")
    found = analyse(message.sms)
    assert (found.encoding, found.segments) == ("GSM-7", 1), message.sms


@pytest.mark.parametrize("template", ["staff_alert", "new_time_request", "unconfirmed"])
def test_each_staff_alert_renders(template: str) -> None:
    context = {"clinic_name": "Riverside Haematology", "appointment_id": "A1",
               "appointment_time": "Thu 10 Dec 2026 09:30 GMT", "patient": "T. P.",
               "step": "reply", "reason": "why", "lines": ["A1: one", "A2: <two>"]}  # fmt: skip
    message = Renderer(TEMPLATES_DIR).render(
        "_staff", template, Channel.EMAIL, "en-GB", "en-GB", context
    )
    assert message.subject and message.subject.startswith("Riverside Haematology: ")
    assert message.text and message.html and "A1" in message.text
    if template == "unconfirmed":
        assert "- A2: <two>" in message.text and "A2: &lt;two&gt;" in message.html
        assert message.subject.endswith("2 appointments not confirmed, please phone")
