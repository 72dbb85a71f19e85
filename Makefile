# One task runner for people, CI (.ci/run) and the Dockerfile's install step.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: install run test lint typecheck unit bench fuzz clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-* && touch $@

install: $(STAMP)

# Quick start: SQLite under ./var, the file outbox under ./var/outbox, sample appointments.
run: $(STAMP)
	$(BIN)/reminder-service run --sample-data

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest tests/unit -q

# Everything: lint, types, and the whole test suite (PostgreSQL tests run when
# REMINDER_TEST_POSTGRES_URL is set, as .ci/run does).
test: lint typecheck
	$(BIN)/pytest

# Benchmarks; shared_rate_limit.py and dispatch_workers.py run dispatchers on PostgreSQL
# (REMINDER_TEST_POSTGRES_URL).
bench: $(STAMP)
	$(BIN)/python bench/import_planning.py
	$(BIN)/python bench/import_scaling.py
	$(BIN)/python bench/sms_dispatch.py
	$(BIN)/python bench/sms_lateness.py
	$(BIN)/python bench/dispatch_growth.py
	$(BIN)/python bench/dispatcher_memory.py
	$(BIN)/python bench/shared_rate_limit.py
	$(BIN)/python bench/dispatch_workers.py
	$(BIN)/python bench/crash_exactly_once.py
	$(BIN)/python bench/email_send.py
	$(BIN)/python bench/hl7_import.py
	$(BIN)/python bench/healthz_during_upload.py
	$(BIN)/python bench/startup.py

# The property-based tests of every importer, with many more examples than the suite's run.
fuzz: $(STAMP)
	REMINDER_HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest -m property -q

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache .import_linter_cache
