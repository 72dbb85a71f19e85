"""Bad configuration is refused with errors naming the file, the step or clinic, and the field."""

from functools import partial
from pathlib import Path

import pytest
import yaml

from reminder_service.configuration.clinics import load_clinics
from reminder_service.configuration.problems import ConfigError
from reminder_service.configuration.protocols import load_protocols
from reminder_service.domain.clinic import MealAdvice
from reminder_service.domain.protocol import Channel, LatePolicy, Priority
from reminder_service.rendering.layout import missing_parts
from tests.factories import CONFIG_DIR, TEMPLATES_DIR

DEFAULT = yaml.safe_load((CONFIG_DIR / "protocols" / "bone_marrow_biopsy.yaml").read_text())


def no_missing(*_: object) -> list[str]:
    return []


def write_protocol(tmp_path: Path, data: dict, name: str = "p.yaml") -> Path:  # type: ignore[type-arg]
    directory = tmp_path / "protocols"
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(yaml.safe_dump(data))
    return directory


def with_step_change(step_id: str, **changes: object) -> dict:  # type: ignore[type-arg]
    data = yaml.safe_load(yaml.safe_dump(DEFAULT))
    for step in data["steps"]:
        if step["id"] == step_id:
            step.update(changes)
    return data


def problems(directory: Path, check=no_missing) -> list[str]:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError) as info:
        load_protocols(directory, check)
    return [str(p) for p in info.value.problems]


def test_default_protocol_loads_with_nine_steps_two_disabled():
    [protocol] = load_protocols(CONFIG_DIR / "protocols", no_missing)
    assert protocol.procedure_codes == {"BMBX", "BMA"}
    assert len(protocol.steps) == 9
    assert {s.id for s in protocol.steps if not s.enabled} == {"morning_of", "results_safety_net"}
    medicines = protocol.step("medicines")
    sms = next(r for r in medicines.channels if r.channel is Channel.SMS)
    assert sms.condition.describe() == "anticoagulant is unknown or yes"
    assert medicines.late is LatePolicy.CATCH_UP
    critical = {s.id for s in protocol.steps if s.priority is Priority.CRITICAL}
    assert critical == {"medicines", "escort", "day_before", "morning_of", "after_care", "next_day"}
    assert protocol.step("booked").over_cap == "merge"


@pytest.mark.parametrize(
    ("step", "changes", "expected"),
    [
        ("escort", {"send_at": "2 fortnights before start"}, "step 'escort': field 'send_at': "),
        ("escort", {"not_after": "soon"}, "step 'escort': field 'not_after': "),
        (
            "medicines",
            {"channels": {"email": "always", "fax": "always"}},
            "step 'medicines': field 'channels': 'fax' is not one of sms, email",
        ),
        (
            "escort",
            {"when": {"sedated": "yes"}},
            "step 'escort': field 'when': unknown flag 'sedated'",
        ),
        ("escort", {"when": {"sedation": "maybe"}}, "field 'when': sedation: values must be"),
        ("day_before", {"late": "later"}, "step 'day_before': field 'late': 'later' is not one of"),
        ("day_before", {"enabeld": False}, "step 'day_before': field 'enabeld': unknown field"),
        ("day_before", {"enabled": "sometimes"}, "field 'enabled': must be true or false"),
        ("booked", {"min_notice": "two days"}, "step 'booked': field 'min_notice': "),
        (
            "escort",
            {"priority": "urgent"},
            "step 'escort': field 'priority': must be one of standard, critical",
        ),
    ],
)
def test_bad_step_fields_are_named(tmp_path, step, changes, expected):  # type: ignore[no-untyped-def]
    directory = write_protocol(tmp_path, with_step_change(step, **changes))
    found = problems(directory)
    assert any(expected in p and str(directory / "p.yaml") in p for p in found), found


def test_unknown_template_is_an_error_naming_the_missing_file(tmp_path):  # type: ignore[no-untyped-def]
    directory = write_protocol(tmp_path, with_step_change("escort", template="escrot"))

    def check(protocol_id: str, template: str, channel: Channel) -> list[str]:
        return [f"{protocol_id}/en/{template}.sms.j2"] if template == "escrot" else []

    found = problems(directory, check)
    assert found == [
        f"{directory / 'p.yaml'}: step 'escort': field 'template': unknown template 'escrot': "
        "missing bone_marrow_biopsy/en/escrot.sms.j2",
        f"{directory / 'p.yaml'}: step 'escort': field 'template': unknown template 'escrot': "
        "missing bone_marrow_biopsy/en/escrot.sms.j2",
    ]


def test_duplicate_step_ids_are_errors(tmp_path):  # type: ignore[no-untyped-def]
    data = yaml.safe_load(yaml.safe_dump(DEFAULT))
    data["steps"].append(dict(data["steps"][0]))
    found = problems(write_protocol(tmp_path, data))
    assert any("step 'booked': field 'id': used twice" in p for p in found), found


def test_a_procedure_code_served_by_two_protocols_is_an_error(tmp_path):  # type: ignore[no-untyped-def]
    directory = write_protocol(tmp_path, DEFAULT)
    other = yaml.safe_load(yaml.safe_dump(DEFAULT))
    other["id"] = "other"
    write_protocol(tmp_path, other, "q.yaml")
    found = problems(directory)
    assert found == [
        f"{directory}: protocol 'other': field 'procedure_codes': "
        "BMA already belongs to protocol 'bone_marrow_biopsy'",
        f"{directory}: protocol 'other': field 'procedure_codes': "
        "BMBX already belongs to protocol 'bone_marrow_biopsy'",
    ]


def test_invalid_yaml_names_the_file(tmp_path):  # type: ignore[no-untyped-def]
    directory = tmp_path / "protocols"
    directory.mkdir()
    (directory / "broken.yaml").write_text("steps: [unclosed\n")
    [problem] = problems(directory)
    assert problem.startswith(f"{directory / 'broken.yaml'}: not valid YAML")


def test_real_templates_exist_for_every_step():
    load_protocols(CONFIG_DIR / "protocols", partial(missing_parts, TEMPLATES_DIR))


def test_clinics_load_and_bad_values_are_named(tmp_path):  # type: ignore[no-untyped-def]
    clinics = load_clinics(CONFIG_DIR / "clinics.yaml")
    assert clinics.default.name == "Riverside Haematology"
    assert clinics.default.send_window.opens.hour == 8
    data = yaml.safe_load((CONFIG_DIR / "clinics.yaml").read_text())
    data["clinics"]["riverside"].update(
        timezone="Europe/Londres",
        phone_region="UK",
        fasting_hours=-1,
        send_window={"opens": "20:00", "closes": "08:00"},
    )
    path = tmp_path / "clinics.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_clinics(path)
    text = str(info.value)
    for field in ("timezone", "phone_region", "fasting_hours", "send_window"):
        assert f"{path}: clinic 'riverside': field '{field}'" in text


def clinics_with(tmp_path: Path, clinic: str, raw_yaml: str) -> Path:
    """clinics.yaml with lines added to one clinic, written as a person would (quotes and all)."""
    text = (CONFIG_DIR / "clinics.yaml").read_text()
    anchor = {
        "riverside": "    name: Riverside Haematology",
        "lakeside": "    name: Lakeside Hematology",
    }
    lines = "".join(f"    {line}\n" for line in raw_yaml.strip().splitlines())
    path = tmp_path / "clinics.yaml"
    path.write_text(text.replace(anchor[clinic], lines + anchor[clinic], 1))
    return path


SERVICE_SID = "MG0123456789abcdef0123456789ABCDEF"


def test_clinic_senders_load_and_fall_back_to_none(tmp_path: Path) -> None:
    path = clinics_with(
        tmp_path,
        "riverside",
        "email_from: haematology@riverside.example.org\nsms_from: '+447700900001'",
    )
    path.write_text(
        path.read_text().replace(
            "    name: Lakeside Hematology",
            f"    messaging_service_sid: {SERVICE_SID}\n    name: Lakeside Hematology",
        )
    )
    clinics = load_clinics(path)
    riverside, lakeside = clinics.by_id["riverside"], clinics.by_id["lakeside"]
    assert (riverside.email_from, riverside.sms_from) == (
        "haematology@riverside.example.org",
        "+447700900001",
    )
    assert riverside.messaging_service_sid == ""
    assert lakeside.messaging_service_sid == SERVICE_SID
    assert (lakeside.email_from, lakeside.sms_from) == ("", "")


@pytest.mark.parametrize(
    ("lines", "field", "says"),
    [
        ("sms_from: '07700 900001'", "sms_from", "is not an E.164 number"),
        ("sms_from: '+44 7700 900001'", "sms_from", "is not an E.164 number"),
        ("sms_from: +447700900001", "sms_from", "quote a number"),  # YAML reads an integer
        ("messaging_service_sid: MG123", "messaging_service_sid", "MG followed by 32 hex"),
        ("messaging_service_sid: PN" + "0" * 32, "messaging_service_sid", "MG followed by 32 hex"),
        ("messaging_service_sid: MG" + "g" * 32, "messaging_service_sid", "MG followed by 32 hex"),
        ("email_from: not-an-address", "email_from", "is not an email address"),
        ("email_from: a@b@example.org", "email_from", "is not an email address"),
        ("email_from: ''", "email_from", "must be non-empty text"),
        (
            "sms_from: '+447700900001'\nmessaging_service_sid: MG" + "0" * 32,
            "sms_from",
            "not both",
        ),
    ],
)
def test_bad_clinic_senders_are_named_with_the_clinic_and_field(
    tmp_path: Path, lines: str, field: str, says: str
) -> None:
    path = clinics_with(tmp_path, "lakeside", lines)
    with pytest.raises(ConfigError) as info:
        load_clinics(path)
    [problem] = [str(p) for p in info.value.problems]
    assert problem.startswith(f"{path}: clinic 'lakeside': field '{field}': ")
    assert says in problem


def test_the_clinic_settings_where_leaflets_differ_default_to_the_evidence(tmp_path):  # type: ignore[no-untyped-def]
    data = yaml.safe_load((CONFIG_DIR / "clinics.yaml").read_text())
    for key in ("bring_insurance_card", "procedure_minutes", "meal_without_sedation", "locale"):
        data["clinics"]["riverside"].pop(key, None)
    path = tmp_path / "clinics.yaml"
    path.write_text(yaml.safe_dump(data))
    clinic = load_clinics(path).by_id["riverside"]
    assert clinic.bring_insurance_card is False
    assert clinic.procedure_minutes == (10, 30)
    assert clinic.meal_without_sedation == MealAdvice.NORMAL
    assert (clinic.locale, clinic.date_locale) == (None, "en-GB")  # its language, in GB


def test_the_shipped_clinics_settings_where_leaflets_differ():  # type: ignore[no-untyped-def]
    clinics = load_clinics(CONFIG_DIR / "clinics.yaml").by_id
    assert clinics["lakeside"].bring_insurance_card is True
    assert clinics["riverside"].bring_insurance_card is False
    assert clinics["lakeside"].date_locale == "en-US"


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("bring_insurance_card", "sometimes", "'sometimes' is not true or false"),
        ("procedure_minutes", 20, "must be [shortest, longest] in whole minutes"),
        ("procedure_minutes", [30, 10], "[30, 10]: must be [shortest, longest]"),
        ("procedure_minutes", [0, 30], "from 1 to 240, shortest first"),
        ("procedure_minutes", [10, "30"], "must be [shortest, longest]"),
        ("procedure_minutes", [10, 20, 30], "must be [shortest, longest]"),
        ("meal_without_sedation", "big", "'big' is not normal or light"),
        ("meal_without_sedation", ["light"], "is not normal or light"),
        ("locale", "en-XX", "'en-XX' is not a locale with date formats"),
        ("locale", "british", "'british' is not a locale"),
    ],
)
def test_bad_clinic_content_settings_are_named(tmp_path, field, value, expected):  # type: ignore[no-untyped-def]
    data = yaml.safe_load((CONFIG_DIR / "clinics.yaml").read_text())
    data["clinics"]["lakeside"][field] = value
    path = tmp_path / "clinics.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as info:
        load_clinics(path)
    (problem,) = info.value.problems
    assert str(problem).startswith(f"{path}: clinic 'lakeside': field '{field}': ")
    assert expected in str(problem)


def test_the_shipped_protocol_asks_sedated_patients_to_confirm_48_hours_before():
    [protocol] = load_protocols(CONFIG_DIR / "protocols", no_missing)
    assert protocol.confirmation is not None
    assert protocol.confirmation.describe() == (
        "confirmation required by 48 hours before start when sedation is unknown or yes"
    )


@pytest.mark.parametrize(
    ("confirmation", "expected"),
    [
        ({"required_by": "2 fortnights before start"}, "confirmation: field 'required_by': "),
        ({"when": {"sedation": "yes"}}, "confirmation: field 'required_by': is required"),
        ({"required_by": "at start", "when": {"sedated": "yes"}},
         "confirmation: field 'when': unknown flag 'sedated'"),
        ({"required_by": "at start", "by": "x"}, "confirmation: field 'by': unknown field"),
        ("48 hours before start", "confirmation: must be a mapping"),
    ],
)  # fmt: skip
def test_a_bad_confirmation_rule_is_named(tmp_path, confirmation, expected):  # type: ignore[no-untyped-def]
    data = {**yaml.safe_load(yaml.safe_dump(DEFAULT)), "confirmation": confirmation}
    found = problems(write_protocol(tmp_path, data))
    assert any(expected in p for p in found), found
