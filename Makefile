# Everyday commands. `make up` and `make test` prepare the machine first (bootstrap is idempotent and
# takes well under a second when everything is in place).
SHELL := /bin/bash
VENV := .venv
BERTH := $(VENV)/bin/berth
PYTEST_ARGS ?=
# `make test` runs the suite in this many processes (pytest-xdist), each a run of its own (tests/conftest.py).
TEST_PROCESSES ?= 2
BENCH_ARGS ?=

.PHONY: help bootstrap up down status test lint format bench bench-images bench-containers bench-services bench-lb chaos soak

help:
	@echo "make up        prepare this machine, then start the local platform (gateway on :8080)"
	@echo "make down      stop what 'make up' started (PostgreSQL, Redis and Docker keep running)"
	@echo "make status    what runs where"
	@echo "make test      prepare this machine, then run every test in 2 processes (PYTEST_ARGS='-k auth' to narrow, TEST_PROCESSES=1)"
	@echo "make chaos     only the chaos suite: kill each part of a private platform under traffic (~3 min)"
	@echo "make lint      ruff, ruff format --check, mypy, and the AWS template linters"
	@echo "make format    apply ruff's formatting and safe fixes"
	@echo "make bench     what the local gateway adds over the function served directly (BENCH_ARGS=...)"
	@echo "make bench-images  complete->ready of a ~55 MB image against a bare docker load"
	@echo "make bench-containers  create request -> first HTTP answer against a bare docker run"
	@echo "make bench-services  a 3-replica service's deploy against 3 bare docker runs; rolling deploy to first v2 request"
	@echo "make bench-lb  lb-runtime against nginx (HTTP) and HAProxy (TCP), pinned to one core each"
	@echo "make soak      20 users of mixed API calls for 60 s: throughput, p99, errors, RSS growth (BENCH_ARGS=...)"

bootstrap:
	bash infrastructure/local/bootstrap.sh

up: bootstrap
	$(BERTH) local up

down:
	$(BERTH) local down

status:
	$(BERTH) local status

# --durations: the slowest tests close every run's report (the suite's time budget is watched from CI's log).
test: bootstrap
	$(VENV)/bin/pytest -n $(TEST_PROCESSES) --dist loadfile --durations=15 $(PYTEST_ARGS)

# Part of `make test` too (tests/chaos); this runs it alone.
chaos: bootstrap
	$(VENV)/bin/pytest tests/chaos $(PYTEST_ARGS)

lint:
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports --no-cache
	if [ -f infrastructure/tools.sh ]; then bash infrastructure/tools.sh; fi

format:
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench:
	$(VENV)/bin/python bench/gateway_overhead.py $(BENCH_ARGS)

bench-images:
	$(VENV)/bin/python bench/image_processing.py $(BENCH_ARGS)

bench-containers:
	$(VENV)/bin/python bench/container_start.py $(BENCH_ARGS)

bench-services:
	$(VENV)/bin/python bench/service_deploy.py $(BENCH_ARGS)

bench-lb:
	$(VENV)/bin/python bench/lb_proxy.py $(BENCH_ARGS)

soak:
	$(VENV)/bin/python bench/soak.py $(BENCH_ARGS)
