# dataset_kit: every set-up step lives here, so a fresh machine needs only `make demo` / `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: install demo test lint typecheck docs unit bench bench-stores clean azurite

# Azurite (Azure Blob emulator) for tests/store/test_azure.py. Pinned: 3.36+ needs node >= 21;
# keep in sync with AZURITE_VERSION in dataset_kit/testing/azurite.py.
AZURITE_VERSION := 3.35.0
AZURITE_DIR := .cache/azurite
AZURITE_BIN := $(AZURITE_DIR)/node_modules/.bin/azurite-blob

# A virtual environment with the package and every test/benchmark dependency.
# uv installs in seconds; --compile-bytecode matters because this machine kind sets
# PYTHONDONTWRITEBYTECODE=1 (imports are 3-4x slower without .pyc files).
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@$(VENV)/bin/python -m pip install -q --disable-pip-version-check uv 2>&1 | grep -v "is ignored" || true
	$(VENV)/bin/uv pip install -q --compile-bytecode --python $(PY) -e ".[test]"
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

demo: install
	$(PY) -m dataset_kit.demo --store demo-data

lint: install
	$(VENV)/bin/ruff check dataset_kit tests benchmarks
	$(VENV)/bin/ruff format --check dataset_kit tests benchmarks

typecheck: install
	$(VENV)/bin/mypy

docs: install
	$(VENV)/bin/mkdocs build --strict --quiet --site-dir build/site

$(AZURITE_BIN):
	@mkdir -p $(AZURITE_DIR)
	npm install --prefix $(AZURITE_DIR) --no-audit --no-fund --loglevel=error azurite@$(AZURITE_VERSION)

azurite: $(AZURITE_BIN)

unit: install azurite
	$(PY) -m pytest -n 2 -p no:cacheprovider $(PYTEST_ARGS)

test: lint typecheck docs unit

bench: install
	$(PY) -m benchmarks.run $(BENCH_ARGS)

bench-stores: install azurite
	$(PY) -m benchmarks.stores $(BENCH_ARGS)

clean:
	rm -rf $(VENV) demo-data build .pytest_cache .mypy_cache .ruff_cache

# The reliability suite with soak figures (DK_SOAK=1: more processes, seconds, seeds and
# hypothesis examples; see dataset_kit/testing/soak.py and docs/reliability.md). Runs the
# tests one after the other with -s, so every test prints its figures line.
# Single figures: make soak SOAK_ENV="DK_GC_RACE_SECONDS=600 DK_FUZZ_EXAMPLES=5000".
.PHONY: soak
soak: install azurite
	env DK_SOAK=1 $(SOAK_ENV) $(PY) -m pytest -s -q -p no:cacheprovider tests/reliability $(PYTEST_ARGS)
