"""/healthz latency while a ~20 MB CSV is uploaded to POST /imports/csv and imported.

A real uvicorn server on a fresh SQLite database (or --database-url), a generated export with the
realistic mix of bench/generate_appointments.py, and a probe of /healthz every 100 ms from the
moment the upload starts until its answer arrives. The issue's bound: /healthz answers within a
second throughout (before the import handlers ran in worker threads, it waited for the import).
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.generate_appointments import generate, write_csv  # noqa: E402
from reminder_service import bootstrap  # noqa: E402
from reminder_service.entrypoints.http_server import HttpServer  # noqa: E402
from reminder_service.services.api_keys import ApiKeys  # noqa: E402
from reminder_service.settings import Settings  # noqa: E402

ROW_BYTES = 155  # about, in generate()'s export
BOUNDARY = "bench-upload-boundary"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=float, default=19.5)
    parser.add_argument("--database-url", help="default: a new SQLite file")
    parser.add_argument("--multipart", action="store_true", help="as a form upload (file part)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        rows, _, _ = generate(
            int(options.megabytes * 1_000_000 / ROW_BYTES), seed=5, today=datetime.now(UTC).date()
        )
        write_csv(work / "upload.csv", rows, excel=False)
        body = (work / "upload.csv").read_bytes()
        settings = Settings(
            database_url=options.database_url or f"sqlite:///{work / 'reminders.db'}",
            outbox_dir=work / "outbox",
            config_dir=ROOT / "config",
            templates_dir=ROOT / "templates",
        )
        service = bootstrap.build(settings)
        key = ApiKeys(service.engine, service.clock).create(f"bench-{time.time_ns()}")
        port = _free_port()
        server = HttpServer(service.http_app(), "127.0.0.1", port)
        server.start()
        try:
            _measure(port, body, len(rows), key, multipart=options.multipart)
        finally:
            server.stop()
            service.close()


def _measure(port: int, csv: bytes, rows: int, key: str, *, multipart: bool) -> None:
    answer: dict[str, object] = {}
    body, headers = (_form(csv) if multipart else csv), {"X-API-Key": key}
    headers["Content-Type"] = (
        f"multipart/form-data; boundary={BOUNDARY}" if multipart else "text/csv"
    )

    def upload() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        conn.request("POST", "/imports/csv", body=body, headers=headers)
        response = conn.getresponse()
        answer["status"], answer["body"] = response.status, response.read()
        conn.close()

    started = time.perf_counter()
    uploading = threading.Thread(target=upload)
    uploading.start()
    latencies: list[float] = []
    while uploading.is_alive():
        latencies.append(_probe(port))
        time.sleep(0.1)
    uploading.join()
    took = time.perf_counter() - started
    imported = json.loads(answer["body"])["summary"]["imported"] if answer["status"] == 200 else 0  # type: ignore[arg-type]
    print(f"POST /imports/csv{' (multipart)' if multipart else ''}: {len(body) / 1e6:.1f} MB, "
          f"{rows:,} rows, answered "
          f"{answer['status']} in {took:.1f} s ({imported:,} imported)")  # fmt: skip
    print(f"/healthz meanwhile: {len(latencies)} probes, median "
          f"{statistics.median(latencies) * 1000:.0f} ms, p95 "
          f"{_p95(latencies) * 1000:.0f} ms, max {max(latencies) * 1000:.0f} ms; "
          f"{sum(1 for t in latencies if t >= 1.0)} over 1 s")  # fmt: skip


def _form(csv: bytes) -> bytes:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; filename="upload.csv"'
        "\r\nContent-Type: text/csv\r\n\r\n"
    )
    return head.encode() + csv + f"\r\n--{BOUNDARY}--\r\n".encode()


def _probe(port: int) -> float:
    started = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("GET", "/healthz")
    conn.getresponse().read()
    conn.close()
    return time.perf_counter() - started


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


if __name__ == "__main__":
    main()
