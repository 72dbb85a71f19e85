"""How an email address is kept on the opt-out list and compared with it."""

from __future__ import annotations


def opt_out_key(address: str) -> str:
    """Local parts are case-insensitive at every mail provider patients use, and imports keep
    the case given: so an address is kept, and looked up, stripped and lower-cased."""
    return address.strip().lower()
