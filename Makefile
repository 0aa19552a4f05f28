# The README's two commands: `make demo` and `make test`. Each builds the venv
# on a fresh clone (Python 3.12, the Lambda runtime's version) and needs no AWS
# account. `make demo` needs no Docker; `make test` also runs tests/samlocal (sam local
# in real containers) where a Docker engine can be made available, and skips them elsewhere.
SHELL := /bin/bash
VENV ?= .venv
PYTHON ?= $(shell scripts/find-python)
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# checkov pins a boto3 far older than aws-sam-cli's: its own venv (requirements-checkov.txt).
CHECKOV_VENV ?= .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed-stamp
# The IAM audit's evaluator (docs/local-stack.md): @cloud-copilot/iam-simulate, pinned by package-lock.json.
IAM_DIR := tools/iam
IAM_STAMP := $(IAM_DIR)/node_modules/.installed-stamp
# scripts/sam-local-setup's logs and what it started (docs/local-stack.md, "`sam local`").
SAM_LOCAL_STATE := .imagejobs/sam-local
export PATH := $(abspath $(BIN)):$(PATH)
export SAM_CLI_TELEMETRY := 0
export AWS_DEFAULT_REGION ?= us-east-1

.PHONY: venv checkov iam-evaluator scan demo up sam-local-setup chromium test lint typecheck unit bench reliability clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

checkov: $(CHECKOV_STAMP)

$(CHECKOV_STAMP): requirements-checkov.txt
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(CHECKOV_VENV)/bin/python -m pip install --quiet -r requirements-checkov.txt
	touch $(CHECKOV_STAMP)

iam-evaluator: $(IAM_STAMP)

$(IAM_STAMP): $(IAM_DIR)/package.json $(IAM_DIR)/package-lock.json
	cd $(IAM_DIR) && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	touch $(IAM_STAMP)

# The security review (docs/deploy.md): checkov on template.yaml as a reviewer runs it, then the
# tests that also scan the deployed (translated) template with and without the options.
scan: $(STAMP) $(CHECKOV_STAMP)
	BC_SKIP_MAPPING=TRUE CKV_SKIP_PACKAGE_UPDATE_CHECK=TRUE $(CHECKOV_VENV)/bin/checkov \
		-f template.yaml --framework cloudformation --skip-download --compact --quiet
	$(BIN)/pytest -q tests/template/test_security_scan.py

demo: $(STAMP)
	$(BIN)/imagejobs local demo

up: $(STAMP)
	$(BIN)/imagejobs local up

# `sam local` here (docs/local-stack.md): a Docker engine, the Lambda base image, `sam build`.
# SAM_LOCAL_INSTALL=1 (or CI=true) lets it install and start dockerd as root on Debian.
sam-local-setup: $(STAMP)
	scripts/sam-local-setup

# The headless browser the contact sheet's test drives (docs/cli.md, "batch sheet"): Debian's chromium,
# installed as root when missing (about a minute); exit 3 where it cannot be, and that test skips.
chromium:
	scripts/chromium-setup

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy layers/shared/imagejobs src/imagejobs_tools tests/unit/domain/fakes.py
	@# every handler module is named app.py: check each on its own
	@for f in $(wildcard functions/*/app.py); do $(BIN)/mypy --no-error-summary $$f || exit 1; done

# The sam local setup (apt, base image, sam build: about a minute and a half on a fresh machine) runs
# beside the rest, and tests/samlocal wait for it; whatever the outcome, what it started is stopped.
# Chromium (the contact sheet's test) is installed before it, when missing: two apt-gets at once
# would fight over dpkg's lock. Exit 3 (it cannot be installed here) only makes that test skip.
test: $(STAMP) $(CHECKOV_STAMP) $(IAM_STAMP)
	@mkdir -p $(SAM_LOCAL_STATE)
	scripts/chromium-setup >/dev/null || [ $$? -eq 3 ]
	scripts/sam-local-setup >$(SAM_LOCAL_STATE)/setup.log 2>&1 & \
	status=0; \
	{ $(BIN)/ruff check . && $(MAKE) --no-print-directory typecheck && \
	  $(BIN)/pytest -n 2 --dist loadgroup --no-loadscope-reorder tests; } || status=$$?; \
	wait; scripts/sam-local-setup --stop; exit $$status

unit: $(STAMP) $(IAM_STAMP)
	$(BIN)/pytest tests/unit

# Full-size figures (minutes each; docs/performance.md and docs/reliability.md). The test suite
# runs every benchmark at --smoke size instead.
bench: $(STAMP)
	@for b in cold_start copy_output cost detection_delay throughput capacity; do \
		echo "== bench/$$b.py"; $(BIN)/python bench/$$b.py || exit 1; done

reliability: $(STAMP)
	$(BIN)/python -m imagejobs_tools.reliability all

clean:
	rm -rf $(VENV) $(CHECKOV_VENV) $(IAM_DIR)/node_modules .aws-sam .pytest_cache .mypy_cache .ruff_cache demo-output .imagejobs
