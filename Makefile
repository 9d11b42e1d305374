# ReadRoom — the two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
PYTEST_ARGS ?=
# make test's xdist worker processes (docs/testing.md). Most slow tests wait on subprocesses and
# sockets, so more workers than cores pay; TEST_WORKERS=0 runs the suite in this one process.
TEST_WORKERS ?= 3

.PHONY: demo test screenshots lint format migrate venv ohif clean-demo bench-hl7 bench-ingest bench-worklist bench-stroke-alert bench-delivery

# Marker files: reinstall only when pyproject.toml changes.
$(VENV)/.python-ok:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "ReadRoom needs Python 3.11 or newer (found %s)" % sys.version.split()[0])'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.python-ok
	$(BIN)/pip install --quiet -e .
	@touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install --quiet -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed-dev

## ohif: the OHIF viewer, pinned in imaging/ohif.py, installed with npm into vendor/ohif (docs/viewer.md).
## A no-op once installed; without npm it says so and the built-in viewer is used.
OHIF_DIR ?= $(or $(READROOM_OHIF_DIR),vendor/ohif)
ohif: $(VENV)/.installed
	@if command -v npm >/dev/null 2>&1; then \
	  $(MAKE) -s --no-print-directory $(OHIF_DIR)/installed.json; \
	else \
	  echo "OHIF viewer not installed (no npm): the built-in viewer is used. To get OHIF: apt-get install npm, then make ohif"; \
	fi

$(OHIF_DIR)/installed.json: imaging/ohif.py
	READROOM_OHIF_DIR=$(OHIF_DIR) $(BIN)/python manage.py ohif_install
	@touch $@

## demo: fresh machine → migrated SQLite, demo data, the whole system in one process
demo: $(VENV)/.installed ohif
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py load_demo
	$(BIN)/python manage.py run_embedded --host $(HOST) --port $(PORT) --simulate

## test: the whole suite (SQLite by default; .ci/run sets DATABASE_URL/REDIS_URL for PostgreSQL + Redis)
test: $(VENV)/.installed-dev ohif
	$(BIN)/python manage.py makemigrations --check --dry-run
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder $(PYTEST_ARGS)

## screenshots: the README's pictures from a fresh demo in Chromium (docs/screenshots/*.png)
screenshots: $(VENV)/.installed-dev ohif
	$(BIN)/python docs/screenshots/take.py

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

migrate: $(VENV)/.installed
	$(BIN)/python manage.py migrate --noinput

## clean-demo: forget the embedded data directory (database, generated keys, stored images)
clean-demo:
	rm -rf var

## benchmarks (not tests): PostgreSQL and Redis on 127.0.0.1; figures are printed
bench-hl7: $(VENV)/.installed-dev
	$(BIN)/python bench/hl7/run.py

bench-ingest: $(VENV)/.installed-dev
	$(BIN)/python bench/ingest/run.py

bench-worklist: $(VENV)/.installed-dev
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/worklist/run.py

bench-stroke-alert: $(VENV)/.installed-dev
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/stroke_alert/run.py

bench-delivery: $(VENV)/.installed-dev
	PYTHONPATH=$(CURDIR) $(BIN)/python bench/delivery/run.py
