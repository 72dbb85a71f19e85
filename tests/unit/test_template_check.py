"""check_templates: every template, language and clinic rendered as sent; SMS held to their budgets
(config/sms_budgets.yaml); broken copies of the shipped templates fail naming file and language."""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import datetime
from pathlib import Path

import pytest

from reminder_service import bootstrap
from reminder_service.catalog import Catalog
from reminder_service.configuration.clinics import Clinics
from reminder_service.configuration.problems import ConfigError
from reminder_service.configuration.sms_budgets import SmsBudgets, load_sms_budgets
from reminder_service.domain.clinic import Clinic, MealAdvice
from reminder_service.domain.protocol import Channel
from reminder_service.rendering.renderer import Renderer, sample_context
from reminder_service.rendering.template_check import (
    TemplateReport,
    check_templates,
    costliest_ucs2_start,
    flag_variants,
    html_as_text,
    patient_languages,
    templates_of,
    typography_slips,
)
from reminder_service.settings import Settings
from tests.factories import CONFIG_DIR, TEMPLATES_DIR

PROTOCOL = "bone_marrow_biopsy"
SMS_TEMPLATES = ["booked", "medicines", "escort", "day_before", "after_care", "next_day"]
LOADED = bootstrap.load_catalog(Settings(config_dir=CONFIG_DIR, templates_dir=TEMPLATES_DIR))
UK = LOADED.clinics.default
# The shipped protocols with the UK clinic alone; tests that want the US one add it.
SHIPPED = replace(LOADED, clinics=Clinics(UK.id, {UK.id: UK}))
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
BUDGETS = load_sms_budgets(CONFIG_DIR / "sms_budgets.yaml")


def with_clinics(catalog: Catalog, *clinics: Clinic) -> Catalog:
    return replace(catalog, clinics=Clinics(clinics[0].id, {c.id: c for c in clinics}))


def copy_templates(tmp_path: Path) -> Path:
    root = tmp_path / "templates"
    shutil.copytree(TEMPLATES_DIR, root)
    return root


def edit(root: Path, name: str, old: str, new: str) -> None:
    path = root / name
    text = path.read_text(encoding="utf-8")
    assert old in text, (name, old)
    path.write_text(text.replace(old, new, 1), encoding="utf-8")


def reasons(report: TemplateReport, file: str, language: str) -> list[str]:
    return [p.reason for p in report.problems if (p.file, p.language) == (file, language)]


# --- the shipped templates -------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped() -> TemplateReport:
    """The shipped templates for the shipped UK clinic and a US one (acetaminophen, 100.4F, 911)."""
    catalog = with_clinics(SHIPPED, UK, US)
    return check_templates(catalog, Renderer(TEMPLATES_DIR), BUDGETS)


def test_the_shipped_templates_pass_for_uk_and_us_clinics(shipped: TemplateReport) -> None:
    assert shipped.ok, "\n".join(str(p) for p in shipped.problems)
    rows = {(r.template, r.language, r.clinic_id) for r in shipped.sms}
    assert rows == {
        (t, language, clinic)
        for t in SMS_TEMPLATES
        for language in ("en", "es")
        for clinic in (UK.id, US.id)
    }


def test_english_sms_are_one_gsm7_segment_but_the_booking_text_with_its_reply_codes(
    shipped: TemplateReport,
) -> None:
    for result in (r for r in shipped.sms if r.language == "en"):
        expected = 2 if result.template == "booked" else 1
        assert (result.encodings, result.segments, result.budget) == (
            ("GSM-7",),
            expected,
            expected,
        ), result


def test_spanish_sms_fit_their_stated_budgets(shipped: TemplateReport) -> None:
    spanish = {(r.template, r.clinic_id): r for r in shipped.sms if r.language == "es"}
    for template in ("medicines", "escort", "day_before", "after_care"):
        for clinic in (UK.id, US.id):
            result = spanish[template, clinic]
            assert (result.encodings, result.budget) == (("GSM-7",), 2), result
            assert result.segments <= 2
    # "sábado" makes a Saturday booking UCS-2; "días" makes next_day UCS-2 on any day.
    booked = spanish["booked", US.id]
    assert (booked.encodings, booked.encoding, booked.budget) == (("GSM-7", "UCS-2"), "UCS-2", 4)
    assert "sábado" in booked.text and "12:30 p.m." in booked.text, booked.variant
    assert spanish["next_day", US.id].encodings == ("UCS-2",)
    assert spanish["next_day", US.id].segments <= 3


def test_the_costliest_variant_is_reported(shipped: TemplateReport) -> None:
    day_before = next(r for r in shipped.sms if (r.template, r.language) == ("day_before", "en"))
    assert "sedation=unknown" in day_before.variant  # the conditional advice is the longest


# --- what is rendered ------------------------------------------------------------------------


def test_every_combination_of_flags_and_rescheduled_is_rendered() -> None:
    variants = flag_variants()
    assert len(variants) == 3**4 * 2
    assert {"sedation", "anticoagulant", "on_chemotherapy", "rescheduled"} <= set(variants[0])


def test_templates_include_the_cancellation_email_found_on_disk() -> None:
    templates = templates_of(SHIPPED.protocol(PROTOCOL), TEMPLATES_DIR)
    assert templates["cancelled"] == {Channel.EMAIL}
    assert templates["booked"] == {Channel.SMS, Channel.EMAIL}
    assert templates["check_in"] == {Channel.EMAIL}


def test_patient_languages_are_the_directory_and_regional_forms_cldr_knows() -> None:
    assert patient_languages("es", [UK]) == ["es"]  # no es_GB in CLDR
    assert patient_languages("es", [UK, US]) == ["es", "es-US"]
    assert patient_languages("en", [UK, US]) == ["en", "en-GB", "en-US"]


def test_the_costliest_ucs2_date_is_a_spanish_saturday_and_there_is_none_in_english() -> None:
    start = costliest_ucs2_start(UK, "es")
    assert isinstance(start, datetime) and start.weekday() == 5
    assert costliest_ucs2_start(UK, "en-GB") is None


def test_us_clinic_values_reach_the_english_messages() -> None:
    renderer = Renderer(TEMPLATES_DIR)
    context = sample_context(US, "en-US")
    after = renderer.render(PROTOCOL, "after_care", Channel.EMAIL, "en-US", "en-US", context)
    next_day = renderer.render(PROTOCOL, "next_day", Channel.SMS, "en-US", "en-US", context)
    assert after.text is not None and next_day.sms is not None
    assert "acetaminophen" in after.text and "paracetamol" not in after.text
    assert "100.4F or more" in after.text and "call 911" in after.text
    assert "Temperature 100.4F or more?" in next_day.sms
    details = context["appointment"]
    assert isinstance(details, dict) and details["time"] == "12:30 PM"


# --- broken copies ---------------------------------------------------------------------------


def test_an_over_long_spanish_sms_fails_naming_the_file_and_language(tmp_path: Path) -> None:
    root = copy_templates(tmp_path)
    name = f"{PROTOCOL}/es/medicines.sms.j2"
    edit(
        root,
        name,
        "¿No tiene un plan?",
        # 2 GSM-7 segments hold 306 characters; this makes it about 340.
        "Traiga a su cita la lista de todas sus medicinas, vitaminas y suplementos, y tambien "
        "la lista de sus alergias y de sus otras citas. ¿No tiene un plan?",
    )
    report = check_templates(SHIPPED, Renderer(root), BUDGETS)
    assert not report.ok
    (problem,) = report.problems
    assert (problem.file, problem.language, problem.clinic_id) == (name, "es", UK.id)
    assert "3 segments (GSM-7" in problem.reason and "over its budget of 2" in problem.reason
    (row,) = [r for r in report.sms if (r.template, r.language) == ("medicines", "es")]
    assert (row.segments, row.budget, row.ok) == (3, 2, False)


@pytest.fixture(scope="module")
def broken(tmp_path_factory: pytest.TempPathFactory) -> TemplateReport:
    """One copy with a defect in each of several files (one run of the check for all of them)."""
    root = copy_templates(tmp_path_factory.mktemp("broken"))
    es = f"{PROTOCOL}/es"
    edit(root, f"{es}/escort.sms.j2", "¿Preguntas?", "{{ appointment.pickup_time }}")
    edit(root, f"{es}/after_care.sms.j2", "deje el vendaje", "deje el vendaje de la biopsia")
    edit(root, f"{es}/escort.subject.j2", "su cita", "su biopsia de médula")
    edit(root, "_macros/es/bone_marrow_biopsy.j2", "Dígale", "{{ clinic.fax }} Dígale")
    edit(root, f"{PROTOCOL}/en/day_before.sms.j2", "{{ clinic.name }}: ", "")
    (root / es / "check_in.email.html.j2").unlink()
    return check_templates(SHIPPED, Renderer(root), BUDGETS)


def test_an_undefined_variable_fails_naming_the_file(broken: TemplateReport) -> None:
    (reason,) = reasons(broken, f"{PROTOCOL}/es/escort.sms.j2", "es")
    assert "'escort' sms does not render" in reason and "pickup_time" in reason


def test_an_undefined_variable_in_a_macro_names_the_macro_file(broken: TemplateReport) -> None:
    found = reasons(broken, "_macros/es/bone_marrow_biopsy.j2", "es")
    assert found and all("fax" in reason for reason in found)


def test_a_procedure_name_in_an_sms_fails(broken: TemplateReport) -> None:
    (reason,) = reasons(broken, f"{PROTOCOL}/es/after_care.sms.j2", "es")
    assert "names the procedure ('biopsia')" in reason


def test_a_procedure_name_in_a_subject_fails(broken: TemplateReport) -> None:
    (reason,) = reasons(broken, f"{PROTOCOL}/es/escort.subject.j2", "es")
    assert "the subject names the procedure" in reason


def test_an_sms_that_does_not_name_the_clinic_fails(broken: TemplateReport) -> None:
    (reason,) = reasons(broken, f"{PROTOCOL}/en/day_before.sms.j2", "en")
    assert "does not name the clinic" in reason


def test_a_missing_email_part_fails(broken: TemplateReport) -> None:
    (problem,) = [p for p in broken.problems if p.file.endswith("check_in.email.html.j2")]
    assert (problem.file, problem.language) == (f"{PROTOCOL}/es/check_in.email.html.j2", "es")
    assert "missing" in problem.reason
    assert str(problem).startswith(f"{PROTOCOL}/es/check_in.email.html.j2 (es): missing")


def test_a_broken_copy_reports_nothing_else(broken: TemplateReport) -> None:
    files = {p.file for p in broken.problems}
    assert files == {
        f"{PROTOCOL}/es/escort.sms.j2",
        f"{PROTOCOL}/es/after_care.sms.j2",
        f"{PROTOCOL}/es/escort.subject.j2",
        "_macros/es/bone_marrow_biopsy.j2",
        f"{PROTOCOL}/en/day_before.sms.j2",
        f"{PROTOCOL}/es/check_in.email.html.j2",
    }


# --- config/sms_budgets.yaml -----------------------------------------------------------------


def write_budgets(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sms_budgets.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_shipped_budgets() -> None:
    assert BUDGETS.default == 1
    assert BUDGETS.segments(PROTOCOL, "en", "booked") == 2
    assert BUDGETS.segments(PROTOCOL, "en", "medicines") == 1
    assert BUDGETS.segments(PROTOCOL, "es", "medicines") == 2
    assert BUDGETS.segments(PROTOCOL, "es", "booked") == 4
    assert BUDGETS.segments(PROTOCOL, "es", "next_day") == 3


def test_the_most_specific_budget_applies() -> None:
    budgets = SmsBudgets(default=1, languages={"es": 2, "pt-BR": 4}, templates={"p/es/t": 5})
    assert budgets.segments("p", "es", "t") == 5
    assert budgets.segments("p", "es", "other") == 2
    assert budgets.segments("p", "es-US", "other") == 2  # the base language's
    assert budgets.segments("p", "pt-BR", "t") == 4
    assert budgets.segments("p", "fr", "t") == 1


def test_a_missing_or_empty_budgets_file_means_one_segment(tmp_path: Path) -> None:
    assert load_sms_budgets(tmp_path / "absent.yaml") == SmsBudgets()
    assert load_sms_budgets(write_budgets(tmp_path, "# nothing yet\n")) == SmsBudgets()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("default: 0\n", "field 'default': must be a whole number of segments from 1 to 10, not 0"),
        ("default: yes\n", "field 'default': must be a whole number of segments from 1 to 10"),
        ("default: '2'\n", "field 'default': must be a whole number of segments"),
        ("defualt: 2\n", "field 'defualt': unknown field (known: default, languages, templates)"),
        ("languages: [es]\n", "field 'languages': must map names to segments"),
        ("languages: {es: 11}\n", "field 'languages.es': must be a whole number of segments"),
        ("languages: {spanish!: 2}\n", "field 'languages.spanish!': is not a language tag"),
        ("templates: {booked: 2}\n", "field 'templates.booked': is not <protocol>/<language>/"),
        ("templates: {p/es/t: 2.5}\n", "field 'templates.p/es/t': must be a whole number"),
        ("- 1\n", "must be a mapping with default, languages and templates"),
        ("default: [\n", "not valid YAML"),
    ],
)
def test_budget_file_errors_name_the_field(tmp_path: Path, text: str, expected: str) -> None:
    path = write_budgets(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_sms_budgets(path)
    assert any(str(p).startswith(str(path)) for p in caught.value.problems)
    assert expected in str(caught.value)


def test_every_budget_error_is_reported_at_once(tmp_path: Path) -> None:
    path = write_budgets(tmp_path, "default: 0\nlanguages: {es: 0, fr: x}\n")
    with pytest.raises(ConfigError) as caught:
        load_sms_budgets(path)
    fields = [p.field for p in caught.value.problems]
    assert fields == ["default", "languages.es", "languages.fr"]


# --- reading grade and typography ------------------------------------------------------------


def test_every_shipped_message_reads_at_grade_8_or_below(shipped: TemplateReport) -> None:
    rows = {(g.template, g.part, g.language): g for g in shipped.grades}
    emails = {t for t, part, _ in rows if part == "email"}
    assert len(emails) == 10 and {t for t, part, _ in rows if part == "sms"} == set(SMS_TEMPLATES)
    assert len(rows) == (10 + len(SMS_TEMPLATES)) * 2
    for (_template, _part, language), result in rows.items():
        assert result.ok and result.grade.grade <= 8.0, result
        expected = "Flesch-Kincaid" if language == "en" else "Fernández-Huerta"
        assert result.grade.measure == expected


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("Your biopsy is at 9:30 a.m.. Please come early.", "doubled punctuation"),
        ("Call us,, today.", "doubled punctuation"),
        ("Call us, . Today.", "space before punctuation"),
        ("Questions?. Call.", "doubled punctuation"),
        ("Keep the dressing  on.", "double space"),
        ("Keep it dry , then shower.", "space before punctuation"),
        ("Bring the the list.", "repeated word"),
        ("Traiga su su lista.", "repeated word"),
        ("¿Preguntas ? Llame.", "space before punctuation"),
    ],
)
def test_each_typographic_slip_is_found(text: str, kind: str) -> None:
    assert kind in [found for found, _ in typography_slips(text)]


@pytest.mark.parametrize(
    "text",
    [
        "su cita es el miércoles, 27 de septiembre a la 1:05 p.m., Day Unit, Level 2.",
        "Wait... then call (312) 555-0123. ¿Preguntas? Llame al 020 7946 0123.",
        "Time: 12:30 PM\n- Date: Wednesday, September 27\n  indented: fine.",
        "Call 555 555 0123 or 020 7946 0123.",  # repeated numbers are not repeated words
    ],
)
def test_clean_text_has_no_slips(text: str) -> None:
    assert typography_slips(text) == []


def test_html_is_read_as_its_words() -> None:
    html = "<p>Call <strong>now</strong>.</p><p>A &amp; B</p>"
    assert html_as_text(html).split() == ["Call", "now", ".", "A", "&", "B"]
    assert typography_slips(html_as_text(html)) == []


@pytest.fixture(scope="module")
def slips(tmp_path_factory: pytest.TempPathFactory) -> TemplateReport:
    """A copy with one typographic slip or hard sentence in each of several files, for UK and US."""
    root = copy_templates(tmp_path_factory.mktemp("slips"))
    en, es = f"{PROTOCOL}/en", f"{PROTOCOL}/es"
    # As shipped before: es-US times end in "p.m.", and a full stop after one doubles it.
    edit(
        root,
        f"{es}/medicines.email.txt.j2",
        "Antes de su biopsia de médula ósea del {{ appointment.when }}, esto es lo que",
        "Su biopsia de médula ósea es el {{ appointment.when }}. Esto es lo que",
    )
    edit(root, f"{en}/escort.email.txt.j2", "Please plan now", "Please plan  now")
    edit(root, f"{en}/check_in.subject.j2", "after your", "after the the")
    edit(root, "_macros/es/bone_marrow_biopsy.j2", "Deje el vendaje puesto", "Deje , el vendaje")
    hard = (
        "Notwithstanding institutional heterogeneity regarding histopathological turnaround, "
        "laboratory characterisation of cytogenetic abnormalities necessitates comprehensive "
        "interdisciplinary consideration preceding communication of definitive conclusions."
    )
    edit(root, f"{en}/results_safety_net.email.txt.j2", "We never send", f"{hard}\n\nWe never send")
    dura = (
        "Independientemente de la heterogeneidad institucional, la caracterización citogenética "
        "necesariamente requiere consideraciones interdisciplinarias extraordinariamente "
        "complicadas antes de comunicarle definitivamente cualquier conclusión diagnóstica."
    )
    edit(
        root, f"{es}/results_safety_net.email.txt.j2", "Nunca enviamos", f"{dura}\n\nNunca enviamos"
    )
    return check_templates(with_clinics(SHIPPED, UK, US), Renderer(root), BUDGETS)


def test_a_doubled_full_stop_after_a_spanish_time_is_found(slips: TemplateReport) -> None:
    found = reasons(slips, f"{PROTOCOL}/es/medicines.email.txt.j2", "es")
    assert any(r.startswith("doubled punctuation: ") and "p.m.." in r for r in found), found


def test_double_spaces_repeated_words_and_space_before_punctuation_are_found(
    slips: TemplateReport,
) -> None:
    doubles = reasons(slips, f"{PROTOCOL}/en/escort.email.txt.j2", "en")
    assert len(doubles) == 2  # once for each clinic
    assert all(r.startswith("double space: ") and "Please plan  now" in r for r in doubles)
    repeated = reasons(slips, f"{PROTOCOL}/en/check_in.subject.j2", "en")
    assert all(
        r.startswith("repeated word: 'Checking in after the the procedure'") for r in repeated
    )
    # A slip in a macro shows in every email that uses it, named by the template's file.
    spaced = reasons(slips, f"{PROTOCOL}/es/after_care.email.txt.j2", "es")
    assert any(r.startswith("space before punctuation: '- Deje , el vendaje") for r in spaced)


def test_a_message_above_the_maximum_grade_fails_naming_template_and_grade(
    slips: TemplateReport,
) -> None:
    for language, measure in (("en", "Flesch-Kincaid"), ("es", "Fernández-Huerta")):
        file = f"{PROTOCOL}/{language}/results_safety_net.email.txt.j2"
        (reason,) = [r for r in reasons(slips, file, language) if "reads at" in r]
        (result,) = [
            g for g in slips.grades if (g.template, g.part, g.language) == (
                "results_safety_net", "email", language
            )
        ]  # fmt: skip
        assert not result.ok and result.grade.grade > 8 and result.grade.measure == measure
        assert reason.startswith(f"reads at grade {result.grade.grade:.1f} ({measure}")
        assert "above the maximum of grade 8" in reason
    assert {g.template for g in slips.grades if not g.ok} == {"results_safety_net"}


def test_every_clinic_practice_is_clean_and_the_maximum_grade_is_configurable() -> None:
    """The settings where leaflets differ, all switched from their defaults: budgets and
    typography hold; and a maximum of grade 4 fails exactly the messages above it."""
    practice = replace(
        US,
        bring_insurance_card=True,
        meal_without_sedation=MealAdvice.LIGHT,
        procedure_minutes=(20, 20),
    )
    catalog = with_clinics(SHIPPED, practice)
    report = check_templates(catalog, Renderer(TEMPLATES_DIR), BUDGETS, max_grade=4.0)
    failing = {(g.template, g.part, g.language) for g in report.grades if not g.ok}
    assert ("booked", "email", "en") in failing and ("after_care", "sms", "en") not in failing
    assert all(g.grade.grade <= 8 for g in report.grades)
    grade_problems = [p for p in report.problems if "reads at grade" in p.reason]
    assert len(grade_problems) == len(failing) == len(report.problems)
    assert all("above the maximum of grade 4" in p.reason for p in grade_problems)
