# Customer segmentation on Spark. `make` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
CONFIG ?= conf/local.yaml
# Extra job arguments, e.g. make run ARGS="--set training.k_max=8"
ARGS ?=

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: check-java
check-java:
	@command -v java >/dev/null 2>&1 || { \
	  echo "ERROR: 'java' was not found on PATH. Spark needs Java 17: install it (Debian: apt-get install openjdk-17-jre-headless) or set JAVA_HOME and put \$$JAVA_HOME/bin on PATH." >&2; exit 1; }

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "ERROR: $(PYTHON) not found: Python 3.11+ is required." >&2; exit 1; }
	$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "ERROR: Python 3.11+ is required")'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

.PHONY: setup
setup: check-java $(STAMP) ## Create .venv and install the package with its pinned dependency ranges

.PHONY: run
run: setup ## Run the whole pipeline locally: sample data (if absent), features, training, assignment
	$(PY) jobs/generate_events.py --config $(CONFIG) --if-absent $(ARGS)
	$(PY) jobs/build_features.py --config $(CONFIG) $(ARGS)
	$(PY) jobs/train_segments.py --config $(CONFIG) $(ARGS)

.PHONY: test
test: setup ## Run the test suite (unit, integration and slow tests)
	$(PY) -m pytest $(PYTEST_ARGS)

.PHONY: lint
lint: setup ## ruff check, ruff format --check, mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

.PHONY: format
format: setup ## Apply ruff's fixes and formatting
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

.PHONY: mlflow-ui
mlflow-ui: setup ## Open the MLflow UI on the local store (http://127.0.0.1:5000)
	$(VENV)/bin/mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

.PHONY: clean
clean: ## Remove generated tables and the local MLflow store (keeps .venv)
	rm -rf warehouse mlflow.db mlartifacts spark-warehouse metastore_db derby.log

.PHONY: distclean
distclean: clean ## Also remove .venv
	rm -rf $(VENV)
