# Two commands on a fresh machine:  `make serve` (the main job)  and  `make test` (the whole test suite).
# Each does its own set-up: virtual environment, install, and models from $(MODELS_FROM) (an offline folder).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= $(abspath ../shared)
MODELS_FROM ?= $(SHARED)/models
export GATEMATCH_SHARED := $(SHARED)

.PHONY: setup models system-packages serve test lint clean

$(BIN)/gatematch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

setup: $(BIN)/gatematch

models: setup
	$(BIN)/gatematch models fetch --from $(MODELS_FROM)

# The main job: the gRPC service with embedded defaults (127.0.0.1:50051, default pack, local store).
serve: models
	$(BIN)/gatematch serve

# Real servers the tests start (PostgreSQL, HAProxy): Debian packages, installed when missing (CI runs as root).
system-packages:
	bash .ci/system-packages

test: models system-packages
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
