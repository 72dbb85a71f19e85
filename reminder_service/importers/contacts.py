"""Contact details from imports: phone numbers -> E.164 mobiles, email addresses -> their
normalized form. Every importer reads them here, so a number or an address is accepted or refused
alike whatever the source.

A number written without its country code means different numbers in different countries: (734)
555-0123 is a Michigan number in the US and a UK mobile (+44 7345 550123) in Great Britain. So a
number is read in the candidate regions of its appointment only (the country of the clinic the
feed or row is for, and the countries the patient is known to be in: their zone's, their
address's), and when two readings differ it is refused rather than guessed. It is never read in
some other clinic's default region.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from importlib import resources

import phonenumbers
from babel.core import get_global
from email_validator import EmailNotValidError, validate_email
from email_validator.rfc_constants import CASE_INSENSITIVE_MAILBOX_NAMES
from phonenumbers import PhoneNumberFormat, PhoneNumberType

NOT_MOBILE = {
    PhoneNumberType.FIXED_LINE: "a landline",
    PhoneNumberType.TOLL_FREE: "a freephone number",
    PhoneNumberType.PREMIUM_RATE: "a premium-rate number",
    PhoneNumberType.SHARED_COST: "a shared-cost number",
    PhoneNumberType.UAN: "a non-geographic business number",
    PhoneNumberType.VOICEMAIL: "a voicemail access number",
}


@lru_cache(maxsize=16384)
def parse_mobile(text: str, regions: tuple[str, ...]) -> tuple[str | None, str]:
    """(E.164, "") or (None, reason). A number without a country code is read in every candidate
    region (the clinic's country, the patient's zone's country): when two readings are valid and
    differ, which one the patient meant is a guess, and a guess may text a stranger, so it is
    refused. With no region, only numbers written with their country code are read.

    One parse and one validity check per region: ~20-40 us for a new number.
    """
    readings: dict[str, phonenumbers.PhoneNumber] = {}
    for region in regions or (None,):
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number) or _fictional_mobile(number):
            readings.setdefault(phonenumbers.format_number(number, PhoneNumberFormat.E164), number)
    if len(readings) > 1:
        countries = " and ".join(regions)
        return None, f"reads as a different number in {countries}; write it with its country code"
    if not readings:
        where = f"region {' or '.join(regions)}" if regions else "any region without a +code"
        return None, f"not a valid phone number for {where}"
    [(e164, number)] = readings.items()
    kind = phonenumbers.number_type(number)
    if kind == PhoneNumberType.UNKNOWN and _fictional_mobile(number):
        kind = PhoneNumberType.MOBILE
    if kind in NOT_MOBILE:
        return None, f"not a mobile number ({NOT_MOBILE[kind]})"
    return e164, ""


def phone_readings(
    text: str, regions: tuple[str, ...], keep: Callable[[phonenumbers.PhoneNumber], bool]
) -> list[str]:
    """The distinct E.164 numbers `text` is in the candidate regions that `keep` accepts (more
    than one: a guess)."""
    found: list[str] = []
    for region in regions or (None,):
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            continue
        e164 = phonenumbers.format_number(number, PhoneNumberFormat.E164)
        if keep(number) and e164 not in found:
            found.append(e164)
    return found


def phone_regions(zone_name: str, clinic_region: str | None) -> tuple[str, ...]:
    """Where a number written without a country code may be read: the country of the patient's
    zone, and the country of the clinic the appointment is at. Never another clinic's."""
    found: list[str] = []
    for region in (_zone_countries().get(zone_name), clinic_region):
        if region and region.upper() not in found:
            found.append(region.upper())
    return tuple(found)


def _fictional_mobile(number: phonenumbers.PhoneNumber) -> bool:
    """Ofcom's drama range, 07700 900000-900999: reserved for fiction, so no real person can be
    reached there. phonenumbers calls it invalid; test data uses it, so it is accepted."""
    return number.country_code == 44 and 7700900000 <= (number.national_number or 0) <= 7700900999


@lru_cache(maxsize=1)
def _zone_countries() -> dict[str, str]:
    """IANA zone -> the country it is listed under in tzdata's zone.tab (one per zone)."""
    table = resources.files("tzdata.zoneinfo").joinpath("zone.tab").read_text(encoding="utf-8")
    rows = (line.split("\t") for line in table.splitlines() if not line.startswith("#"))
    return {row[2]: row[0] for row in rows if len(row) >= 3}


def country_region(text: str) -> str | None:
    """An ISO 3166 country code, alpha-2 (US) or alpha-3 (USA, as HL7 XAD-6 has it), as the
    region phonenumbers knows; None for anything else."""
    code = text.strip().upper()
    if len(code) == 3:
        aliases = get_global("territory_aliases").get(code) or []
        code = aliases[0] if len(aliases) == 1 else ""
    return code if code in phonenumbers.SUPPORTED_REGIONS else None


# RFC 5322 dot-atom in ASCII: the local parts email_validator accepts and returns unchanged.
_DOT_ATOM = re.compile(r"[A-Za-z0-9_!#$%&'*+\-/=?^`{|}~]+(?:\.[A-Za-z0-9_!#$%&'*+\-/=?^`{|}~]+)*")
_ROLE_MAILBOXES = frozenset(CASE_INSENSITIVE_MAILBOX_NAMES)  # validate_email lower-cases these


def parse_email(text: str) -> tuple[str | None, str]:
    """(normalized, "") or (None, reason), as email_validator decides.

    Most of validate_email's ~30 us goes on the domain, which patients share (a few hundred per
    clinic), so a plain local part is checked here and the domain's verdict is cached. Anything
    unusual (quotes, Unicode, role names it lower-cases, long addresses) takes the full path; a
    unit test checks the two paths agree.
    """
    local, at, domain = text.partition("@")
    plain = len(local) <= 64 and _DOT_ATOM.fullmatch(local)  # RFC 5321's local-part limit
    if at and plain and local.lower() not in _ROLE_MAILBOXES:
        forms = _email_domain(domain)
        sizes = [len(f"{local}@{form}".encode()) for form in (domain, *(forms or ()))]
        if forms is not None and max(sizes) <= 254:
            return f"{local}@{forms[0]}", ""
    return validated_email(text)


@lru_cache(maxsize=4096)
def _email_domain(domain: str) -> tuple[str, str] | None:
    """(normalized, ASCII) forms of a valid email domain, or None."""
    try:
        checked = validate_email(f"x@{domain}", check_deliverability=False)
    except EmailNotValidError:
        return None
    return checked.domain, checked.ascii_domain


@lru_cache(maxsize=16384)
def validated_email(text: str) -> tuple[str | None, str]:
    """`parse_email` by email_validator alone, every time."""
    try:
        return validate_email(text, check_deliverability=False).normalized, ""
    except EmailNotValidError:
        return None, "not a valid email address"  # the library's message would quote the address
