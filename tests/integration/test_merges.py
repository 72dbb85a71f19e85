"""A step may say that its SMS, when it cannot go (over the caps, or pushed past its deadline by
the send window), merges into the next text instead: one line of it rides on that text."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from reminder_service import bootstrap
from reminder_service.bootstrap import Service
from reminder_service.store.tables import audit_log, reminders
from tests.factories import appointment, local, walk_clock

ESCORT_LINE = "Remember: an adult must take you home and stay 24 hours."


def merging_config(tmp_path: Path, settings: Any, escort_changes: dict[str, str]) -> Any:
    config, templates = tmp_path / "config", tmp_path / "templates"
    shutil.copytree(settings.config_dir, config)
    shutil.copytree(settings.templates_dir, templates)
    (templates / "bone_marrow_biopsy" / "en" / "escort.merge.j2").write_text(ESCORT_LINE + "\n")
    protocol = config / "protocols" / "bone_marrow_biopsy.yaml"
    text = protocol.read_text()
    start = text.index("  - id: escort")
    end = text.index("  - id: day_before")
    # The escort step made standard: a critical step never gives way, so never merges.
    block = text[start:end].replace("priority: critical", "priority: standard")
    for old, new in escort_changes.items():
        assert old in block
        block = block.replace(old, new)
    protocol.write_text(text[:start] + block + text[end:])
    return replace(settings, config_dir=config, templates_dir=templates)


def sms_rows(service: Service) -> dict[str, Any]:
    with service.engine.connect() as conn:
        rows = conn.execute(select(reminders).where(reminders.c.channel == "sms")).mappings()
        return {row["step_id"]: row for row in rows}


def test_an_sms_over_the_cap_merges_into_the_next_text(settings, clock, tmp_path) -> None:  # type: ignore[no-untyped-def]
    merging = merging_config(
        tmp_path, settings, {"template: escort": "template: escort\n    over_cap: merge"}
    )
    service = bootstrap.build(merging, clock)
    try:
        service.importer.apply([(2, appointment())], source="t", label="t")
        walk_clock(service, clock, appointment().start + timedelta(days=2))
        rows = sms_rows(service)
        escort, day_before = rows["escort"], rows["day_before"]
        assert escort["status"] == "skipped"
        assert (
            escort["reason"] == "over the SMS cap (1 a day, 3 in 7 days): merged into the next text"
        )
        assert escort["merged_into"] == day_before["id"]
        body = json.loads((merging.outbox_dir / "sms" / f"{day_before['id']}.json").read_text())[
            "body"
        ]
        assert body.endswith("\n" + ESCORT_LINE)
        with service.engine.connect() as conn:
            merged = (
                conn.execute(select(audit_log.c.reason).where(audit_log.c.event == "merged"))
                .scalars()
                .all()
            )
        assert merged == [f"its line went with reminder {day_before['id']}"]
        # Nothing else carries it: the text after the day-before one is as written.
        after = json.loads(
            (merging.outbox_dir / "sms" / f"{rows['after_care']['id']}.json").read_text()
        )
        assert ESCORT_LINE not in after["body"]
    finally:
        service.close()


def test_a_text_pushed_past_its_deadline_by_the_window_merges_when_the_step_says_so(
    settings, clock, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    # Escort advice at 21:00 two days before, due no later than 36 hours before the 09:30 start:
    # the window opens at 08:00 the next day, after that deadline.
    merging = merging_config(tmp_path, settings, {
        "send_at: 2 days before start at 10:00": "send_at: 2 days before start at 21:00",
        "not_after: 24 hours before start": "not_after: 36 hours before start\n    too_late: merge",
    })  # fmt: skip
    service = bootstrap.build(merging, clock)
    try:
        appt = appointment(sedation=appointment().sedation)
        service.importer.apply([(2, appt)], source="t", label="t")
        walk_clock(service, clock, local("Europe/London", 2026, 12, 9, 19, 0))
        rows = sms_rows(service)
        assert rows["escort"]["reason"] == (
            "deadline passes before the send window opens: merged into the next text"
        )
        assert rows["escort"]["merged_into"] == rows["day_before"]["id"]
    finally:
        service.close()
