"""config/clinics.yaml -> Clinic objects, or every problem found."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfoNotFoundError

import phonenumbers
from babel import Locale, UnknownLocaleError
from email_validator import EmailNotValidError, validate_email

from ..domain.clinic import Clinic, MealAdvice
from ..domain.sms_caps import SmsCaps
from ..domain.timing import SendWindow, parse_local_time, zone
from .problems import ConfigError, ConfigProblem, check_keys, read_yaml

TEXT_FIELDS = {"name", "phone", "out_of_hours_phone", "emergency_number", "fever_threshold"}
TEXT_FIELDS |= {"painkiller", "local_only_driving_advice"}
INT_FIELDS = {"fasting_hours", "no_bath_days", "results_typical_days", "results_chase_days"}
REQUIRED = TEXT_FIELDS | INT_FIELDS | {"timezone", "phone_region"}
OPTIONAL = {"send_window", "default_language", "address", "staff_email", "sms_caps"}
OPTIONAL |= {"email_from", "sms_from", "messaging_service_sid"}
# Twilio's formats: a number in E.164, a Messaging Service SID "MG" and 32 hex digits.
E164 = re.compile(r"\+[1-9]\d{1,14}")
MESSAGING_SERVICE_SID = re.compile(r"MG[0-9a-fA-F]{32}")
OPTIONAL |= {"bring_insurance_card", "procedure_minutes", "meal_without_sedation", "locale"}
# Where public leaflets differ, a clinic states its own practice; these are the defaults.
DEFAULT_PROCEDURE_MINUTES = [10, 30]
LONGEST_PROCEDURE_MINUTES = 240


@dataclass(frozen=True, slots=True)
class Clinics:
    default_id: str
    by_id: dict[str, Clinic]

    @property
    def default(self) -> Clinic:
        return self.by_id[self.default_id]

    def get(self, clinic_id: str | None) -> Clinic | None:
        return self.by_id.get(clinic_id or self.default_id)


def load_clinics(path: Path) -> Clinics:
    problems: list[ConfigProblem] = []
    file = str(path)
    data = read_yaml(path, problems)
    clinics: dict[str, Clinic] = {}
    if data is not None and not isinstance(data, dict):
        problems.append(
            ConfigProblem(file, "", "", "must be a mapping with default_clinic, clinics")
        )
    elif isinstance(data, dict):
        check_keys(data, {"default_clinic", "clinics"}, set(), file, "", problems)
        entries = data.get("clinics")
        if not isinstance(entries, dict) or not entries:
            problems.append(ConfigProblem(file, "", "clinics", "must map clinic ids to settings"))
            entries = {}
        for clinic_id, raw in entries.items():
            clinic = _load_clinic(str(clinic_id), raw, file, problems)
            if clinic is not None:
                clinics[clinic.id] = clinic
        default_id = str(data.get("default_clinic", ""))
        if entries and default_id not in entries:
            problems.append(
                ConfigProblem(file, "", "default_clinic", f"{default_id!r} is not a clinic here")
            )
    if problems:
        raise ConfigError(problems)
    return Clinics(default_id=str(data["default_clinic"]), by_id=clinics)


def _load_clinic(
    clinic_id: str, raw: Any, file: str, problems: list[ConfigProblem]
) -> Clinic | None:
    where = f"clinic '{clinic_id}'"
    if not isinstance(raw, dict):
        problems.append(ConfigProblem(file, where, "", "must be a mapping of settings"))
        return None
    before = len(problems)

    def problem(field: str, message: str) -> None:
        problems.append(ConfigProblem(file, where, field, message))

    check_keys(raw, REQUIRED, OPTIONAL, file, where, problems)
    for field in sorted(TEXT_FIELDS & raw.keys()):
        if not isinstance(raw[field], str | int) or not str(raw[field]).strip():
            problem(field, "must be non-empty text")
    for field in sorted(INT_FIELDS & raw.keys()):
        if not isinstance(raw[field], int) or isinstance(raw[field], bool) or raw[field] < 0:
            problem(field, "must be a whole number, 0 or more")
    try:
        zone(str(raw.get("timezone")))
    except (ZoneInfoNotFoundError, ValueError):
        problem(
            "timezone", f"{raw.get('timezone')!r} is not an IANA time zone (e.g. Europe/London)"
        )
    region = str(raw.get("phone_region", "")).upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        problem("phone_region", f"{region!r} is not a region code such as GB or US")
    window = _send_window(raw.get("send_window", {"opens": "08:00", "closes": "20:00"}), problem)
    caps = _sms_caps(raw.get("sms_caps", {"per_day": 1, "per_7_days": 3}), problem)
    senders = _senders(raw, problem)
    insurance = raw.get("bring_insurance_card", False)
    if not isinstance(insurance, bool):
        problem("bring_insurance_card", f"{insurance!r} is not true or false")
    minutes = _procedure_minutes(raw.get("procedure_minutes", DEFAULT_PROCEDURE_MINUTES), problem)
    meal = _meal_advice(raw.get("meal_without_sedation", MealAdvice.NORMAL.value), problem)
    locale = _locale(raw.get("locale"), problem)
    if (
        len(problems) > before
        or window is None
        or caps is None
        or minutes is None
        or senders is None
    ):
        return None
    return Clinic(
        id=clinic_id,
        name=str(raw["name"]).strip(),
        timezone=str(raw["timezone"]),
        phone=str(raw["phone"]),
        out_of_hours_phone=str(raw["out_of_hours_phone"]),
        send_window=window,
        default_language=str(raw.get("default_language", "en")),
        phone_region=region,
        fasting_hours=int(raw["fasting_hours"]),
        no_bath_days=int(raw["no_bath_days"]),
        results_typical_days=int(raw["results_typical_days"]),
        results_chase_days=int(raw["results_chase_days"]),
        emergency_number=str(raw["emergency_number"]),
        fever_threshold=str(raw["fever_threshold"]),
        painkiller=str(raw["painkiller"]),
        local_only_driving_advice=str(raw["local_only_driving_advice"]).strip(),
        address=str(raw.get("address", "")).strip(),
        staff_email=str(raw.get("staff_email", "")),
        sms_caps=caps,
        bring_insurance_card=bool(insurance),
        procedure_minutes=minutes,
        meal_without_sedation=meal or MealAdvice.NORMAL,
        locale=locale,
        **senders,
    )


def _senders(raw: dict[str, Any], problem: Any) -> dict[str, str] | None:
    """The clinic's own From address and SMS sender, checked as Twilio and mail servers would
    check them, so a typo is a named configuration error, not a failed send at 10 a.m."""
    senders = {"email_from": "", "sms_from": "", "messaging_service_sid": ""}
    bad = False
    for field in senders:
        value = raw.get(field)
        if value is None:
            continue
        if not isinstance(value, str) or not value.strip():
            hint = " (quote a number: '+447700900123')" if field == "sms_from" else ""
            problem(field, f"must be non-empty text{hint}")
            bad = True
            continue
        senders[field] = value.strip()
    if senders["email_from"]:
        try:
            validate_email(senders["email_from"], check_deliverability=False)
        except EmailNotValidError as exc:
            problem("email_from", f"{senders['email_from']!r} is not an email address ({exc})")
            bad = True
    if senders["sms_from"] and not E164.fullmatch(senders["sms_from"]):
        problem("sms_from", f"{senders['sms_from']!r} is not an E.164 number such as +447700900123")
        bad = True
    service = senders["messaging_service_sid"]
    if service and not MESSAGING_SERVICE_SID.fullmatch(service):
        problem(
            "messaging_service_sid",
            f"{service!r} is not a Messaging Service SID (MG followed by 32 hex digits)",
        )
        bad = True
    if senders["sms_from"] and service:
        problem("sms_from", "set sms_from or messaging_service_sid, not both")
        bad = True
    return None if bad else senders


def _procedure_minutes(value: Any, problem: Any) -> tuple[int, int] | None:
    """[shortest, longest]: how long the biopsy itself takes, as the messages say it."""
    expected = f"must be [shortest, longest] in whole minutes, e.g. {DEFAULT_PROCEDURE_MINUTES}"
    if not isinstance(value, list) or len(value) != 2:
        problem("procedure_minutes", expected)
        return None
    shortest, longest = value
    numbers = all(isinstance(n, int) and not isinstance(n, bool) for n in value)
    if not numbers or not 1 <= shortest <= longest <= LONGEST_PROCEDURE_MINUTES:
        problem(
            "procedure_minutes",
            f"{value!r}: {expected}, from 1 to {LONGEST_PROCEDURE_MINUTES}, shortest first",
        )
        return None
    return (shortest, longest)


def _meal_advice(value: Any, problem: Any) -> MealAdvice | None:
    try:
        return MealAdvice(value)
    except (ValueError, TypeError):  # TypeError: a list or mapping
        known = " or ".join(m.value for m in MealAdvice)
        problem("meal_without_sedation", f"{value!r} is not {known}")
        return None


def _locale(value: Any, problem: Any) -> str | None:
    """A locale CLDR has data for (en-GB, es-US); absent: derived from the clinic's language."""
    if value is None:
        return None
    tag = str(value).strip()
    try:
        Locale.parse(tag.replace("-", "_"))
    except (UnknownLocaleError, ValueError, TypeError):
        problem("locale", f"{value!r} is not a locale with date formats (e.g. en-GB, en-US, es-US)")
        return None
    return tag


def _sms_caps(value: Any, problem: Any) -> SmsCaps | None:
    if not isinstance(value, dict) or not set(value) <= {"per_day", "per_7_days"}:
        problem("sms_caps", "must be a mapping with per_day and per_7_days (0: no cap)")
        return None
    numbers = {key: value.get(key, 0) for key in ("per_day", "per_7_days")}
    for key, number in numbers.items():
        if not isinstance(number, int) or isinstance(number, bool) or number < 0:
            problem("sms_caps", f"{key} must be a whole number, 0 or more")
            return None
    return SmsCaps(per_day=numbers["per_day"], per_week=numbers["per_7_days"])


def _send_window(value: Any, problem: Any) -> SendWindow | None:
    if not isinstance(value, dict) or set(value) != {"opens", "closes"}:
        problem("send_window", "must be a mapping with opens and closes, e.g. {opens: '08:00'}")
        return None
    try:
        window = SendWindow(
            parse_local_time(str(value["opens"])), parse_local_time(str(value["closes"]))
        )
    except ValueError as exc:
        problem("send_window", str(exc))
        return None
    if window.opens >= window.closes:
        problem("send_window", "opens must be earlier than closes")
        return None
    return window
