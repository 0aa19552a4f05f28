# The README's two commands: `make demo` and `make test`. Each builds the venv
# on a fresh clone (Python 3.12, the Lambda runtime's version) and needs no AWS
# account and no Docker.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= $(shell scripts/find-python)
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export PATH := $(abspath $(BIN)):$(PATH)
export SAM_CLI_TELEMETRY := 0
export AWS_DEFAULT_REGION ?= us-east-1

.PHONY: venv demo up test lint typecheck unit bench reliability clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/imagejobs local demo

up: $(STAMP)
	$(BIN)/imagejobs local up

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy layers/shared/imagejobs src/imagejobs_tools
	@# every handler module is named app.py: check each on its own
	@for f in $(wildcard functions/*/app.py); do $(BIN)/mypy --no-error-summary $$f || exit 1; done

test: $(STAMP)
	$(BIN)/ruff check .
	$(MAKE) --no-print-directory typecheck
	$(BIN)/pytest -n 2 --dist loadgroup tests

unit: $(STAMP)
	$(BIN)/pytest tests/unit

# Full-size figures (minutes each; docs/performance.md and docs/reliability.md). The test suite
# runs every benchmark at --smoke size instead.
bench: $(STAMP)
	@for b in cold_start copy_output cost detection_delay throughput; do \
		echo "== bench/$$b.py"; $(BIN)/python bench/$$b.py || exit 1; done

reliability: $(STAMP)
	$(BIN)/python -m imagejobs_tools.reliability all

clean:
	rm -rf $(VENV) .aws-sam .pytest_cache .mypy_cache .ruff_cache
