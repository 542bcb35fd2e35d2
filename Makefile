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
PORT ?= 3000
# The web-page tests drive Debian's Chromium (Playwright never downloads a browser here).
CHROMIUM := /usr/bin/chromium
# Graphviz's dot draws the model diagrams of the error analysis (the tests check one is drawn).
DOT := /usr/bin/dot
STATE := $(or $(CNNOPS_HOME),.cnnops)

.PHONY: install run test lint compile ui serve bento browser clean

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(BIN)/cnnops: $(UV) pyproject.toml uv.lock
	$(UV) sync --locked --compile-bytecode --python $(PYTHON)
	@touch $@

install: $(BIN)/cnnops ## Create .venv with the locked dependencies.

run: install ## Run the whole pipeline on the demo dataset (override: make run ARGS="--data DIR").
	$(BIN)/cnnops run $(ARGS)

test: install $(CHROMIUM) $(DOT) ## Run the test suite.
	$(BIN)/python -m pytest $(PYTEST_ARGS)

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "make: the page tests need Debian's chromium at $(CHROMIUM)"; exit 1; }
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq
	$(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium

$(DOT):
	@command -v apt-get >/dev/null || { echo "make: the analysis tests need Graphviz's dot at $(DOT)"; exit 1; }
	$(if $(filter 0,$(shell id -u)),,sudo) apt-get update -qq
	$(if $(filter 0,$(shell id -u)),,sudo) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends graphviz

browser: $(CHROMIUM) ## Install Debian's Chromium for the web-page tests.

serve: install ## Serve the champion over HTTP on 127.0.0.1:$(PORT) (override: make serve ARGS="--model-name NAME").
	$(BIN)/cnnops serve --port $(PORT) $(ARGS)

bento: install ## Build a Bento pinned to the current champion (override: make bento ARGS="--version 3").
	$(BIN)/cnnops bento $(ARGS)

lint: install
	$(BIN)/ruff check .

compile: install ## Write the pipeline's IR YAML.
	$(BIN)/cnnops compile --out pipelines/cnnops-train.yaml

ui: install ## MLflow UI on 127.0.0.1, one light worker.
	mkdir -p $(STATE)/mlflow/artifacts
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow server --host 127.0.0.1 --port $(MLFLOW_PORT) \
	  --workers 1 --backend-store-uri sqlite:///$(abspath $(STATE))/mlflow/mlflow.db \
	  --default-artifact-root $(abspath $(STATE))/mlflow/artifacts

clean: ## Remove the venv and tools (the state folder is kept).
	rm -rf $(VENV) $(TOOLS)
