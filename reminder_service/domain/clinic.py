"""A clinic's own settings: the facts its messages quote and the hours they may be sent in."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from .sms_caps import DEFAULT_SMS_CAPS, SmsCaps
from .timing import SendWindow


class MealAdvice(StrEnum):
    """What a patient without sedation is told about eating: most leaflets say eat normally; some
    clinics prefer a light meal."""

    NORMAL = "normal"
    LIGHT = "light"


@dataclass(frozen=True, slots=True)
class Clinic:
    id: str
    name: str  # display name, named in every SMS
    timezone: str  # default zone for its patients
    phone: str  # in hours
    out_of_hours_phone: str
    send_window: SendWindow
    default_language: str
    phone_region: str  # ISO 3166 region for numbers written without a country code
    fasting_hours: int
    no_bath_days: int
    results_typical_days: int
    results_chase_days: int
    emergency_number: str  # 999, 911, 112
    fever_threshold: str  # "38C" or "100.4F": GSM-7 safe, no degree sign
    painkiller: str  # paracetamol / acetaminophen
    local_only_driving_advice: str
    address: str = ""
    staff_email: str = ""
    sms_caps: SmsCaps = DEFAULT_SMS_CAPS  # per patient
    # The clinic's own senders; "" falls back to the service-wide ones (SMTP_FROM, TWILIO_*).
    email_from: str = ""  # the From address of its patients' emails
    sms_from: str = ""  # E.164; or a Twilio Messaging Service:
    messaging_service_sid: str = ""
    # The clinic's own version where public leaflets differ; the defaults are the evidence-based
    # wording (see docs/SOURCES.md).
    bring_insurance_card: bool = False  # "bring photo ID and your insurance card"
    procedure_minutes: tuple[int, int] = (10, 30)  # how long the biopsy itself takes
    meal_without_sedation: MealAdvice = MealAdvice.NORMAL
    locale: str | None = None  # CLDR locale for dates; None: default_language's, in phone_region

    @property
    def date_locale(self) -> str:
        """The locale its patients' dates and times follow when their language names no region:
        the `locale` setting, else the clinic's default language in its phone region (en-GB)."""
        if self.locale:
            return self.locale
        language = self.default_language.split("-", maxsplit=1)[0]
        return f"{language}-{self.phone_region}"
