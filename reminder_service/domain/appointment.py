"""What the service knows about an appointment and the patient it belongs to."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta
from enum import Enum, StrEnum
from typing import Any, Final, Literal


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
class Caregiver:
    """Someone who looks after the patient (a parent, a partner) and may get copies of the
    patient's texts. Copies go only when both agree: the patient chose that this caregiver gets
    them (`copies`), and the caregiver consented to be texted (`sms_consent`). Texts only: the
    emails (with their calendar entries) stay the patient's."""

    name: str
    mobile: str | None  # E.164; None when the source gave no number that could be read
    relationship: str = ""  # as the source words it: "mother", "MTH", "spouse"...
    # The caregiver's own consent to be texted, and the patient's choice that this caregiver
    # gets their texts. None: the source cannot say (HL7 NK1, a FHIR RelatedPerson); importing
    # keeps what was recorded for this same number, else no.
    sms_consent: bool | None = False
    copies: bool | None = False

    @property
    def gets_copies(self) -> bool:
        return bool(self.copies and self.sms_consent) and self.mobile is not None

    def consents_from(self, recorded: Caregiver | None) -> Caregiver:
        """This caregiver with the consents a source could not give taken from the one recorded,
        when that one has the same number (the same person, as far as texts go); else no."""
        same = recorded is not None and recorded.mobile == self.mobile
        consent, copies = self.sms_consent, self.copies
        if consent is None:
            consent = bool(recorded.sms_consent) if same and recorded else False
        if copies is None:
            copies = bool(recorded.copies) if same and recorded else False
        return replace(self, sms_consent=consent, copies=copies)

    def __reduce__(self) -> tuple[type[Caregiver], tuple[Any, ...]]:
        return (Caregiver, tuple(getattr(self, f) for f in _CAREGIVER_FIELDS))  # see Patient


class _Unsaid(Enum):
    UNSAID = "unsaid"

    def __repr__(self) -> str:
        return "CAREGIVER_UNSAID"


# A source that says nothing about a caregiver (a CSV without caregiver columns, an HL7 message
# without NK1): the caregiver stored for the patient stays as it is. `None` says there is none.
CAREGIVER_UNSAID: Final = _Unsaid.UNSAID
CaregiverInfo = Caregiver | None | Literal[_Unsaid.UNSAID]


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
    caregiver: CaregiverInfo = CAREGIVER_UNSAID

    @property
    def known_caregiver(self) -> Caregiver | None:
        """The caregiver, if the source named one (an unsaid one counts as none)."""
        return self.caregiver if isinstance(self.caregiver, Caregiver) else None

    @property
    def caregiver_copy_to(self) -> str | None:
        """The number the caregiver's copies go to, or None: none go when either side has not
        agreed, and none when it is the patient's own number (they get the text once)."""
        caregiver = self.known_caregiver
        if caregiver is None or not caregiver.gets_copies or caregiver.mobile == self.mobile:
            return None
        return caregiver.mobile

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
        caregiver = p.known_caregiver  # likewise: only when there is one
        if caregiver is not None:
            parts += (
                "caregiver",
                caregiver.name,
                caregiver.mobile or "",
                caregiver.relationship,
                str(caregiver.sms_consent),
                str(caregiver.copies),
            )
        raw = "\x1f".join(parts)
        return hashlib.blake2b(raw.encode(), digest_size=16).hexdigest()


def caregiver_copy(body: str, patient: Patient) -> str:
    """The patient's text as their caregiver gets it. The texts speak to the patient ("your
    appointment"), so the copy says whom it is for, by first name only, as a greeting would. It
    may cost a segment more than the patient's text: a caregiver who cannot tell whose
    appointment it is might act on the wrong one."""
    return f"For {patient.first_name}: {body}"


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


_CAREGIVER_FIELDS = tuple(f.name for f in fields(Caregiver))
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
