"""Where a step's templates live: templates/<protocol>/<language>/<template>.<part>.j2."""

from __future__ import annotations

from pathlib import Path

from ..domain.protocol import Channel

PARTS: dict[Channel, tuple[str, ...]] = {
    Channel.SMS: ("sms",),
    Channel.EMAIL: ("subject", "email.txt", "email.html"),
}
BASE_LANGUAGE = "en"


def template_name(protocol_id: str, language: str, template: str, part: str) -> str:
    return f"{protocol_id}/{language}/{template}.{part}.j2"


def language_chain(language: str, fallback: str) -> list[str]:
    """Most specific first: en-GB, en, then the clinic's default and its base, then English."""
    chain: list[str] = []
    for tag in (language, fallback, BASE_LANGUAGE):
        for candidate in (tag, tag.split("-")[0]):
            if candidate and candidate not in chain:
                chain.append(candidate)
    return chain


def missing_parts(root: Path, protocol_id: str, template: str, channel: Channel) -> list[str]:
    return [
        name
        for part in PARTS[channel]
        if not (
            root / (name := template_name(protocol_id, BASE_LANGUAGE, template, part))
        ).is_file()
    ]
