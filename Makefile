# The two commands: `make dev` runs taskq on this machine, `make test` runs the suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
WORKERS ?= 2
# The client package is installed beside the plugins: the command line talks to the API with it.
PLUGINS := -e clients/python -e plugins/taskq_fibonacci -e plugins/taskq_email -e plugins/taskq_webhook \
	-e plugins/taskq_export
SOURCES := pyproject.toml clients/python/pyproject.toml plugins/taskq_fibonacci/pyproject.toml \
	plugins/taskq_email/pyproject.toml plugins/taskq_webhook/pyproject.toml \
	plugins/taskq_export/pyproject.toml

.PHONY: dev test lint clean chaos

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "taskq needs Python 3.11 or newer (PYTHON=$(PYTHON))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.dev: $(BIN)/python $(SOURCES)
	$(BIN)/pip install --quiet -e '.[embedded]' $(PLUGINS)
	@touch $@

$(VENV)/.test: $(BIN)/python $(SOURCES) $(VENV)/.browser
	$(BIN)/pip install --quiet -e '.[embedded,test]' $(PLUGINS)
	@# The PgBouncer test (tests/test_pgbouncer.py) runs Debian's pgbouncer; as root we install it.
	@command -v pgbouncer >/dev/null || test -x /usr/sbin/pgbouncer || \
		{ test "$$(id -u)" = 0 && { apt-get install -y -qq pgbouncer || \
		  { apt-get update -qq && apt-get install -y -qq pgbouncer; }; } >/dev/null; } || \
		echo "pgbouncer is missing (apt-get install pgbouncer); tests/test_pgbouncer.py will fail"
	@touch $@

# The dashboard's tests drive Debian's chromium: installed with apt-get when missing (as root).
$(VENV)/.browser: scripts/install-browser.sh | $(BIN)/python
	scripts/install-browser.sh
	@touch $@

# Bytecode for the editable source trees, as pip writes it for an installed package: where
# PYTHONDONTWRITEBYTECODE is set (this machine sets it), every process would compile taskq again
# (some 50 ms of each worker's start). Up-to-date files are skipped.
COMPILE := $(BIN)/python -m compileall -q -j 0 taskq_core plugins clients/python

dev: $(VENV)/.dev
	@$(COMPILE) >/dev/null
	$(BIN)/taskq dev --port $(PORT) --workers $(WORKERS)

# Two pytest processes (pytest-xdist), each on servers of its own (tests/conftest.py), a test file
# at a time each: most of a test's time goes to waiting on the processes it starts, so two share
# two cores well. Files go out in collection order, not largest first (xdist's default): the
# longest tests are files of one test each, which would otherwise all come last.
# PYTEST_WORKERS=0 runs the suite in one process.
PYTEST_WORKERS ?= 2
test: $(VENV)/.test lint
	@$(COMPILE) >/dev/null
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder

# `make chaos SEED=13 DURATION=600`: the randomized chaos run (docs/reliability.md); the same seed
# replays the same fault schedule. `make test` runs 40 s of it with seed 1.
SEED ?= $(shell date +%s)
DURATION ?= 600
chaos: $(VENV)/.test
	TASKQ_TEST_CHAOS_SEED=$(SEED) TASKQ_TEST_CHAOS_SECONDS=$(DURATION) \
		$(BIN)/python -m pytest tests/worker/test_chaos.py -q -p no:cacheprovider

lint: $(VENV)/.test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .mypy_cache

# `make bench`: taskq against Celery, RQ, Dramatiq and procrastinate (bench/README.md), in a venv
# of its own; e.g. make bench BENCH_ARGS="--quick" or BENCH_ARGS="--peers taskq,rq --runs 1".
BENCH_ARGS ?=
.PHONY: bench
bench:
	$(PYTHON) -m bench.venv
	.venv-bench/bin/python -m bench $(BENCH_ARGS)
