"""A long fuzzing campaign over every importer, with the property tests' inputs and checks
(tests/property/hostile.py): CSV rows, CSV files, a CSV import into the database, HL7 messages
mutated field by field and byte by byte, the MLLP listener on a real socket, FHIR documents
parsed and posted, and JSON bodies posted to the appointments API.

Each importer gets the same share of the time. A crash is an exception that escaped the
importer or a property that did not hold (an error naming no place, patient data in an error,
a refusal that wrote to the database); it does not stop the campaign. Prints, per importer, the
cases tried, the crashes and each distinct crash (type, where it was raised, its message),
with one input for each when --save is given.

    .venv/bin/python bench/fuzz_importers.py --minutes 5
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from reminder_service import bootstrap  # noqa: E402
from reminder_service.entrypoints.mllp import MllpServer  # noqa: E402
from reminder_service.importers.csv_rows import FileRejected  # noqa: E402
from reminder_service.services.api_keys import ApiKeys  # noqa: E402
from reminder_service.services.csv_import import import_csv_file  # noqa: E402
from reminder_service.services.hl7_import import apply_siu  # noqa: E402
from reminder_service.settings import Settings  # noqa: E402
from tests.factories import CONFIG_DIR, TEMPLATES_DIR, listening_on_a_thread  # noqa: E402
from tests.property import hostile  # noqa: E402

BATCH = 100  # examples per Hypothesis run; runs repeat, each with a new seed, until time is up


@dataclass
class Tally:
    cases: int = 0
    crashes: int = 0
    kinds: Counter[str] = field(default_factory=Counter)  # "Type at file:line"
    messages: dict[str, str] = field(default_factory=dict)  # the first message of each kind
    samples: dict[str, Any] = field(default_factory=dict)  # the first input of each kind

    def record(self, value: Any, exc: BaseException) -> None:
        self.crashes += 1
        frames = traceback.extract_tb(exc.__traceback__)
        ours = [f for f in frames if "reminder_service" in f.filename or "property" in f.filename]
        where = ours[-1] if ours else frames[-1]
        kind = f"{type(exc).__name__} at {Path(where.filename).name}:{where.lineno}"
        self.kinds[kind] += 1
        self.messages.setdefault(kind, " ".join(str(exc).split())[:90])
        self.samples.setdefault(kind, value)


def campaign(
    name: str, strategy: st.SearchStrategy[Any], check: Callable[[Any], None], seconds: float
) -> Tally:
    tally = Tally()

    @settings(
        max_examples=BATCH, deadline=None, database=None, phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(strategy)
    def one(value: Any) -> None:
        tally.cases += 1
        try:
            check(value)
        except Exception as exc:  # counted, and the campaign goes on
            tally.record(value, exc)

    end = time.monotonic() + seconds
    while time.monotonic() < end:
        one()
    print(f"{name:<28} {tally.cases:>8} cases  {tally.crashes:>5} crashes", flush=True)
    for kind, count in tally.kinds.most_common():
        print(f"    {count:>5} x {kind}: {tally.messages[kind]}")
    return tally


@contextmanager
def service(database_url: str | None) -> Iterator[bootstrap.Service]:
    with tempfile.TemporaryDirectory(prefix="fuzz-importers-") as tmp:
        url = database_url or f"sqlite:///{tmp}/fuzz.db"
        built = bootstrap.build(Settings(url, Path(tmp) / "outbox", CONFIG_DIR, TEMPLATES_DIR))
        try:
            yield built
        finally:
            built.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="the whole campaign's time")
    parser.add_argument("--database-url", help="default: a fresh SQLite file")
    parser.add_argument("--save", type=Path, help="write one input of each crash here")
    options = parser.parse_args()

    with ExitStack() as stack:
        svc = stack.enter_context(service(options.database_url))
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fuzz-files-")))
        client = stack.enter_context(TestClient(svc.http_app()))
        key = ApiKeys(svc.engine, svc.clock).create(f"fuzz-{time.time_ns()}")
        auth = {"Authorization": f"Bearer {key}"}
        port = stack.enter_context(listening_on_a_thread(MllpServer(_mllp_handler(svc), port=0)))
        connection = [socket.create_connection(("127.0.0.1", port), timeout=30)]
        stack.callback(lambda: connection[0].close())  # noqa: PLW0108 (the latest one)

        def csv_import(data: bytes) -> None:
            path = tmp / "hostile.csv"
            path.write_bytes(data)
            before = hostile.counts(svc.engine)
            try:
                import_csv_file(path, svc.importer, hostile.DEFAULTS, workers=0)
            except FileRejected:
                assert hostile.counts(svc.engine) == before, "a refused file wrote something"

        def post(path: str, media: str) -> Callable[[bytes], None]:
            def send(body: bytes) -> None:
                before = hostile.counts(svc.engine)
                answer = client.post(path, content=body, headers={**auth, "Content-Type": media})
                payload = answer.json()
                hostile.check_api_answer(
                    answer.status_code, payload, before, hostile.counts(svc.engine)
                )

            return send

        def mllp(message: bytes) -> None:
            try:
                hostile.mllp_round_trip(connection[0], message)
            except Exception:
                # Counted; a new connection, so one dropped connection is not every later case.
                connection[0].close()
                connection[0] = socket.create_connection(("127.0.0.1", port), timeout=30)
                raise

        fhir_bytes = st.builds(lambda d: json.dumps(d).encode(), hostile.fhir_document())
        targets: list[tuple[str, st.SearchStrategy[Any], Callable[[Any], None]]] = [
            ("CSV rows", hostile.csv_row(), hostile.check_csv_row),
            ("CSV files", hostile.csv_file(), hostile.check_csv_file),
            ("CSV import (database)", hostile.csv_file(), csv_import),
            ("HL7 field-wise", hostile.hl7_message(bytewise=False),
             lambda m: hostile.check_siu(m, personal_data_checked=True)),
            ("HL7 byte-wise", hostile.hl7_message(),
             lambda m: hostile.check_siu(m, personal_data_checked=False)),
            ("MLLP listener", hostile.hl7_message(), mllp),
            ("FHIR documents", hostile.fhir_document(), hostile.check_fhir),
            ("FHIR API (POST /fhir)", fhir_bytes, post("/fhir", "application/fhir+json")),
            ("JSON API (POST /appointments)", hostile.api_body(),
             post("/appointments", "application/json")),
        ]  # fmt: skip
        seconds = options.minutes * 60 / len(targets)
        print(f"{len(targets)} importers, {seconds:.0f} s each", flush=True)
        started = time.monotonic()
        tallies = {
            name: campaign(name, strategy, check, seconds) for name, strategy, check in targets
        }
        total = sum(t.cases for t in tallies.values())
        crashes = sum(t.crashes for t in tallies.values())
        print(f"{'all':<28} {total:>8} cases  {crashes:>5} crashes  "
              f"({time.monotonic() - started:.0f} s)")  # fmt: skip
        if options.save:
            _save(options.save, tallies)


def _mllp_handler(svc: bootstrap.Service) -> Callable[[bytes], tuple[str, str]]:
    def handle(frame: bytes) -> tuple[str, str]:
        results, _ = apply_siu(svc.importer, frame, hostile.DEFAULTS, label="mllp-fuzz")
        worst = max(results, key=lambda r: ("AA", "AE", "AR").index(r.ack), default=None)
        return (worst.ack, worst.text) if worst else ("AR", "no HL7 message in the frame")

    return handle


def _save(folder: Path, tallies: dict[str, Tally]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for name, tally in tallies.items():
        for i, (kind, value) in enumerate(tally.samples.items()):
            stem = f"{name.split()[0].lower()}-{i}"
            data = value if isinstance(value, bytes) else json.dumps(value).encode()
            (folder / f"{stem}.input").write_bytes(data)
            (folder / f"{stem}.txt").write_text(f"{kind}: {tally.messages[kind]}\n")


if __name__ == "__main__":
    main()
