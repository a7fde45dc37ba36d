# vecflow: `make run` runs the pipeline on embedded defaults, `make test` runs the tests.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
REQ_HASH := $(shell cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-16)
EDITABLE := $(VENV)/.vecflow-editable
STAMP := $(VENV)/.installed-$(REQ_HASH)
FASHION_MNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
BQ_VENV := .venv-bq
BQ_STAMP := $(BQ_VENV)/.installed-$(shell sha256sum requirements-bqemulator.txt | cut -c1-16)
DUCKDB_EXTENSIONS := $(HOME)/.duckdb/extensions/v1.5.5/linux_amd64
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

export VECFLOW_HOME ?= $(CURDIR)/.data
export AIRFLOW__CORE__LOAD_EXAMPLES := False

# two quarters of planted trends in 59 daily runs (Mar 4 .. May 1: each quarter covered past the
# trend tests' 30% minimum; a daily run costs ~6.7 s, most of it Airflow's and Great Expectations'
# fixed cost, so more runs would pass the 10-minute budget of make run: 61 took 9 min 57 s, 91 13 min 20 s)
SEED ?= 7
DAYS ?= 59
IMAGES_PER_DAY ?= 100
START_DATE ?= 2026-03-04
TRENDS ?= include/trends/default.json
CATALOG_ARGS = --seed $(SEED) --days $(DAYS) --images-per-day $(IMAGES_PER_DAY) --start-date $(START_DATE) --trends $(TRENDS)

.PHONY: setup run test test-fast lint format airflow bench catalog clean screenshot

# The venv is rebuilt only when requirements.txt changes. torch goes first: it is the CPU build
# on disk, and installing it first stops anything from pulling a multi-GB CUDA build.
$(STAMP): requirements.txt requirements-dev.txt
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q "$$(grep -E '^torch==' requirements.txt)"
	$(VENV)/bin/pip install -q -r requirements.txt -r requirements-dev.txt
	touch $@

# vecflow itself (plugins/vecflow and include/models/vecflow_model, pyproject.toml), editable: code
# changes need no reinstall, a changed pyproject.toml reinstalls it.
$(EDITABLE): $(STAMP) pyproject.toml
	$(VENV)/bin/pip install -q --no-deps -e .
	touch $@

$(FASHION_MNIST):
	$(SUDO) apt-get install -y -q dataset-fashion-mnist || { $(SUDO) apt-get update -q && $(SUDO) apt-get install -y -q dataset-fashion-mnist; }

# The BigQuery emulator for the integration tests. Its DuckDB extensions come from PyPI and are put
# where DuckDB looks, or it would try to download them and exit.
$(BQ_STAMP): requirements-bqemulator.txt
	rm -rf $(BQ_VENV)
	$(PYTHON) -m venv $(BQ_VENV)
	$(BQ_VENV)/bin/pip install -q -r requirements-bqemulator.txt
	mkdir -p $(DUCKDB_EXTENSIONS)
	for ext in spatial avro; do \
	  cp $(BQ_VENV)/lib/python3*/site-packages/duckdb_extension_$$ext/extensions/v1.5.5/$$ext.duckdb_extension $(DUCKDB_EXTENSIONS)/; \
	done
	touch $@

setup: $(STAMP) $(EDITABLE) $(FASHION_MNIST)

catalog: setup
	$(VENV)/bin/python -m vecflow.demo generate-catalog $(CATALOG_ARGS)

run: setup
	$(VENV)/bin/python -m vecflow.demo run $(CATALOG_ARGS)

# every tier: unit, integration (servers on loopback), e2e (DAG runs), scheduler (airflow standalone)
test: setup $(BQ_STAMP) lint
	$(VENV)/bin/python -m pytest -q tests

# the unit tier only (under a minute)
test-fast: setup
	$(VENV)/bin/python -m pytest -q -m unit tests

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup
	$(VENV)/bin/pip install -q -r requirements-bench.txt
	$(VENV)/bin/python bench/embed.py --mode cpu
	$(VENV)/bin/python bench/daily.py
	$(VENV)/bin/python bench/warehouse.py
	$(VENV)/bin/python bench/trends.py
	$(VENV)/bin/python bench/retag.py
	$(VENV)/bin/python bench/index.py
	$(VENV)/bin/python bench/quality.py
	$(VENV)/bin/python bench/fetch.py
	$(VENV)/bin/python bench/search.py

# Airflow UI on http://127.0.0.1:8080 with these DAGs (login printed by standalone), and the loopback
# search server on $(SEARCH_PORT). Each runs in its own process group so Ctrl-C stops every child.
SEARCH_PORT ?= 9200
airflow: setup
	mkdir -p $(VECFLOW_HOME)/airflow
	setsid $(VENV)/bin/python -m vecflow.demo search-server --port $(SEARCH_PORT) & es=$$!; \
	AIRFLOW_CONN_ELASTICSEARCH_DEFAULT=elasticsearch://127.0.0.1:$(SEARCH_PORT) \
	AIRFLOW_HOME=$(VECFLOW_HOME)/airflow AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__PLUGINS_FOLDER=$(CURDIR)/plugins AIRFLOW__CORE__PARALLELISM=4 \
	AIRFLOW__API__HOST=127.0.0.1 PATH=$(CURDIR)/$(VENV)/bin:$$PATH \
	setsid $(VENV)/bin/airflow standalone & pgid=$$!; \
	trap 'kill -TERM -- -$$pgid -$$es' INT TERM; wait $$pgid

# docs/run_report.png: the newest run report of `make run`, through Debian's headless Chromium
screenshot:
	command -v chromium-headless-shell >/dev/null || $(SUDO) apt-get install -y -q chromium-headless-shell
	report=$$(ls -d $(VECFLOW_HOME)/reports/2*/ | tail -1)index.html; \
	chromium-headless-shell --no-sandbox --headless --disable-gpu --hide-scrollbars --window-size=1120,3700 \
	  --screenshot=docs/run_report.png "file://$$report"

clean:
	rm -rf $(VECFLOW_HOME)
