"""Bad configuration is refused with errors naming the file, the step or clinic, and the field."""

from functools import partial
from pathlib import Path

import pytest
import yaml

from reminder_service.configuration.clinics import load_clinics
from reminder_service.configuration.problems import ConfigError
from reminder_service.configuration.protocols import load_protocols
from reminder_service.domain.protocol import Channel, LatePolicy
from reminder_service.template_layout import missing_parts
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
