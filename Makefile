# cnnops: `make run` and `make test` set everything up on a machine with Python 3.11, git and make.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV_VERSION := 0.13.8
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
BIN := $(VENV)/bin
export UV_PROJECT_ENVIRONMENT := $(VENV)
# Use the machine's Python 3.11; never download one (only package registries are reachable).
export UV_PYTHON_DOWNLOADS := never
export TF_CPP_MIN_LOG_LEVEL ?= 2
MLFLOW_PORT ?= 5000
# Where `make mlflow-server` listens: loopback unless you mean to expose it.
MLFLOW_HOST ?= 127.0.0.1
PORT ?= 3000
# The web-page tests drive Debian's Chromium (Playwright never downloads a browser here).
CHROMIUM := /usr/bin/chromium
# Graphviz's dot draws the model diagrams of the error analysis (the tests check one is drawn).
DOT := /usr/bin/dot
STATE := $(or $(CNNOPS_HOME),.cnnops)
# Containers. The image's name and version come from components/__init__.py (the components name
# it), read lazily because the venv may not exist yet.
IMAGE ?= $(shell $(BIN)/python -c 'from components import BASE_IMAGE; print(BASE_IMAGE)')
SERVE_IMAGE ?= cnnops-serve:$(shell $(BIN)/python -c 'from importlib.metadata import version; print(version("cnnops"))')
# The local Debian base (infra/docker/base.sh): nothing can be pulled here. With a registry, pass
# BASE_IMAGE=python:3.11-slim-bookworm.
LOCAL_BASE := cnnops-base:bookworm
BASE_IMAGE ?= $(LOCAL_BASE)
# Debian's docker.io CLI, which drives BuildKit without the buildx plugin.
DOCKER ?= $(or $(wildcard /usr/bin/docker),docker)
# An extra CA bundle the build trusts (a TLS-intercepting proxy's), passed as a BuildKit secret.
CA_BUNDLE ?= $(wildcard /etc/ssl/certs/ca-certificates.crt)
EXTRAS ?=
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
DEBIAN_TOOLS := /usr/sbin/dockerd /usr/bin/podman /usr/bin/catatonit /usr/sbin/debootstrap
# Debian's PostgreSQL 15: the shared-store tests start a throwaway cluster with it (tests/support/postgres.py).
POSTGRES := /usr/lib/postgresql/15/bin/initdb

.PHONY: install run retrain test test-fast lint compile docs ui serve bento browser clean image base-image serve-image service-image \
	container-tools docker-start docker-stop mlflow-server postgres

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(BIN)/cnnops: $(UV) pyproject.toml uv.lock
	$(UV) sync --quiet --locked --compile-bytecode --python $(PYTHON)
	@touch $@

install: $(BIN)/cnnops ## Create .venv with the locked dependencies.

run: install ## Run the whole pipeline on the demo dataset (override: make run ARGS="--data DIR").
	$(BIN)/cnnops run $(ARGS)

retrain: install ## Retrain the champion when its data changed (override: make retrain ARGS="--data DIR --force").
	$(BIN)/cnnops retrain $(ARGS)

# The suite runs on xdist workers, a file to a worker (`--dist loadfile`): servers bind free
# loopback ports, each test keeps its own state folder, the shared champion is built once for all
# workers (tests/support/fixtures.py), and every test that needs the Docker daemon is in one file.
# Three workers on two cores: much of the suite waits on servers, subprocesses and image builds.
WORKERS ?= 3
test: install $(CHROMIUM) $(DOT) $(POSTGRES) container-tools ## Run the test suite (starts dockerd if none runs, and stops it).
	infra/docker/with-dockerd.sh $(BIN)/python -m pytest -n $(WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

# The inner loop (its time is in docs/benchmarks.md): `make test` less the tests marked slow (many epochs,
# the shared 12-epoch champion and its users), pipeline (kfp.local runs), containers, browser and
# server (real serve/ui/mlflow server processes); see the markers in pyproject.toml.
test-fast: install $(DOT) ## The inner loop: no slow, pipeline, container, browser or server tests.
	$(BIN)/python -m pytest -n 2 --dist loadfile -m "not slow and not pipeline and not containers and not browser and not server" -p no:cacheprovider $(PYTEST_ARGS)

container-tools: $(DEBIAN_TOOLS) ## Debian's docker.io, podman (with catatonit) and debootstrap.

$(DEBIAN_TOOLS) &:
	@command -v apt-get >/dev/null || { echo "make: the container tests need Debian's docker.io, podman, catatonit and debootstrap"; exit 1; }
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
	  docker.io podman catatonit debootstrap

docker-start: container-tools ## Start dockerd in the background (as root, no systemd), unless one answers.
	infra/docker/dockerd.sh start

docker-stop: ## Stop the dockerd that docker-start started.
	infra/docker/dockerd.sh stop

base-image: ## The local Debian bookworm base image (debootstrap; no registry needed).
	@$(DOCKER) image inspect $(BASE_IMAGE) >/dev/null 2>&1 || [ "$(BASE_IMAGE)" != "$(LOCAL_BASE)" ] || \
	  infra/docker/base.sh $(BASE_IMAGE)

image: install docker-start base-image ## Build the project image every pipeline task runs in (tag: see components/__init__.py).
	infra/docker/build.sh "$(DOCKER)" "$(IMAGE)" "$(BASE_IMAGE)" "$(CA_BUNDLE)" "$(EXTRAS)"

serve-image: install docker-start base-image ## Build the ONNX serving image (no TensorFlow) that service images build on.
	infra/docker/build.sh "$(DOCKER)" "$(SERVE_IMAGE)" "$(BASE_IMAGE)" "$(CA_BUNDLE)" "" infra/docker/serve.Dockerfile

service-image: serve-image ## Build the champion's service image (override: ARGS="--version 3" or "--runtime keras", which needs `make image`).
	$(BIN)/cnnops bento --containerize $(ARGS)

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "make: the page tests need Debian's chromium at $(CHROMIUM)"; exit 1; }
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

$(DOT):
	@command -v apt-get >/dev/null || { echo "make: the analysis tests need Graphviz's dot at $(DOT)"; exit 1; }
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends graphviz

browser: $(CHROMIUM) ## Install Debian's Chromium for the web-page tests.

$(POSTGRES):
	@command -v apt-get >/dev/null || { echo "make: the shared-store tests need Debian's postgresql-15 at $(POSTGRES)"; exit 1; }
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15

postgres: $(POSTGRES) ## Install Debian's PostgreSQL 15 for the shared-store tests (no cluster is started).

serve: install ## Serve the champion over HTTP on 127.0.0.1:$(PORT) (override: make serve ARGS="--model-name NAME").
	$(BIN)/cnnops serve --port $(PORT) $(ARGS)

bento: install ## Build a Bento pinned to the current champion (override: make bento ARGS="--version 3").
	$(BIN)/cnnops bento $(ARGS)

lint: install ## Lint, format check and type check (and the GitHub workflows): what CI and the pre-commit hooks run.
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache
	$(BIN)/actionlint -shellcheck $(BIN)/shellcheck -pyflakes= .github/workflows/*.yml

compile: install ## Write the pipeline's IR YAML.
	$(BIN)/cnnops compile --out pipelines/cnnops-train.yaml

docs: install ## Rewrite docs/configuration.md from the config model (a unit test fails when it is stale).
	$(BIN)/python -m cnnops.settings.reference docs/configuration.md

ui: install ## MLflow UI and tracking server on 127.0.0.1 (one light worker, proxied artifacts).
	$(BIN)/cnnops ui --port $(MLFLOW_PORT)

mlflow-server: install ## A shared MLflow server (one light worker, proxied artifacts): store and artifacts from MLFLOW_BACKEND_STORE_URI and MLFLOW_ARTIFACTS_DESTINATION.
	@[ -n "$$MLFLOW_BACKEND_STORE_URI" ] && [ -n "$$MLFLOW_ARTIFACTS_DESTINATION" ] || { echo "make: set MLFLOW_BACKEND_STORE_URI=postgresql+psycopg2://USER@HOST:5432/DB (the password in PGPASSWORD) and MLFLOW_ARTIFACTS_DESTINATION=DIR-or-URI; see docs/guide/shared-store.md" >&2; exit 2; }
	$(BIN)/cnnops ui --host $(MLFLOW_HOST) --port $(MLFLOW_PORT)

clean: ## Remove the venv and tools (the state folder is kept).
	rm -rf $(VENV) $(TOOLS)
