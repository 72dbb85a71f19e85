"""Rendering: the sandbox, strictness and escaping, language fallback, the context, and the shipped
bone marrow biopsy templates against the clinical content of docs/SOURCES.md and the SMS rules."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import replace
from datetime import UTC, datetime
from itertools import product
from pathlib import Path
from typing import Any

import pytest

from reminder_service.configuration.clinics import load_clinics
from reminder_service.configuration.protocols import load_protocols
from reminder_service.domain.appointment import Appointment, AppointmentStatus, Patient, Tristate
from reminder_service.domain.clinic import Clinic, MealAdvice
from reminder_service.domain.protocol import Channel, Protocol
from reminder_service.rendering.layout import missing_parts
from reminder_service.rendering.renderer import (
    RenderedMessage,
    Renderer,
    RenderError,
    message_context,
    sample_context,
)
from reminder_service.rendering.sms_encoding import analyse
from tests.factories import appointment, patient

ROOT = Path(__file__).parents[2]
TEMPLATES = ROOT / "templates"
PROTOCOL = "bone_marrow_biopsy"
PROCEDURE_WORDS = ("biopsy", "bone marrow", "marrow")
TRISTATES = ("yes", "no", "unknown")

UK = load_clinics(ROOT / "config" / "clinics.yaml").default
US = replace(
    UK,
    id="lakeside",
    name="Lakeside Hematology",
    timezone="America/Chicago",
    phone="(312) 555-0123",
    out_of_hours_phone="(312) 555-0199",
    phone_region="US",
    default_language="en-US",
    emergency_number="911",
    fever_threshold="100.4F",
    painkiller="acetaminophen",
    local_only_driving_advice="You can usually drive home if you only had numbing medicine.",
    address="Lakeside Medical Center, 200 Lake Street, Chicago, IL 60601",
)
# A patient's language need not match the clinic's: en-US at a UK clinic gets 12-hour times.
CLINIC_LANGUAGES = [(UK, "en-GB"), (UK, "en-US"), (US, "en-US")]


# English SMS are one GSM-7 segment, but the booking text, which tells the reply codes: two.
SEGMENTS = {"booked": 2}


def _protocol() -> Protocol:
    def missing(protocol_id: str, template: str, channel: Channel) -> list[str]:
        return missing_parts(TEMPLATES, protocol_id, template, channel)

    (protocol,) = [
        p for p in load_protocols(ROOT / "config" / "protocols", missing) if p.id == PROTOCOL
    ]
    return protocol


STEPS = _protocol().steps
SMS_TEMPLATES = [s.template for s in STEPS if any(r.channel is Channel.SMS for r in s.channels)]
ALL_TEMPLATES = [s.template for s in STEPS]


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TEMPLATES)


def section(context: Mapping[str, object], key: str) -> dict[str, Any]:
    """One of the context's nested mappings (patient, clinic, appointment)."""
    value = context[key]
    assert isinstance(value, dict)
    return value


def variants(clinic: Clinic, language: str) -> Iterator[dict[str, Any]]:
    """sample_context with every combination of the flags and of rescheduled."""
    for sedation, anticoagulant, chemo, diabetes, moved in product(
        TRISTATES, TRISTATES, TRISTATES, TRISTATES, (False, True)
    ):
        context = sample_context(clinic, language)
        section(context, "appointment").update(
            sedation=sedation,
            anticoagulant=anticoagulant,
            on_chemotherapy=chemo,
            diabetes_on_medication=diabetes,
            rescheduled=moved,
        )
        yield context


def with_flags(clinic: Clinic = UK, language: str = "en-GB", **flags: object) -> dict[str, Any]:
    context = sample_context(clinic, language)
    section(context, "appointment").update(flags)
    return context


def sms(renderer: Renderer, template: str, context: dict[str, Any]) -> str:
    message = renderer.render(PROTOCOL, template, Channel.SMS, "en-GB", "en", context)
    assert message.sms is not None
    return message.sms


def email(renderer: Renderer, template: str, context: dict[str, Any]) -> RenderedMessage:
    return renderer.render(PROTOCOL, template, Channel.EMAIL, "en-GB", "en", context)


def write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


# --- the shipped SMS templates ---------------------------------------------------------------


def test_the_protocol_has_the_sms_steps_of_clinical_md() -> None:
    assert SMS_TEMPLATES == [
        "booked",
        "medicines",
        "escort",
        "day_before",
        "after_care",
        "next_day",
    ]


@pytest.mark.parametrize("template", SMS_TEMPLATES)
def test_sms_template_source_is_gsm7(template: str) -> None:
    source = (TEMPLATES / PROTOCOL / "en" / f"{template}.sms.j2").read_text(encoding="utf-8")
    assert analyse(source).characters_outside_gsm == ()


@pytest.mark.parametrize(
    ("clinic", "language"), CLINIC_LANGUAGES, ids=lambda v: getattr(v, "id", v)
)
@pytest.mark.parametrize("template", SMS_TEMPLATES)
def test_every_sms_fits_its_gsm7_segments_with_the_longest_values(
    renderer: Renderer, template: str, clinic: Clinic, language: str
) -> None:
    for context in variants(clinic, language):
        text = sms(renderer, template, context)
        result = analyse(text)
        assert (result.encoding, result.segments) == ("GSM-7", SEGMENTS.get(template, 1)), (
            result,
            text,
        )


@pytest.mark.parametrize(
    ("clinic", "language"), CLINIC_LANGUAGES, ids=lambda v: getattr(v, "id", v)
)
@pytest.mark.parametrize("template", SMS_TEMPLATES)
def test_every_sms_names_the_clinic_and_its_phone_and_never_the_procedure(
    renderer: Renderer, template: str, clinic: Clinic, language: str
) -> None:
    for context in variants(clinic, language):
        text = sms(renderer, template, context)
        lowered = text.lower()
        assert text.startswith(f"{clinic.name}: ")
        # The one exception: a fever when the patient may be on chemotherapy goes to the 24 h line.
        fever_line = (
            template == "next_day" and section(context, "appointment")["on_chemotherapy"] != "no"
        )
        assert (clinic.out_of_hours_phone if fever_line else clinic.phone) in text, text
        assert not any(word in lowered for word in PROCEDURE_WORDS), text
        assert "chemotherapy" not in lowered
        assert "cancel" not in lowered  # CANCEL is an opt-out keyword


def test_booked_sms_confirms_or_says_it_moved_and_tells_the_reply_codes(renderer: Renderer) -> None:
    booked = sms(renderer, "booked", with_flags(rescheduled=False))
    moved = sms(renderer, "booked", with_flags(rescheduled=True))
    for text in (booked, moved):
        assert "Reply 1 to confirm, 2 to change, or call " in text
        assert text.endswith("STOP to opt out")
        assert "Wednesday 27 September at 12:30" in text
        assert "Day Unit 4B, Level 2, Riverside Hospital" in text
    assert "booked" in booked and "moved" not in booked
    assert "moved to Wednesday 27 September" in moved


@pytest.mark.parametrize("template", [t for t in SMS_TEMPLATES if t != "booked"])
def test_only_the_booked_sms_carries_the_opt_out_line(renderer: Renderer, template: str) -> None:
    assert "Reply STOP" not in sms(renderer, template, sample_context(UK, "en-GB"))


# --- clinical content ------------------------------------------------------------------------


def test_no_subject_names_the_procedure(renderer: Renderer) -> None:
    for template, context in product(ALL_TEMPLATES, variants(UK, "en-GB")):
        subject = email(renderer, template, context).subject
        assert subject and "\n" not in subject
        assert not any(word in subject.lower() for word in PROCEDURE_WORDS), subject


@pytest.mark.parametrize("template", ALL_TEMPLATES)
def test_no_message_says_gently_big_meal_or_reply_cancel(renderer: Renderer, template: str) -> None:
    channels = [Channel.EMAIL] + ([Channel.SMS] if template in SMS_TEMPLATES else [])
    for channel, context in product(channels, variants(US, "en-US")):
        message = renderer.render(PROTOCOL, template, channel, "en-US", "en", context)
        everything = " ".join(
            filter(None, [message.sms, message.subject, message.text, message.html])
        )
        lowered = everything.lower()
        assert "gently" not in lowered
        assert "big meal" not in lowered
        assert "reply cancel" not in lowered
        assert "\u00b0" not in everything  # "38C", never a degree sign


def test_blood_thinner_messages_never_state_hold_days(renderer: Renderer) -> None:
    hold = re.compile(r"\b\d+\s+days?\s+before|stop taking", re.IGNORECASE)
    for template, context in product(["medicines", "booked", "day_before"], variants(UK, "en-GB")):
        message = email(renderer, template, context)
        assert message.text and not hold.search(message.text), message.text
    medicines_sms = sms(renderer, "medicines", sample_context(UK, "en-GB"))
    assert not hold.search(medicines_sms)
    assert "follow the plan your care team gave you" in medicines_sms
    assert f"No plan yet? Call {UK.phone} today." in medicines_sms


def test_medicines_email_names_example_drugs_and_asks_about_supplements(renderer: Renderer) -> None:
    text = email(renderer, "medicines", sample_context(UK, "en-GB")).text or ""
    for drug in ("warfarin", "apixaban", "rivaroxaban", "edoxaban", "dabigatran", "clopidogrel"):
        assert drug in text
    assert "aspirin" in text and "heparin injections" in text
    assert "painkillers" in text and "supplements" in text
    assert f"No plan yet? Call {UK.phone} today." in text


def test_day_before_without_sedation_says_eat_normally_and_no_fasting(renderer: Renderer) -> None:
    clinic = replace(UK, fasting_hours=7)
    context = with_flags(clinic, sedation="no")
    text_sms = sms(renderer, "day_before", context)
    body = email(renderer, "day_before", context).text or ""
    for text in (text_sms, body):
        assert "eat and drink normally" in text.lower()
        assert "7 hours" not in text
        assert "no food" not in text.lower() and "do not eat" not in text.lower()
    assert clinic.local_only_driving_advice in body
    assert "adult must take you home" not in body


def test_day_before_with_sedation_says_fast_and_bring_an_adult(renderer: Renderer) -> None:
    context = with_flags(replace(UK, fasting_hours=7), sedation="yes")
    text_sms = sms(renderer, "day_before", context)
    body = email(renderer, "day_before", context).text or ""
    for text in (text_sms, body):
        assert "7 hours" in text
        assert "adult must take you home" in text.lower()
        assert "eat and drink normally" not in text.lower()
    assert "do not drive" in body and "alcohol" in body and "legal decisions" in body


def test_day_before_with_unknown_sedation_is_conditional(renderer: Renderer) -> None:
    context = with_flags(replace(UK, fasting_hours=7), sedation="unknown")
    text_sms = sms(renderer, "day_before", context)
    body = email(renderer, "day_before", context).text or ""
    assert "If you have sedation: no food for 7 hours" in text_sms
    assert f"Not sure? Call {UK.phone}" in text_sms
    assert "If you are having sedation: do not eat anything for 7 hours" in body
    assert "If you are not having sedation: you can eat and drink normally" in body
    assert f"If you are not sure whether you are having sedation, call {UK.phone}" in body


def test_escort_sms_tells_sedated_patients_about_the_adult_and_fasting(renderer: Renderer) -> None:
    text = sms(renderer, "escort", with_flags(sedation="yes"))
    assert "an adult must take you home and stay with you for 24 hours" in text
    assert f"No food for {UK.fasting_hours} hours" in text


def test_booked_email_is_the_full_preparation_sheet(renderer: Renderer) -> None:
    message = email(renderer, "booked", with_flags(US, "en-US", sedation="yes"))
    text = message.text or ""
    for expected in (
        "Wednesday, September 27",  # en-US: CLDR's "EEEE, MMMM d"
        "12:30 PM",
        "Day Unit 4B, Level 2, Riverside Hospital",
        f"To change your appointment, call {US.phone}",
        "follow the plan your care team gave you",
        f"Do not eat anything for {US.fasting_hours} hours",
        "An adult must take you home and stay with you for 24 hours",
        "list of all the medicines",
        "loose, comfortable clothes and flat shoes",
        "Have some acetaminophen at home",
    ):
        assert expected in text, expected
    assert message.subject == "Your appointment on Wednesday, September 27"


def test_booked_email_says_when_the_appointment_moved(renderer: Renderer) -> None:
    message = email(renderer, "booked", with_flags(rescheduled=True))
    assert message.subject == "Your appointment has moved to Wednesday 27 September"
    assert "has moved" in (message.text or "")


@pytest.mark.parametrize("clinic", [UK, US], ids=lambda c: c.id)
def test_after_care_says_press_firmly_and_gives_the_warning_signs(
    renderer: Renderer, clinic: Clinic
) -> None:
    context = with_flags(clinic, "en-US", on_chemotherapy="no", anticoagulant="yes")
    text_sms = sms(renderer, "after_care", context)
    assert "press firmly" in text_sms and "gently" not in text_sms
    assert clinic.emergency_number in text_sms
    body = email(renderer, "after_care", context).text or ""
    for expected in (
        "Keep the dressing on and dry for 24 hours",
        "press firmly",
        f"a temperature of {clinic.fever_threshold} or more",
        "bleeding that soaks the dressing",
        "pain that is getting worse",
        "redness, swelling, warmth",
        f"for {clinic.no_bath_days} days",
        f"take {clinic.painkiller} as it says on the pack",
        "aspirin or ibuprofen-type painkillers",
        "start them again",
        "heavy",
        f"call {clinic.emergency_number}",
    ):
        assert expected in body, expected
    assert "gently" not in body
    assert "chemotherapy" not in body


def test_chemotherapy_fever_goes_to_the_24_hour_line(renderer: Renderer) -> None:
    on = email(renderer, "after_care", with_flags(on_chemotherapy="yes")).text or ""
    unknown = email(renderer, "after_care", with_flags(on_chemotherapy="unknown")).text or ""
    assert "Because you are having chemotherapy, a temperature of 38C or more is an emergency" in on
    assert "If you are having chemotherapy, a temperature of 38C or more" in unknown
    for text in (on, unknown):
        assert f"24-hour line on {UK.out_of_hours_phone} straight away" in text
    on_sms = sms(renderer, "next_day", with_flags(on_chemotherapy="yes"))
    off_sms = sms(renderer, "next_day", with_flags(on_chemotherapy="no"))
    assert f"Call {UK.out_of_hours_phone} now" in on_sms
    assert f"Temperature 38C or more? Call {UK.phone}" in off_sms


def test_next_day_sms_covers_dressing_bathing_and_fever(renderer: Renderer) -> None:
    text = sms(renderer, "next_day", with_flags(US, "en-US", on_chemotherapy="no"))
    assert "dressing off and shower" in text
    assert f"No bath or swimming for {US.no_bath_days} days" in text
    assert "Temperature 100.4F or more?" in text


def test_results_are_never_sent_only_the_timeline(renderer: Renderer) -> None:
    body = email(renderer, "check_in", sample_context(UK, "en-GB")).text or ""
    assert "We never send results by text or email." in body
    assert f"usually take about {UK.results_typical_days} days" in body
    # 27 September + 28 days
    assert f"If you have not heard by Wednesday 25 October, call {UK.phone}" in body


@pytest.mark.parametrize("template", ALL_TEMPLATES)
def test_html_emails_use_the_layout_and_its_footer(renderer: Renderer, template: str) -> None:
    message = email(renderer, template, sample_context(UK, "en-GB"))
    footer = (
        f"You are getting this because you have an appointment with {UK.name}. "
        f"To stop these emails call {UK.phone}."
    )
    assert message.html and message.html.startswith("<!DOCTYPE html>")
    assert footer in message.html and footer in (message.text or "")
    assert "Reply STOP" not in message.html
    assert "http" not in message.html  # no external resources


# --- the engine: escaping, strictness, sandbox, fallback -------------------------------------


def test_html_escapes_patient_data_and_text_keeps_it_raw(renderer: Renderer) -> None:
    context = with_flags()
    section(context, "patient")["first_name"] = "<script>alert(1)</script>"
    message = email(renderer, "booked", context)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in (message.html or "")
    assert "<script>" not in (message.html or "")
    assert "Hello <script>alert(1)</script>," in (message.text or "")


def test_macro_text_is_escaped_once_in_html(renderer: Renderer) -> None:
    context = with_flags()
    section(context, "clinic")["phone"] = "0800 <b>&"
    html = email(renderer, "booked", context).html or ""
    assert "0800 &lt;b&gt;&amp;" in html
    assert "&amp;lt;" not in html


def test_language_falls_back_from_en_gb_to_en(renderer: Renderer) -> None:
    message = renderer.render(PROTOCOL, "booked", Channel.SMS, "en-GB", "en-GB", with_flags())
    assert message.language == "en"


def test_unknown_language_falls_back_to_the_clinic_then_english(renderer: Renderer) -> None:
    message = renderer.render(PROTOCOL, "booked", Channel.EMAIL, "fr-CA", "en-GB", with_flags())
    assert message.language == "en"


def test_a_language_is_used_only_when_all_its_parts_exist(tmp_path: Path) -> None:
    for language in ("en", "es"):
        for part in ("subject", "email.txt", "email.html"):
            write(tmp_path, f"p/{language}/t.{part}.j2", f"{language} {part}")
    write(tmp_path, "p/es/t.sms.j2", "es sms")
    (tmp_path / "p/es/t.email.html.j2").unlink()  # incomplete Spanish email: use English
    renderer = Renderer(tmp_path)
    email_message = renderer.render("p", "t", Channel.EMAIL, "es-US", "en", {})
    sms_message = renderer.render("p", "t", Channel.SMS, "es-US", "en", {})
    assert (email_message.language, email_message.subject) == ("en", "en subject")
    assert (sms_message.language, sms_message.sms) == ("es", "es sms")


def test_missing_template_in_every_language_raises(tmp_path: Path) -> None:
    with pytest.raises(RenderError, match=r"p/<language>/t\.sms\.j2.*en-GB, en"):
        Renderer(tmp_path).render("p", "t", Channel.SMS, "en-GB", "en", {})


def test_undefined_variable_raises_naming_the_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "p/en/t.sms.j2", "Hello\n{{ patient.first_nme }}")
    with pytest.raises(RenderError) as caught:
        Renderer(tmp_path).render("p", "t", Channel.SMS, "en", "en", {"patient": {}})
    assert "p/en/t.sms.j2, line 2" in str(caught.value)
    assert "first_nme" in str(caught.value)


def test_undefined_variable_in_a_macro_names_the_macro_file(tmp_path: Path) -> None:
    write(tmp_path, "_macros/m.j2", "{% macro oops() %}\n\n{{ missing }}{% endmacro %}")
    write(tmp_path, "p/en/t.sms.j2", '{% import "_macros/m.j2" as m %}{{ m.oops() }}')
    with pytest.raises(RenderError, match=r"_macros/m\.j2, line 3.*missing"):
        Renderer(tmp_path).render("p", "t", Channel.SMS, "en", "en", {})


def test_syntax_error_raises_naming_the_file_and_line(tmp_path: Path) -> None:
    write(tmp_path, "p/en/t.sms.j2", "one\ntwo\n{% if %}")
    with pytest.raises(RenderError, match=r"p/en/t\.sms\.j2, line 3: TemplateSyntaxError"):
        Renderer(tmp_path).render("p", "t", Channel.SMS, "en", "en", {})


def test_expression_errors_are_render_errors(tmp_path: Path) -> None:
    write(tmp_path, "p/en/t.sms.j2", "{{ 1 / 0 }}")
    with pytest.raises(RenderError, match=r"p/en/t\.sms\.j2.*ZeroDivisionError"):
        Renderer(tmp_path).render("p", "t", Channel.SMS, "en", "en", {})


@pytest.mark.parametrize(
    "source",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__ }}",
        "{{ patient.__init__.__globals__ }}",
        "{{ lipsum.__globals__ }}",
        "{{ cycler.__init__.__globals__.os }}",
    ],
)
def test_sandbox_blocks_access_to_python_internals(tmp_path: Path, source: str) -> None:
    write(tmp_path, "p/en/t.sms.j2", source)
    with pytest.raises(RenderError, match=r"unsafe|SecurityError"):
        Renderer(tmp_path).render("p", "t", Channel.SMS, "en", "en", {"patient": {"a": 1}})


def test_sms_whitespace_is_collapsed_and_typography_normalised(tmp_path: Path) -> None:
    write(tmp_path, "p/en/t.sms.j2", "  It\u2019s\n\n  9\u201310\u202fAM \u2026\n")
    message = Renderer(tmp_path).render("p", "t", Channel.SMS, "en", "en", {})
    assert message.sms == "It's 9-10 AM ..."


def test_subject_is_one_stripped_line(tmp_path: Path) -> None:
    write(tmp_path, "p/en/t.subject.j2", "\n  Your\n   appointment  \n")
    write(tmp_path, "p/en/t.email.txt.j2", "text")
    write(tmp_path, "p/en/t.email.html.j2", "<p>{{ name }}</p>")
    message = Renderer(tmp_path).render("p", "t", Channel.EMAIL, "en", "en", {"name": "A&B"})
    assert message.subject == "Your appointment"
    assert message.html == "<p>A&amp;B</p>"
    assert message.text is not None and message.text.strip() == "text"


# --- the context -----------------------------------------------------------------------------


def make_appointment(start: datetime, timezone: str = "Europe/London") -> Appointment:
    patient = Patient("P1", "Ana", "Lopez", "+447700900123", None, "en-GB", timezone)
    return Appointment(
        external_id="A1",
        clinic_id=UK.id,
        patient=patient,
        procedure="BMBX",
        start=start,
        duration_minutes=60,
        location="Day Unit, Level 2",
        status=AppointmentStatus.BOOKED,
        sedation=Tristate.YES,
        anticoagulant=Tristate.UNKNOWN,
    )


def test_context_has_exactly_the_documented_variables() -> None:
    context = message_context(make_appointment(datetime(2026, 12, 1, 9, 30, tzinfo=UTC)), UK, "en")
    assert set(context) == {"patient", "clinic", "appointment", "results_by"}
    assert set(section(context, "patient")) == {"first_name", "last_name"}
    assert set(section(context, "clinic")) == {
        "name", "phone", "out_of_hours_phone", "address", "fasting_hours", "no_bath_days",
        "results_typical_days", "results_chase_days", "emergency_number", "fever_threshold",
        "painkiller", "local_only_driving_advice", "bring_insurance_card",
        "procedure_minutes_shortest", "procedure_minutes_longest", "meal_without_sedation",
    }  # fmt: skip
    assert section(context, "clinic")["procedure_minutes_shortest"] == 10
    assert section(context, "clinic")["procedure_minutes_longest"] == 30
    assert section(context, "clinic")["meal_without_sedation"] == "normal"
    assert section(context, "clinic")["bring_insurance_card"] is False
    assert section(context, "appointment") == {
        "id": "A1",
        "location": "Day Unit, Level 2",
        "duration_minutes": 60,
        "sedation": "yes",
        "anticoagulant": "unknown",
        "on_chemotherapy": "unknown",
        "diabetes_on_medication": "unknown",
        # "en" at a UK clinic: the clinic's locale, en-GB (24-hour times).
        "date": "Tuesday 1 December",
        "time": "09:30",
        "when": "Tuesday 1 December at 09:30",
        "rescheduled": False,
    }


def test_english_dates_and_times_are_local_to_the_patient() -> None:
    # 15:30 UTC is 09:30 in Chicago in December.
    appointment = make_appointment(datetime(2026, 12, 1, 15, 30, tzinfo=UTC), "America/Chicago")
    gb = message_context(appointment, UK, "en-GB", rescheduled=True)
    us = message_context(appointment, US, "en-US")
    assert section(gb, "appointment")["when"] == "Tuesday 1 December at 09:30"
    assert section(gb, "appointment")["rescheduled"] is True
    assert section(us, "appointment")["time"] == "9:30 AM"  # plain space, not U+202F
    assert gb["results_by"] == "Tuesday 29 December"  # 1 December + 28 days


def test_a_late_evening_utc_start_is_the_next_day_in_a_zone_east_of_utc() -> None:
    appointment = make_appointment(datetime(2026, 12, 1, 23, 30, tzinfo=UTC), "Europe/Berlin")
    context = message_context(appointment, UK, "en-GB")
    assert section(context, "appointment")["date"] == "Wednesday 2 December"


def test_spanish_dates_use_spanish_weekdays_and_a_las() -> None:
    appointment = make_appointment(datetime(2026, 12, 1, 15, 30, tzinfo=UTC), "America/Chicago")
    context = message_context(appointment, US, "es-US")
    details = section(context, "appointment")
    assert details["date"] == "martes, 1 de diciembre"
    assert details["when"] == "martes, 1 de diciembre a las 9:30 a.m."
    assert "\u202f" not in details["when"] and "\u00a0" not in details["when"]


def test_spanish_one_oclock_takes_a_la() -> None:
    appointment = make_appointment(datetime(2026, 12, 1, 19, 5, tzinfo=UTC), "America/Chicago")
    details = section(message_context(appointment, US, "es-US"), "appointment")
    assert details["when"].startswith("martes, 1 de diciembre a la 1:05")


def test_unknown_language_formats_in_english() -> None:
    appointment = make_appointment(datetime(2026, 12, 1, 9, 30, tzinfo=UTC))
    details = section(message_context(appointment, UK, "xx-YY"), "appointment")
    assert details["date"] == "Tuesday 1 December"


def test_sample_context_has_the_longest_realistic_values() -> None:
    context = sample_context(US, "en-US")
    patient = section(context, "patient")
    details = section(context, "appointment")
    assert (len(patient["first_name"]), len(patient["last_name"])) == (20, 25)
    assert len(details["location"]) == 40
    assert details["when"] == "Wednesday, September 27 at 12:30 PM"
    assert section(sample_context(UK, "es"), "appointment")["date"] == "miércoles, 27 de septiembre"


@pytest.mark.parametrize(
    ("language", "clinic", "date", "time"),
    [
        ("en-US", UK, "Thursday, December 10", "9:30 AM"),
        ("en-GB", US, "Thursday 10 December", "09:30"),
        ("en", UK, "Thursday 10 December", "09:30"),  # the clinic's locale: en-GB
        ("en", US, "Thursday, December 10", "9:30 AM"),  # en-US
        ("es", UK, "jueves, 10 de diciembre", "9:30"),  # no es-GB in CLDR: Spanish's own
        ("es", US, "jueves, 10 de diciembre", "9:30 a.m."),  # es-US
    ],
)
def test_dates_and_times_follow_each_locales_own_pattern(
    language: str, clinic: Clinic, date: str, time: str
) -> None:
    appointment = make_appointment(datetime(2026, 12, 10, 9, 30, tzinfo=UTC), "UTC")
    details = section(message_context(appointment, clinic, language), "appointment")
    assert (details["date"], details["time"]) == (date, time)


def test_a_clinic_locale_setting_decides_for_patients_whose_language_names_no_region() -> None:
    appointment = make_appointment(datetime(2026, 12, 10, 9, 30, tzinfo=UTC), "UTC")
    clinic = replace(UK, locale="en-IE")
    assert section(message_context(appointment, clinic, "en"), "appointment")["date"] == (
        "Thursday, 10 December"  # CLDR's en-IE
    )
    # A patient's own region still wins.
    assert section(message_context(appointment, clinic, "en-US"), "appointment")["time"] == (
        "9:30 AM"
    )


def test_babel_narrow_no_break_space_never_reaches_an_sms(renderer: Renderer) -> None:
    """CLDR puts U+202F before AM/PM (en-US, es-US); an SMS gets a plain space and stays GSM-7."""
    context = with_flags(US, "en-US", sedation="no")
    assert "\u202f" not in str(section(context, "appointment")["time"])
    for template in SMS_TEMPLATES:
        text = sms(renderer, template, context)
        assert "\u202f" not in text and "\u00a0" not in text
        assert analyse(text).is_gsm7, text
    assert "see you at 12:30 PM." in sms(renderer, "day_before", context)


# --- the clinic's own practice where leaflets differ ------------------------------------------

INSURANCE = "Bring photo ID and your insurance card."


@pytest.mark.parametrize("template", ["booked", "escort", "day_before", "morning_of"])
def test_photo_id_and_insurance_card_only_where_the_clinic_asks(
    renderer: Renderer, template: str
) -> None:
    asked = email(renderer, template, with_flags(replace(US, bring_insurance_card=True), "en-US"))
    for body in (asked.text or "", asked.html or ""):
        medicines = body.index("Bring a list of all the medicines you take.")
        assert body.index(INSURANCE) > medicines  # beside the medicines list
    not_asked = email(renderer, template, with_flags(UK))
    assert "insurance" not in (not_asked.text or "") + (not_asked.html or "")


def test_the_procedure_minutes_come_from_the_clinic(renderer: Renderer) -> None:
    default = email(renderer, "booked", with_flags()).text or ""
    assert "The biopsy itself takes about 10 to 30 minutes." in default
    ranged = email(renderer, "booked", with_flags(replace(UK, procedure_minutes=(15, 45)))).text
    assert "The biopsy itself takes about 15 to 45 minutes." in (ranged or "")
    single = email(renderer, "booked", with_flags(replace(UK, procedure_minutes=(20, 20)))).text
    assert "The biopsy itself takes about 20 minutes." in (single or "")


@pytest.mark.parametrize("sedation", ["no", "unknown"])
def test_a_light_meal_clinic_says_so_without_sedation(renderer: Renderer, sedation: str) -> None:
    light = replace(UK, meal_without_sedation=MealAdvice.LIGHT)
    body = email(renderer, "day_before", with_flags(light, sedation=sedation)).text or ""
    assert "have a light meal and drink normally" in body.lower()
    assert "eat and drink normally" not in body.lower()
    default = email(renderer, "day_before", with_flags(UK, sedation=sedation)).text or ""
    assert "eat and drink normally" in default.lower() and "light meal" not in default


def test_the_day_before_sms_follows_the_meal_setting(renderer: Renderer) -> None:
    light = replace(UK, meal_without_sedation=MealAdvice.LIGHT)
    assert "Eat a light meal. Wear loose clothes" in sms(
        renderer, "day_before", with_flags(light, sedation="no")
    )
    assert "Eat and drink normally. Wear loose clothes" in sms(
        renderer, "day_before", with_flags(UK, sedation="no")
    )


@pytest.mark.parametrize("template", ["after_care", "next_day"])
def test_after_care_emails_cover_bruising_and_recovery(renderer: Renderer, template: str) -> None:
    body = email(renderer, template, with_flags()).text or ""
    assert "An ice pack wrapped in a cloth can help: hold it on for short spells" in body
    assert "Most people are back to normal in a day or two." in body
    assert "The area may be sore for a few days, or up to a week." in body


@pytest.mark.parametrize(
    ("clinic", "language"), CLINIC_LANGUAGES, ids=lambda v: getattr(v, "id", v)
)
@pytest.mark.parametrize("template", SMS_TEMPLATES)
def test_every_sms_fits_its_segments_with_every_clinic_practice(
    renderer: Renderer, template: str, clinic: Clinic, language: str
) -> None:
    for meal, insurance in product(MealAdvice, (False, True)):
        practice = replace(clinic, meal_without_sedation=meal, bring_insurance_card=insurance)
        for sedation in TRISTATES:
            text = sms(renderer, template, with_flags(practice, language, sedation=sedation))
            segments = SEGMENTS.get(template, 1)
            assert (analyse(text).encoding, analyse(text).segments) == ("GSM-7", segments), text


@pytest.mark.parametrize("language", ["en-GB", "en-US", "es"])
def test_the_booking_line_that_rides_on_another_text_tells_the_reply_codes(
    renderer: Renderer, language: str
) -> None:
    booked = appointment(patient=patient(language=language))
    line = renderer.merge_line_for(PROTOCOL, "booked", booked, UK, False)
    codes = (
        "Responda 1 para confirmar, 2 para cambiarla."
        if language == "es"
        else ("Reply 1 to confirm, 2 to change.")
    )
    assert line.endswith(codes) and "Day Unit, Level 2" in line, line
    assert "\n" not in line and analyse(line).encoding == "GSM-7"
