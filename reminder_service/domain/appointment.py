"""What the service knows about an appointment and the patient it belongs to."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any


class Tristate(StrEnum):
    YES = "yes"
    NO = "no"
    UNKNOWN = "unknown"


class AppointmentStatus(StrEnum):
    BOOKED = "booked"
    CANCELLED = "cancelled"


# When an import says nothing about SMS consent: the patient gave this number to the clinic for
# their care (appointment messages are part of that care).
DEFAULT_SMS_CONSENT = "number given for care"

# Flags a protocol condition may test. Unknown is a real answer: the protocol decides what it means
# (the default protocol: an unknown anticoagulant counts as yes, the safer advice).
FLAG_NAMES: tuple[str, ...] = (
    "sedation",
    "anticoagulant",
    "on_chemotherapy",
    "diabetes_on_medication",
)


@dataclass(frozen=True, slots=True)
class Patient:
    external_id: str
    first_name: str
    last_name: str
    mobile: str | None  # E.164
    email: str | None
    language: str  # BCP 47 tag, e.g. "en-GB"
    timezone: str  # IANA zone
    # The basis on which we may text this patient ("" = no consent: email only).
    sms_consent: str = DEFAULT_SMS_CONSENT
    deceased: bool = False  # no message of any kind, ever
    do_not_contact: bool = False

    @property
    def suppressed(self) -> str:
        """Why no message may go to this patient at all, or ""."""
        if self.deceased:
            return "the patient is recorded as deceased"
        if self.do_not_contact:
            return "the patient is marked do-not-contact"
        return ""

    def __reduce__(self) -> tuple[type[Patient], tuple[Any, ...]]:
        # Pickled as its constructor's arguments: a slotted dataclass's default state protocol
        # costs several times more, and a large import sends every row between processes.
        return (Patient, tuple(getattr(self, f) for f in _PATIENT_FIELDS))


@dataclass(frozen=True, slots=True)
class Appointment:
    """One appointment as a source system last described it. `start` is an aware UTC datetime."""

    external_id: str
    clinic_id: str
    patient: Patient
    procedure: str
    start: datetime
    duration_minutes: int
    location: str
    status: AppointmentStatus
    sedation: Tristate = Tristate.UNKNOWN
    anticoagulant: Tristate = Tristate.UNKNOWN
    on_chemotherapy: Tristate = Tristate.UNKNOWN
    diabetes_on_medication: Tristate = Tristate.UNKNOWN

    @property
    def end(self) -> datetime:
        return self.start + timedelta(minutes=self.duration_minutes)

    def flag(self, name: str) -> Tristate:
        if name not in FLAG_NAMES:
            raise KeyError(name)
        value: Tristate = getattr(self, name)
        return value

    def __reduce__(self) -> tuple[type[Appointment], tuple[Any, ...]]:
        return (Appointment, tuple(getattr(self, f) for f in _APPOINTMENT_FIELDS))  # see Patient

    def fingerprint(self) -> str:
        """A stable digest of everything the reminders depend on; equal digests mean no change."""
        p = self.patient
        parts: tuple[str, ...] = (
            p.external_id,
            p.first_name,
            p.last_name,
            p.mobile or "",
            p.email or "",
            p.language,
            p.timezone,
            self.clinic_id,
            self.procedure,
            self.start.isoformat(),
            str(self.duration_minutes),
            self.location,
            self.status.value,
            self.sedation.value,
            self.anticoagulant.value,
            self.on_chemotherapy.value,
            self.diabetes_on_medication.value,
        )  # written out: dataclasses.astuple deep-copies, which costs seconds on a large import
        # Consent and suppression join the digest only when they differ from the default, so
        # appointments stored before these fields existed keep their digest.
        if p.sms_consent != DEFAULT_SMS_CONSENT or p.deceased or p.do_not_contact:
            parts += (p.sms_consent, str(p.deceased), str(p.do_not_contact))
        raw = "\x1f".join(parts)
        return hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class Cancellation:
    """A source says an appointment is off (cancelled, deleted, or the patient did not come) and
    gives no usable description of it. Its id is all a cancellation needs: a missing procedure,
    start or contact must never keep a cancelled biopsy's reminders going (a patient might stop
    their blood thinners for nothing)."""

    external_id: str
    no_show: bool = False


# What an importer hands on: an appointment as described, or a cancellation by id alone.
Change = Appointment | Cancellation


_PATIENT_FIELDS = tuple(f.name for f in fields(Patient))
_APPOINTMENT_FIELDS = tuple(f.name for f in fields(Appointment))


def masked_patient(patient: Patient) -> str:
    """The patient as staff alerts name them: initials and the mobile's last three digits, enough
    to match the record the appointment id leads to, little if the email goes astray."""
    initials = " ".join(f"{name.strip()[0]}." for name in (patient.first_name, patient.last_name)
                        if name.strip())  # fmt: skip
    label = initials or "the patient"
    digits = [c for c in patient.mobile or "" if c.isdigit()]
    return f"{label} (mobile ending {''.join(digits[-3:])})" if len(digits) >= 7 else label
