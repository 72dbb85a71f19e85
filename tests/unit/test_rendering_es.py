"""The Spanish (es-US) bone marrow biopsy templates: Spanish dates from Babel, the same clinical
content and SMS rules as the English (docs/SOURCES.md), and fallback for other languages."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from itertools import product
from typing import Any

import pytest

from reminder_service.configuration.clinics import load_clinics
from reminder_service.domain.appointment import Appointment, AppointmentStatus, Patient
from reminder_service.domain.clinic import Clinic, MealAdvice
from reminder_service.domain.protocol import Channel
from reminder_service.rendering.renderer import Renderer, message_context, sample_context
from reminder_service.rendering.sms_encoding import analyse
from tests.factories import CONFIG_DIR, TEMPLATES_DIR

PROTOCOL = "bone_marrow_biopsy"
SMS_TEMPLATES = ["booked", "medicines", "escort", "day_before", "after_care", "next_day"]
ALL_TEMPLATES = [*SMS_TEMPLATES, "morning_of", "check_in", "results_safety_net", "cancelled"]
PROCEDURE_WORDS = ("biopsia", "médula", "medula", "biopsy", "marrow")
TRISTATES = ("yes", "no", "unknown")

UK = load_clinics(CONFIG_DIR / "clinics.yaml").default
US = replace(
    UK,
    id="lakeside",
    name="Lakeside Hematology",
    timezone="America/Chicago",
    phone="(312) 555-0123",
    out_of_hours_phone="(312) 555-0199",
    phone_region="US",
    default_language="es-US",
    emergency_number="911",
    fever_threshold="100.4F",
    painkiller="acetaminophen",
)


@pytest.fixture(scope="module")
def renderer() -> Renderer:
    return Renderer(TEMPLATES_DIR)


def details(context: dict[str, Any]) -> dict[str, Any]:
    value = context["appointment"]
    assert isinstance(value, dict)
    return value


def spanish(clinic: Clinic = US, **flags: object) -> dict[str, Any]:
    context = sample_context(clinic, "es-US")
    details(context).update(flags)
    return context


def variants(clinic: Clinic = US) -> list[dict[str, Any]]:
    return [
        spanish(
            clinic,
            sedation=s,
            anticoagulant=a,
            on_chemotherapy=c,
            diabetes_on_medication=d,
            rescheduled=r,
        )
        for s, a, c, d, r in product(TRISTATES, TRISTATES, TRISTATES, TRISTATES, (False, True))
    ]


def sms(renderer: Renderer, template: str, context: dict[str, Any]) -> str:
    message = renderer.render(PROTOCOL, template, Channel.SMS, "es-US", "en-US", context)
    assert message.language == "es" and message.sms is not None
    return message.sms


def email_text(renderer: Renderer, template: str, context: dict[str, Any]) -> str:
    message = renderer.render(PROTOCOL, template, Channel.EMAIL, "es-US", "en-US", context)
    assert message.language == "es" and message.text is not None
    return message.text


def appointment_at(start: datetime, language: str = "es-US") -> Appointment:
    patient = Patient("P1", "Ana", "Lopez", "+13125550142", None, language, "America/Chicago")
    return Appointment(
        external_id="A1",
        clinic_id=US.id,
        patient=patient,
        procedure="BMBX",
        start=start,
        duration_minutes=60,
        location="Day Unit, Level 2",
        status=AppointmentStatus.BOOKED,
    )


# --- every part, in Spanish ------------------------------------------------------------------


def test_spanish_has_every_part_english_has() -> None:
    def parts(language: str) -> set[str]:
        return {p.name for p in (TEMPLATES_DIR / PROTOCOL / language).glob("*.j2")}

    assert parts("es") == parts("en")
    assert (TEMPLATES_DIR / "_macros" / "es" / PROTOCOL).with_suffix(".j2").is_file()


def test_every_spanish_template_renders_in_spanish(renderer: Renderer) -> None:
    for template in ALL_TEMPLATES:
        message = renderer.render(PROTOCOL, template, Channel.EMAIL, "es-US", "en", spanish())
        assert message.language == "es"
        assert message.html is not None and '<html lang="es">' in message.html
        assert message.text is not None and message.text.startswith("Hola, Christopher-Jonathan:")
        assert "Recibe este mensaje porque tiene una cita con Lakeside Hematology" in message.text
        assert "Hello" not in message.text and "Hello" not in message.html


# --- dates -----------------------------------------------------------------------------------


def test_dates_are_weekday_day_and_month_in_spanish_from_babel(renderer: Renderer) -> None:
    # "es" at a UK clinic: Spanish's own pattern, 24-hour (CLDR has no es-GB).
    context = message_context(appointment_at(datetime(2023, 9, 27, 17, 30, tzinfo=UTC)), UK, "es")
    assert details(context)["date"] == "miércoles, 27 de septiembre"
    assert details(context)["when"] == "miércoles, 27 de septiembre a las 12:30"
    text = sms(renderer, "booked", context)
    assert "su cita es el miércoles, 27 de septiembre a las 12:30, Day Unit, Level 2." in text
    subject = renderer.render(PROTOCOL, "booked", Channel.EMAIL, "es", "en", context).subject
    assert subject == "Su cita del miércoles, 27 de septiembre"


def test_spanish_at_a_us_clinic_follows_es_us(renderer: Renderer) -> None:
    # "es" with no region at a US clinic: the clinic's region, es-US (12-hour, "p.m.").
    context = message_context(appointment_at(datetime(2023, 9, 27, 17, 30, tzinfo=UTC)), US, "es")
    assert details(context)["when"] == "miércoles, 27 de septiembre a las 12:30 p.m."


def test_es_us_times_have_p_m_and_no_double_full_stop(renderer: Renderer) -> None:
    context = spanish(sedation="no")
    assert details(context)["time"] == "12:30 p.m."
    text = sms(renderer, "day_before", context)
    assert "su cita es a las 12:30 p.m. Puede comer" in text and "p.m.." not in text


def test_one_oclock_takes_a_la(renderer: Renderer) -> None:
    start = datetime(2023, 9, 27, 18, 5, tzinfo=UTC)  # 1:05 p.m. in Chicago
    context = message_context(appointment_at(start), US, "es-US")
    assert "su cita es a la 1:05 p.m. Si le van" in sms(renderer, "day_before", context)
    assert "miércoles, 27 de septiembre a la 1:05 p.m.," in sms(renderer, "booked", context)
    # In 24-hour Spanish (no es-GB in CLDR: a UK clinic's Spanish) it is 13:05, "a las".
    context = message_context(appointment_at(start), UK, "es")
    assert "su cita es a las 13:05. Si le van" in sms(renderer, "day_before", context)


def test_a_saturday_makes_the_booked_sms_ucs2(renderer: Renderer) -> None:
    context = message_context(appointment_at(datetime(2023, 9, 30, 17, 30, tzinfo=UTC)), US, "es")
    result = analyse(sms(renderer, "booked", context))
    assert result.encoding == "UCS-2" and result.characters_outside_gsm == ("á",)


# --- SMS rules -------------------------------------------------------------------------------


@pytest.mark.parametrize("template", SMS_TEMPLATES)
def test_every_spanish_sms_names_the_clinic_and_its_phone_and_never_the_procedure(
    renderer: Renderer, template: str
) -> None:
    for context in variants():
        text = sms(renderer, template, context)
        lowered = text.lower()
        assert text.startswith(f"{US.name}: ")
        fever_line = template == "next_day" and details(context)["on_chemotherapy"] != "no"
        assert (US.out_of_hours_phone if fever_line else US.phone) in text, text
        assert not any(word in lowered for word in PROCEDURE_WORDS), text
        assert "quimioterapia" not in lowered
        assert "cancel" not in lowered  # CANCEL is an opt-out keyword


@pytest.mark.parametrize("template", [t for t in SMS_TEMPLATES if t != "next_day"])
def test_spanish_sms_are_gsm7_on_a_wednesday(renderer: Renderer, template: str) -> None:
    for context in variants():
        result = analyse(sms(renderer, template, context))
        assert result.encoding == "GSM-7", (template, result)


def test_booked_sms_tells_the_reply_codes_and_keeps_the_english_stop_keyword(
    renderer: Renderer,
) -> None:
    booked = sms(renderer, "booked", spanish(rescheduled=False))
    moved = sms(renderer, "booked", spanish(rescheduled=True))
    for text in (booked, moved):
        assert "Responda 1 para confirmar, 2 para cambiarla, o llame al " in text
        assert text.endswith("STOP para no recibir mensajes")
    assert "su cita es el miércoles" in booked
    assert "cambiamos su cita al miércoles" in moved


@pytest.mark.parametrize("template", [t for t in SMS_TEMPLATES if t != "booked"])
def test_only_the_booked_sms_carries_the_opt_out_line(renderer: Renderer, template: str) -> None:
    assert "STOP" not in sms(renderer, template, spanish())


# --- clinical content ------------------------------------------------------------------------


def test_no_spanish_subject_names_the_procedure(renderer: Renderer) -> None:
    for template, context in product(ALL_TEMPLATES, variants()[::7]):
        message = renderer.render(PROTOCOL, template, Channel.EMAIL, "es-US", "en", context)
        subject = message.subject or ""
        assert subject and not any(word in subject.lower() for word in PROCEDURE_WORDS), subject


def test_emails_name_the_procedure(renderer: Renderer) -> None:
    assert "biopsia de médula ósea" in email_text(renderer, "booked", spanish())


def test_blood_thinner_messages_never_state_hold_days(renderer: Renderer) -> None:
    hold = re.compile(r"\b\d+\s+d[ií]as?\s+antes", re.IGNORECASE)
    for template, context in product(["medicines", "booked", "day_before"], variants()[::5]):
        text = email_text(renderer, template, context)
        assert not hold.search(text), text
    text = sms(renderer, "medicines", spanish())
    assert "siga el plan que le dio su equipo médico" in text
    assert f"¿No tiene un plan? Llame hoy al {US.phone}." in text


def test_medicines_email_names_example_drugs_and_asks_about_supplements(
    renderer: Renderer,
) -> None:
    text = email_text(renderer, "medicines", spanish())
    for drug in ("warfarina", "apixabán", "rivaroxabán", "edoxabán", "dabigatrán", "clopidogrel"):
        assert drug in text
    assert "aspirina e inyecciones de heparina" in text
    assert "medicinas para el dolor" in text and "suplementos" in text


def test_sedation_decides_eating_and_getting_home(renderer: Renderer) -> None:
    clinic = replace(US, fasting_hours=7)
    with_sedation = sms(renderer, "day_before", spanish(clinic, sedation="yes"))
    without = sms(renderer, "day_before", spanish(clinic, sedation="no"))
    unsure = sms(renderer, "day_before", spanish(clinic, sedation="unknown"))
    assert "No coma nada en las 7 horas antes" in with_sedation
    assert "Un adulto debe ir con usted a casa" in with_sedation
    assert "Puede comer y beber normalmente" in without and "7 horas" not in without
    assert unsure.startswith(f"{US.name}: su cita es a las 12:30 p.m. Si le van a dar un sedante:")
    body = email_text(renderer, "day_before", spanish(clinic, sedation="yes"))
    assert "no maneje" in body and "alcohol" in body and "decisiones legales" in body


def test_after_care_says_press_firmly_with_us_values(renderer: Renderer) -> None:
    text = sms(renderer, "after_care", spanish())
    assert "presione con firmeza" in text and "suavemente" not in text
    assert text.endswith("Sangrado fuerte: llame al 911")
    body = email_text(renderer, "after_care", spanish())
    assert "tome acetaminofén como dice el paquete" in body  # the clinic's painkiller, in Spanish
    assert "una temperatura de 100.4F o más" in body and "llame al 911" in body
    assert "\u00b0" not in body


def test_the_uk_painkiller_keeps_its_name(renderer: Renderer) -> None:
    assert "tome paracetamol como" in email_text(renderer, "after_care", spanish(UK))


def test_next_day_fever_goes_to_the_24_hour_line_unless_not_on_chemotherapy(
    renderer: Renderer,
) -> None:
    maybe = sms(renderer, "next_day", spanish(on_chemotherapy="unknown"))
    not_on = sms(renderer, "next_day", spanish(on_chemotherapy="no"))
    assert "¿Temperatura de 100.4F o más? Llame ya al (312) 555-0199 (24 horas)" in maybe
    assert not_on.endswith("¿Temperatura de 100.4F o más? Llame al (312) 555-0123")
    body = email_text(renderer, "check_in", spanish(on_chemotherapy="yes"))
    assert "Como usted recibe quimioterapia" in body and US.out_of_hours_phone in body


def test_results_are_never_sent_and_the_chase_date_is_in_spanish(renderer: Renderer) -> None:
    body = email_text(renderer, "check_in", spanish())
    assert "Nunca enviamos resultados" in body
    assert "Si para el miércoles, 25 de octubre no ha tenido noticias" in body


def test_html_escapes_spanish_text_once(renderer: Renderer) -> None:
    message = renderer.render(PROTOCOL, "booked", Channel.EMAIL, "es-US", "en", spanish())
    assert message.html is not None and "médula ósea" in message.html
    assert "&amp;" not in message.html


# --- fallback --------------------------------------------------------------------------------


def test_a_language_with_no_templates_falls_back_to_english(renderer: Renderer) -> None:
    context = sample_context(UK, "fr")
    for channel in (Channel.SMS, Channel.EMAIL):
        message = renderer.render(PROTOCOL, "booked", channel, "fr", "en-GB", context)
        assert message.language == "en"
    text = renderer.render(PROTOCOL, "booked", Channel.SMS, "fr", "en-GB", context).sms or ""
    assert text.startswith(f"{UK.name}: booked ") and text.endswith("STOP to opt out")


def test_a_language_with_no_templates_falls_back_to_the_clinics_spanish(
    renderer: Renderer,
) -> None:
    message = renderer.render(PROTOCOL, "booked", Channel.SMS, "fr-CA", "es-US", spanish())
    assert message.language == "es"


def test_a_spanish_patient_without_region_gets_spanish(renderer: Renderer) -> None:
    message = renderer.render(PROTOCOL, "booked", Channel.EMAIL, "es", "en-GB", spanish())
    assert message.language == "es"


# --- the clinic's own practice where leaflets differ ------------------------------------------


def test_photo_id_and_insurance_card_only_where_the_clinic_asks(renderer: Renderer) -> None:
    line = "Traiga una identificación con foto y su tarjeta del seguro médico."
    asked = replace(US, bring_insurance_card=True)
    for template in ("booked", "escort", "day_before", "morning_of"):
        body = email_text(renderer, template, spanish(asked))
        assert body.index(line) > body.index("Traiga una lista de todas las medicinas que toma.")
        assert "seguro" not in email_text(renderer, template, spanish(US))
    text = sms(renderer, "day_before", spanish(asked, sedation="no"))
    assert "traiga su lista de medicinas, un documento con foto y su tarjeta del seguro." in text
    assert "seguro" not in sms(renderer, "day_before", spanish(US, sedation="no"))


def test_minutes_and_meal_follow_the_clinic(renderer: Renderer) -> None:
    assert "La biopsia dura de 10 a 30 minutos." in email_text(renderer, "booked", spanish())
    single = replace(US, procedure_minutes=(20, 20))
    assert "La biopsia dura unos 20 minutos." in email_text(renderer, "booked", spanish(single))
    light = replace(US, meal_without_sedation=MealAdvice.LIGHT)
    body = email_text(renderer, "day_before", spanish(light, sedation="no"))
    assert "Puede comer algo ligero y beber normalmente." in body
    text = sms(renderer, "day_before", spanish(light, sedation="no"))
    assert "Puede comer algo ligero y beber normalmente." in text


def test_after_care_covers_bruising_and_recovery(renderer: Renderer) -> None:
    for template in ("after_care", "next_day"):
        body = email_text(renderer, template, spanish())
        assert "Una bolsa de hielo envuelta en un paño puede ayudar" in body
        assert "La mayoría de las personas se sienten normales en uno o dos días." in body
        assert "La zona puede doler durante unos días, o hasta una semana." in body
    text = sms(renderer, "after_care", spanish())
    assert "Si se pone morado, use hielo envuelto en un paño por ratos cortos." in text
    assert analyse(text).is_gsm7


def test_no_spanish_email_ends_a_sentence_with_a_doubled_full_stop(renderer: Renderer) -> None:
    for template in ALL_TEMPLATES:
        text = email_text(renderer, template, spanish())  # es-US: "12:30 p.m."
        assert "p.m.." not in text and "a.m.." not in text, template
