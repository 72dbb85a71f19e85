"""Generate a synthetic appointment export with a realistic mix, and the summary it must produce.

Mix: patients in five zones (and some with none), starts over the next months including days next to
the DST transitions in America/New_York and Europe/London, sedation and blood-thinner flags, other
procedures the service does not serve, cancellations, and about 1% bad rows of several kinds. With
--excel the file is what Excel writes: UTF-8 BOM, CRLF, ';' delimiter. A second file (--changes)
reschedules 10% and cancels 3% of the first file's appointments.

Phone numbers: the fictional 555-0100..0199 range in North America, ACMA's drama range 0491 570 xxx
in Australia, and for the UK the phonenumbers library's own example range (there is no UK fictional
mobile range the library accepts). Nothing here is ever sent anywhere but the file outbox.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from reminder_service.importers.csv_mapping import LAYOUT_FIELDS

HEADERS = list(LAYOUT_FIELDS)
ZONES = [
    ("Europe/London", 45),
    ("America/New_York", 30),
    ("America/Los_Angeles", 10),
    ("America/Chicago", 5),
    ("Australia/Sydney", 5),
    ("", 5),
]
AREA_CODES = {"America/New_York": "212", "America/Los_Angeles": "415", "America/Chicago": "312"}
# Days whose day-before / day-after steps straddle a DST transition (2027).
DST_DAYS = {
    "America/New_York": [date(2027, 3, 15), date(2027, 3, 14), date(2027, 11, 8)],
    "Europe/London": [date(2027, 3, 29), date(2027, 3, 28), date(2027, 11, 1)],
    "Australia/Sydney": [date(2027, 4, 5), date(2027, 10, 4)],
}
BAD_KINDS = ["mobile", "email", "start", "status", "dst_gap", "timezone", "duration"]


@dataclass
class Expected:
    imported: int = 0
    cancelled: int = 0
    not_served: int = 0
    rejected: int = 0
    rescheduled: int = 0
    unchanged: int = 0
    bad_lines: dict[str, int] = field(default_factory=dict)


def choose(rng: random.Random, weighted: list[tuple[str, int]]) -> str:
    return rng.choices([w[0] for w in weighted], [w[1] for w in weighted])[0]


def mobile_for(rng: random.Random, zone: str) -> str:
    if zone == "Australia/Sydney":
        return f"0491 570 {rng.randint(6, 159):03d}"
    if zone in AREA_CODES:
        return f"({AREA_CODES[zone]}) 555-01{rng.randint(0, 99):02d}"
    return f"07400 {rng.randint(100000, 199999)}"  # read with the clinic's region (GB)


def start_for(rng: random.Random, zone: str, today: date, index: int) -> datetime:
    key = zone or "Europe/London"
    if key in DST_DAYS and index % 33 == 0:
        day = rng.choice(DST_DAYS[key])
    else:
        day = today + timedelta(days=rng.randint(1, 120))
    slot = time(8 + rng.randint(0, 8), rng.choice([0, 15, 30, 45]))
    return datetime.combine(day, slot)


def format_start(rng: random.Random, start: datetime) -> str:
    style = rng.random()
    if style < 0.7:
        return start.strftime("%Y-%m-%d %H:%M")
    if style < 0.95:
        return start.strftime("%Y-%m-%dT%H:%M:%S")
    return start.strftime("%Y-%m-%dT%H:%M")


def make_row(rng: random.Random, index: int, today: date) -> dict[str, str]:
    zone = choose(rng, ZONES)
    has_mobile, has_email = rng.random() > 0.05, rng.random() > 0.1
    if not (has_mobile or has_email):
        has_email = True
    language = (
        "es-US"
        if zone in AREA_CODES and rng.random() < 0.15
        else ("en-US" if zone in AREA_CODES else "en-GB")
    )
    return {
        "appointment_id": f"APT{index:07d}",
        "patient_id": f"MRN{index:07d}",
        "first_name": rng.choice(["Test", "Sample", "Demo", "Example"]),
        "last_name": f"Patient{index}",
        "mobile": mobile_for(rng, zone) if has_mobile else "",
        "email": f"patient{index}@example.org" if has_email else "",
        "language": language,
        "timezone": zone,
        "procedure": choose(rng, [("BMBX", 70), ("BMA", 25), ("CONSULT", 5)]),
        "start": format_start(rng, start_for(rng, zone, today, index)),
        "duration_minutes": str(rng.choice([30, 45, 60, 90])),
        "location": rng.choice(["Day Unit, Level 2", "Treatment Room 4", "Haematology Suite"]),
        "sedation": choose(rng, [("yes", 55), ("no", 35), ("unknown", 10)]),
        "anticoagulant": choose(rng, [("yes", 20), ("no", 65), ("unknown", 15)]),
        "status": "cancelled" if rng.random() < 0.04 else "booked",
    }


def spoil(rng: random.Random, row: dict[str, str]) -> str:
    kind = rng.choice(BAD_KINDS)
    if kind == "mobile":
        row["mobile"] = "12345"
    elif kind == "email":
        row["email"] = "not-an-email"
    elif kind == "start":
        row["start"] = "32/13/2027 25:00"
    elif kind == "status":
        row["status"] = "maybe"
    elif kind == "dst_gap":  # 02:30 does not exist in New York that night
        row["timezone"], row["start"] = "America/New_York", "2027-03-14 02:30"
        row["mobile"] = mobile_for(rng, "America/New_York")
    elif kind == "timezone":
        row["timezone"] = "Mars/Olympus_Mons"
    else:
        row["duration_minutes"] = "-5"
    return kind


def generate(rows: int, seed: int, today: date) -> tuple[list[dict[str, str]], Expected, set[str]]:
    rng = random.Random(seed)
    out, expected, bad = [], Expected(), set()
    for index in range(1, rows + 1):
        row = make_row(rng, index, today)
        if rng.random() < 0.01:
            kind = spoil(rng, row)
            bad.add(row["appointment_id"])
            expected.rejected += 1
            expected.bad_lines[kind] = expected.bad_lines.get(kind, 0) + 1
        elif row["status"] == "cancelled":
            expected.cancelled += 1
        elif row["procedure"] == "CONSULT":
            expected.not_served += 1
        else:
            expected.imported += 1
        out.append(row)
    return out, expected, bad


def changes(
    rows: list[dict[str, str]], seed: int, bad: set[str]
) -> tuple[list[dict[str, str]], Expected]:
    rng = random.Random(seed + 1)
    out, expected = [], Expected()
    for original in rows:
        row = dict(original)
        if row["appointment_id"] in bad:
            continue  # rejected the first time; left out of the second file
        roll = rng.random()
        booked = row["status"] == "booked"
        if booked and roll < 0.10:
            start = datetime.fromisoformat(row["start"]) + timedelta(days=rng.randint(1, 14))
            row["start"] = start.strftime("%Y-%m-%d %H:%M")
            expected.rescheduled += 1
        elif booked and roll < 0.13:
            row["status"] = "cancelled"
            expected.cancelled += 1
        else:
            expected.unchanged += 1
        out.append(row)
    return out, expected


def write_csv(path: Path, rows: list[dict[str, str]], excel: bool) -> None:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(
        buffer, HEADERS, delimiter=";" if excel else ",", lineterminator="\r\n" if excel else "\n"
    )
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8-sig" if excel else "utf-8", newline="")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=Path("bench/out/appointments.csv"))
    parser.add_argument("--changes", type=Path, help="also write a second file of changes here")
    parser.add_argument("--excel", action="store_true", help="UTF-8 BOM, CRLF, ';' delimiter")
    parser.add_argument("--today", type=date.fromisoformat, default=datetime.now(UTC).date())
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    rows, expected, bad = generate(args.rows, args.seed, args.today)
    write_csv(args.out, rows, args.excel)
    summary = {"first": expected.__dict__}
    if args.changes:
        second, expected_changes = changes(rows, args.seed, bad)
        write_csv(args.changes, second, args.excel)
        summary["changes"] = expected_changes.__dict__
    args.out.with_suffix(".expected.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
