"""The opt-out lists: numbers that get no SMS, and addresses that get no more reminder emails.

Adding is idempotent (a number or address already on a list keeps its first date and source).
Email addresses are kept and compared as domain/opt_outs.opt_out_key gives them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import Connection, Engine, delete, insert, select
from sqlalchemy.exc import IntegrityError

from ..domain.opt_outs import opt_out_key
from .tables import email_opt_outs, sms_opt_outs


def record_sms(conn: Connection, numbers: Iterable[str], now: datetime, source: str) -> int:
    """Mark numbers as opted out of SMS (already marked ones stay as they are); how many were
    new."""
    wanted = set(numbers)
    if not wanted:
        return 0
    known = set(
        conn.execute(select(sms_opt_outs.c.phone).where(sms_opt_outs.c.phone.in_(wanted))).scalars()
    )
    fresh = [{"phone": n, "opted_out_at": now, "source": source} for n in sorted(wanted - known)]
    if fresh:
        conn.execute(insert(sms_opt_outs), fresh)
    return len(fresh)


def remove_sms(conn: Connection, phone: str) -> bool:
    """Take a number off the list; False when it was not on it."""
    return bool(conn.execute(delete(sms_opt_outs).where(sms_opt_outs.c.phone == phone)).rowcount)


def sms_opted_out(conn: Connection, phone: str) -> bool:
    found = conn.execute(select(sms_opt_outs.c.phone).where(sms_opt_outs.c.phone == phone))
    return found.first() is not None


def opted_out_numbers(conn: Connection, numbers: Iterable[str]) -> set[str]:
    """Those of `numbers` on the list."""
    wanted = set(numbers)
    if not wanted:
        return set()
    query = select(sms_opt_outs.c.phone).where(sms_opt_outs.c.phone.in_(wanted))
    return set(conn.execute(query).scalars())


def record_emails(conn: Connection, addresses: Iterable[str], now: datetime, source: str) -> int:
    """Mark addresses as opted out of email (already marked ones stay as they are); how many
    were new."""
    wanted = {opt_out_key(a) for a in addresses if a.strip()}
    if not wanted:
        return 0
    known = set(
        conn.execute(
            select(email_opt_outs.c.email).where(email_opt_outs.c.email.in_(wanted))
        ).scalars()
    )
    fresh = [{"email": a, "opted_out_at": now, "source": source} for a in sorted(wanted - known)]
    if fresh:
        conn.execute(insert(email_opt_outs), fresh)
    return len(fresh)


def record_email(engine: Engine, address: str, now: datetime, source: str) -> bool:
    """Mark one address as opted out, in a transaction of its own; False when it was on the
    list already (or another request put it there a moment earlier)."""
    try:
        with engine.begin() as conn:
            return record_emails(conn, [address], now, source) > 0
    except IntegrityError:
        return False


def remove_email(conn: Connection, address: str) -> bool:
    """Take an address off the list; False when it was not on it."""
    query = delete(email_opt_outs).where(email_opt_outs.c.email == opt_out_key(address))
    return bool(conn.execute(query).rowcount)


def opted_out_emails(conn: Connection, addresses: Iterable[str]) -> set[str]:
    """Those of `addresses` on the list, as opt_out_key gives them."""
    wanted = {opt_out_key(a) for a in addresses if a}
    if not wanted:
        return set()
    query = select(email_opt_outs.c.email).where(email_opt_outs.c.email.in_(wanted))
    return set(conn.execute(query).scalars())
