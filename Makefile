# Agera Voice Gateway: the two commands a user needs are `make dev` and `make test`.
# Both create the virtual environment and install what is missing first.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# Extra options for `agera dev`, e.g. make dev ARGS="--api-port 9000"
ARGS ?=
# Extra options for pytest, e.g. make test PYTEST_ARGS="-k sip -x" (-n 0 runs in one process)
PYTEST_ARGS ?=
# Two workers: one runs tests/interop in order (real peers, timing windows), the other the rest
# file by file (tests/conftest.py assigns the groups).
PYTEST_WORKERS ?= -n 2 --dist loadgroup

.DEFAULT_GOAL := help
.PHONY: help dev test lint format install system-deps pipecat-venv bench dist clean

help:
	@echo "make dev     run the whole gateway locally (API :8000, moto for DynamoDB and SQS)"
	@echo "make test    lint + the full test suite (installs the venv and Debian tools first)"
	@echo "make lint    ruff check and format check only"
	@echo "make lint-infra  the edge fleet stack's offline checks (cfn-lint, checkov, cloud-init, systemd)"
	@echo "make format  apply ruff format and safe fixes"
	@echo "make bench   run the benchmarks under bench/"
	@echo "make dist    build the wheel the edge fleet installs (dist/*.whl, docs/deploy-edge.md)"

$(BIN)/.installed: pyproject.toml
	@bash infra/setup/system-deps.sh
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required ($(PYTHON))" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $@

install: $(BIN)/.installed

system-deps:
	@bash infra/setup/system-deps.sh

# A real pipecat bot is a test peer; it lives in its own venv (~600 MB) so .venv stays lean.
pipecat-venv:
	@bash infra/setup/pipecat-venv.sh

# checkov checks infra/edge-fleet.yaml from its own venv (.venv-checkov): it pins an older boto3
# than the project.
.PHONY: checkov-venv lint-infra
checkov-venv:
	@bash infra/setup/checkov-venv.sh

# The edge fleet stack's offline checks alone: cfn-lint, checkov, cloud-init schema,
# systemd-analyze verify and shellcheck (tests/infra/test_edge_fleet_*.py, about 20 s).
lint-infra: install system-deps checkov-venv
	$(BIN)/pytest -q -n 0 tests/infra/test_edge_fleet_*.py

dev: install
	$(BIN)/agera dev $(ARGS)

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

test: install system-deps pipecat-venv checkov-venv lint
	$(BIN)/pytest $(PYTEST_WORKERS) $(PYTEST_ARGS)

# The wheel an edge instance installs at boot (infra/edge-fleet.yaml): upload it to the artifact
# bucket and pass its key to the stack.
dist: install
	rm -rf build dist
	$(BIN)/pip wheel --quiet --disable-pip-version-check --no-deps --wheel-dir dist .
	rm -rf build
	@ls dist/*.whl

# The quick benchmarks; the long runs are separate: bench/soak.py (30 min) and bench/fuzz.py.
bench: install
	@for b in bench/*.py; do case $$b in bench/soak.py|bench/fuzz.py) continue;; esac; \
		echo "== $$b"; $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) .venv-pipecat .venv-checkov .pytest_cache .ruff_cache .aws-sam *.egg-info

# `sam build` targets (BuildMethod: makefile) for the Lambda functions.
include infra/sam-build.mk
