"""HL7 v2 SIU: parsing speed, and a batch file imported end to end.

1. Parsing and mapping only (`parse_siu`): every conformance sample (tests/conformance/hl7), the
   set repeated to make one batch, as `reminder-service import FILE.hl7` reads it.
2. A tenth of them applied to a fresh SQLite database through `apply_siu`: as one batch file
   (`reminder-service import`, one transaction), and one message at a time as the MLLP listener
   applies them (a transaction each).

No target in the issue: an interface engine sends a few messages a second. The figures show what
python-hl7, which builds an object for every field and component, costs per message.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reminder_service import bootstrap  # noqa: E402
from reminder_service.importers.csv_rows import ImportDefaults  # noqa: E402
from reminder_service.importers.hl7v2_siu import parse_siu  # noqa: E402
from reminder_service.services.hl7_import import apply_siu  # noqa: E402
from reminder_service.settings import Settings  # noqa: E402

SAMPLES = ROOT / "tests" / "conformance" / "hl7"
DEFAULTS = ImportDefaults("riverside", "Europe/London", "GB", "en-GB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=400, help="copies of the sample set")
    options = parser.parse_args()
    samples = [p.read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r") for p in
               sorted(SAMPLES.glob("*.hl7"))]  # fmt: skip
    batch = b"\r".join(samples * options.repeat)

    started = time.perf_counter()
    changes = parse_siu(batch, defaults=DEFAULTS)
    parsed = time.perf_counter() - started
    accepted = sum(1 for c in changes if c.ack_code == "AA")
    print(f"HL7 SIU, {len(samples)} conformance samples x {options.repeat}")
    print(
        f"  parse and map: {len(changes):,} messages in {parsed:.2f} s: "
        f"{len(changes) / parsed:,.0f} messages/s, {parsed / len(changes) * 1000:.2f} ms each "
        f"({accepted:,} AA, {len(changes) - accepted:,} AE: test numbers only)"
    )

    copies = max(1, options.repeat // 10)
    print(f"  applied to SQLite ({len(samples) * copies:,} messages, new database each way):")
    for way in ("batch file (one import)", "as MLLP (a transaction each)"):
        with tempfile.TemporaryDirectory() as scratch:
            service = bootstrap.build(_settings(Path(scratch)))
            try:
                started = time.perf_counter()
                if way.startswith("batch"):
                    results, _ = apply_siu(service.importer, b"\r".join(samples * copies), DEFAULTS)
                else:
                    results = []
                    for message in samples * copies:
                        results += apply_siu(service.importer, message, DEFAULTS, label="mllp")[0]
                took = time.perf_counter() - started
            finally:
                service.close()
        print(f"    {way}: {took:.2f} s, {len(results) / took:,.0f} messages/s")


def _settings(scratch: Path) -> Settings:
    return replace(
        Settings(), database_url=f"sqlite:///{scratch / 'bench.db'}",
        outbox_dir=scratch / "outbox", config_dir=ROOT / "config",
        templates_dir=ROOT / "templates",
    )  # fmt: skip


if __name__ == "__main__":
    main()
