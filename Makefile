# Customer segmentation on Spark. `make` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
CONFIG ?= conf/local.yaml
# Extra job arguments, e.g. make run ARGS="--set training.k_max=8"
ARGS ?=
# make run trains on the sample's last day (TRAIN_AS_OF), then scores AS_OF, a month later, with
# that model: two snapshots, so history, migration and drift have content. The sample's events
# end on 2025-12-31, so by AS_OF everyone has aged a month without activity (drift is flagged).
TRAIN_AS_OF ?= 2025-12-31
AS_OF ?= 2026-01-31
# The sample plants several identifiers per customer (cookies, devices, cards, emails) and the
# jobs stitch them into one customer key (identity.enabled null: only this sample). With your
# own events (input.events.path) it changes nothing. SAMPLE_IDENTITIES=false: the clean sample.
SAMPLE_IDENTITIES ?= true
SAMPLE := --set generator.identities=$(SAMPLE_IDENTITIES)

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
	$(PY) -m pip install --quiet -e '.[dev,docs]'
	@# The CDNOW sample (Fader & Hardie's published BG/NBD data) ships inside the lifetimes wheel
	@# (MIT): fetched, never installed, for the value tests (tests/test_value.py).
	$(PY) -m pip download --quiet --no-deps lifetimes==0.11.3 -d $(VENV)/wheels
	@echo "Resolving the Delta jars ($$($(PY) -m segmentation.runtime.session coordinates)) from Maven Central into the Ivy cache..."
	$(PY) -m segmentation.runtime.session resolve-jars > $(VENV)/delta-jars.log 2>&1 || { tail -40 $(VENV)/delta-jars.log >&2; exit 1; }
	@tail -1 $(VENV)/delta-jars.log
	@touch $(STAMP)

.PHONY: setup
setup: check-java $(STAMP) ## Create .venv, install the package and resolve the Delta jars once

# For machines without network: copy the resolved jars into DIR and set spark.delta_jars: [DIR].
.PHONY: delta-jars
delta-jars: setup ## Copy the Delta jars into DIR (for spark.delta_jars on an offline machine)
	@test -n "$(DIR)" || { echo "ERROR: give the target folder: make delta-jars DIR=/path" >&2; exit 1; }
	$(PY) -m segmentation.runtime.session resolve-jars --copy-to $(DIR) 2>/dev/null

.PHONY: run
run: setup ## Whole pipeline locally, in one Spark application: sample (if absent), identities, train on TRAIN_AS_OF, rules, score AS_OF, audiences
	$(PY) jobs/run_pipeline.py --config $(CONFIG) --train-as-of $(TRAIN_AS_OF) --score-as-of $(AS_OF) $(SAMPLE) $(ARGS)

.PHONY: identities
identities: setup ## Stitch identifiers into customer keys as of TRAIN_AS_OF and AS_OF (identity_map)
	$(PY) jobs/stitch_identities.py --config $(CONFIG) --as-of $(TRAIN_AS_OF) $(SAMPLE) $(ARGS)
	$(PY) jobs/stitch_identities.py --config $(CONFIG) --as-of $(AS_OF) $(SAMPLE) $(ARGS)

.PHONY: assign
assign: setup ## Score AS_OF with the @champion model: membership, history, migration, drift
	$(PY) jobs/assign_segments.py --config $(CONFIG) --as-of $(AS_OF) $(SAMPLE) $(ARGS)

.PHONY: rules
rules: setup ## RFM segments and B2B tiers of the customer_features snapshot of AS_OF
	$(PY) jobs/rule_segments.py --config $(CONFIG) --as-of $(AS_OF) $(SAMPLE) $(ARGS)

.PHONY: value
value: setup ## Customer value as of TRAIN_AS_OF: BG/NBD + Gamma-Gamma fitted, backtested, every customer scored
	$(PY) jobs/customer_value.py --config $(CONFIG) --as-of $(TRAIN_AS_OF) $(SAMPLE) $(ARGS)

.PHONY: attitudes
attitudes: setup ## Attitudinal segments (survey factors, attributes) as of TRAIN_AS_OF
	$(PY) jobs/train_attitudes.py --config $(CONFIG) --as-of $(TRAIN_AS_OF) $(SAMPLE) $(ARGS)

.PHONY: audiences
audiences: setup ## Build the configured audiences as of AS_OF: consent, suppression, holdout groups, audience_members (change feed)
	$(PY) jobs/build_audiences.py --config $(CONFIG) --as-of $(AS_OF) $(SAMPLE) $(ARGS)

.PHONY: measure
measure: setup ## Measure a campaign: lift per segment of AUDIENCE launched LAUNCH over DAYS days (campaign_results, HTML page)
	@test -n "$(AUDIENCE)" -a -n "$(LAUNCH)" || { echo "ERROR: give the campaign: make measure AUDIENCE=<name> LAUNCH=YYYY-MM-DD DAYS=30" >&2; exit 2; }
	$(PY) jobs/measure_campaign.py --config $(CONFIG) --audience $(AUDIENCE) --launch $(LAUNCH) --days $(or $(DAYS),30) $(SAMPLE) $(ARGS)

.PHONY: promote
promote: setup ## Move the @champion alias to model VERSION (default: the latest), logged in MLflow
	$(PY) jobs/promote_model.py --config $(CONFIG) $(if $(VERSION),--version $(VERSION)) $(ARGS)

# The report test opens the HTML report in Debian's chromium (apt-get: root, or sudo).
.PHONY: browser
browser: ## Install Debian's chromium (headless browser for the HTML report test) if missing
	@command -v chromium >/dev/null 2>&1 || { \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  echo "Installing Debian's chromium (apt-get) for the report test..."; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "ERROR: chromium could not be installed: run 'apt-get install chromium' as root." >&2; \
	  exit 1; }

# The dbt example (examples/dbt/) in its own environment, and DuckDB's delta extension
# installed from its PyPI wheel into .venv-dbt/duckdb-extensions (no download from DuckDB's
# extension server at run time).
DBT_VENV := .venv-dbt
DBT_STAMP := $(DBT_VENV)/.setup-stamp
$(DBT_STAMP): examples/dbt/requirements.txt
	$(PYTHON) -m venv $(DBT_VENV)
	$(DBT_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(DBT_VENV)/bin/python -m pip install --quiet -r examples/dbt/requirements.txt
	$(DBT_VENV)/bin/python -c 'import duckdb, duckdb_extension_delta, pathlib; \
	  ext = pathlib.Path(duckdb_extension_delta.__file__).parent / "extensions" / f"v{duckdb.__version__}" / "delta.duckdb_extension"; \
	  duckdb.connect(config={"extension_directory": "$(DBT_VENV)/duckdb-extensions"}).install_extension(str(ext))'
	@touch $(DBT_STAMP)

.PHONY: dbt-setup
dbt-setup: $(DBT_STAMP) ## Create .venv-dbt (dbt-duckdb and DuckDB's delta extension) for examples/dbt

.PHONY: dbt
dbt: dbt-setup ## Build the dbt example (examples/dbt) on the tables of storage.warehouse (WAREHOUSE=...)
	@test -d $(abspath $(or $(WAREHOUSE),warehouse))/segment_membership || { echo "ERROR: no segment_membership table under $(abspath $(or $(WAREHOUSE),warehouse)): run make run first, or give the job's storage.warehouse as WAREHOUSE=..." >&2; exit 2; }
	cd examples/dbt && SEGMENTATION_WAREHOUSE=$(abspath $(or $(WAREHOUSE),warehouse)) \
	  DUCKDB_EXTENSION_DIRECTORY=$(abspath $(DBT_VENV)/duckdb-extensions) \
	  $(abspath $(DBT_VENV))/bin/dbt build --profiles-dir .

.PHONY: test
test: setup browser dbt-setup ## Run the test suite (unit, integration and slow tests)
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

# The reference pages in docs/reference/ are generated from the code and conf/base.yaml's
# comments (committed; tests/test_docs.py fails when they are stale), then the site is built.
.PHONY: docs
docs: setup ## Regenerate docs/reference/ and build the MkDocs site into site/ (--strict)
	$(PY) -m tools.docs_reference
	$(VENV)/bin/mkdocs build --strict --site-dir site

# --- cluster (a real Spark standalone master + 2 workers and an MLflow server on 127.0.0.1) ---
SPARK_SUBMIT := $(VENV)/bin/spark-submit
PY_FILES := dist/segmentation.zip
SEG_MASTER_PORT ?= 7177
SEG_MLFLOW_PORT ?= 5001
export SEG_MASTER_PORT SEG_MLFLOW_PORT
CLUSTER_CONFIG ?= conf/cluster.yaml
# spark-submit would look for pyspark with the system python3: point it at the venv's.
SUBMIT = SPARK_HOME=$$($(PY) -m tools.devcluster spark-home) $(SPARK_SUBMIT) --master spark://127.0.0.1:$(SEG_MASTER_PORT) --py-files $(PY_FILES) \
	$$($(PY) -m tools.devcluster submit-conf)
CLUSTER_ARGS = --config $(CLUSTER_CONFIG) --set tracking.tracking_uri=http://127.0.0.1:$(SEG_MLFLOW_PORT) $(ARGS)

.PHONY: package
package: setup ## Build dist/segmentation.zip, the library shipped to executors with --py-files
	@mkdir -p dist
	rm -f $(PY_FILES)
	$(PY) -c 'import pathlib, zipfile; z = zipfile.ZipFile("$(PY_FILES)", "w", zipfile.ZIP_DEFLATED); [z.write(p) for p in sorted(pathlib.Path("segmentation").rglob("*.py"))]; z.close()'

.PHONY: cluster-up
cluster-up: setup ## Start a standalone master, 2 workers, a history server and an MLflow server
	$(PY) -m tools.devcluster up

.PHONY: cluster-down
cluster-down: ## Stop exactly what cluster-up started
	@if [ -x $(PY) ]; then $(PY) -m tools.devcluster down; fi

.PHONY: cluster-status
cluster-status: ## Show which dev cluster processes are running
	$(PY) -m tools.devcluster status

.PHONY: submit
submit: package cluster-up ## spark-submit generate, features, value, training, assignment and rules to the dev cluster
	$(SUBMIT) jobs/check_cluster.py $(CLUSTER_ARGS)
	$(SUBMIT) jobs/generate_events.py --if-absent $(CLUSTER_ARGS)
	$(SUBMIT) jobs/build_features.py $(CLUSTER_ARGS)
	$(SUBMIT) jobs/customer_value.py $(CLUSTER_ARGS)
	$(SUBMIT) jobs/train_segments.py $(CLUSTER_ARGS)
	$(SUBMIT) jobs/assign_segments.py --set assign.reuse_features=true $(CLUSTER_ARGS)
	$(SUBMIT) jobs/rule_segments.py $(CLUSTER_ARGS)

.PHONY: vacuum
vacuum: setup ## Delta VACUUM: list files of old versions and killed runs; APPLY=1 deletes them
	$(PY) jobs/maintain_tables.py --config $(CONFIG) $(if $(APPLY),--apply) $(ARGS)

.PHONY: optimize
optimize: setup ## Delta OPTIMIZE every table (compact small files), then list what VACUUM would delete
	$(PY) jobs/maintain_tables.py --config $(CONFIG) --optimize $(ARGS)

# Benchmark sizes (events; k/M suffixes). The 100M size is opt-in: SIZES=1M,10M,50M,100M.
SIZES ?= 1M,10M,50M
BENCH_DIR ?= /tmp/segmentation-bench
.PHONY: bench
bench: setup ## Spark stages vs DuckDB + scikit-learn, the customer-value stages and a one-day feature increment, on SIZES events; writes BENCHMARKS.md (QUICK=1: 1M, checks only)
	$(PY) -m pip install --quiet -e '.[bench]'
	$(PY) -m tools.bench $(if $(QUICK),--quick,--sizes $(SIZES)) --workdir $(BENCH_DIR)
	$(if $(QUICK),,$(PY) -m tools.bench_value --sizes $(SIZES) --workdir $(BENCH_DIR))
	$(if $(QUICK),,$(PY) -m tools.bench_incremental --sizes $(SIZES) --workdir $(BENCH_DIR))

.PHONY: upgrade-tables
upgrade-tables: setup ## Repartition membership/migration tables of an older release (once)
	$(PY) jobs/maintain_tables.py --config $(CONFIG) --upgrade $(ARGS)

# The store the training printed (tracking.tracking_uri), default the local one.
MLFLOW_URI ?= sqlite:///mlflow.db
.PHONY: mlflow-ui
mlflow-ui: setup ## Open the MLflow UI on the local store, or MLFLOW_URI (http://127.0.0.1:5000)
	$(VENV)/bin/mlflow ui --backend-store-uri $(MLFLOW_URI) --host 127.0.0.1 --port 5000

.PHONY: clean
clean: cluster-down ## Remove generated tables, the MLflow store, cluster state and the site (keeps .venv)
	rm -rf warehouse mlflow.db mlartifacts spark-warehouse metastore metastore_db derby.log .cluster dist site examples/dbt/target examples/dbt/logs

.PHONY: distclean
distclean: clean ## Also remove .venv and .venv-dbt
	rm -rf $(VENV) $(DBT_VENV)
