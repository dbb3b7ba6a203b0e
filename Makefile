# The two commands of the README: `make run` (everything up, on 127.0.0.1) and `make test` (lint, types, tests).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck pytest bench bench-self clean

# the peer benchmark harness lives outside the repository (see bench/peers.py); override on the command line
PEERS ?= ../shared/peers
PEERS_VENV ?= $(or $(shell printenv PEERS_VENV),/tmp/peers-venv)
BENCH_ARGS ?=

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(PY) -m devstack run

test: $(STAMP)
	$(PY) -m devstack prepare
	$(MAKE) lint typecheck pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

# Much of the suite's time is spent waiting (on our subprocesses, the emulator's latencies, sweeper intervals), so
# it runs in more xdist workers than cores (3 on 2 cores; 4 starved the tests that time polls of CPU). Each worker
# has its own private Redis, emulator and S3 server; every test its own database, Redis DB, vhost and ports.
# The chaos tests keep to one worker (tests/conftest.py).
PYTEST_WORKERS ?= 3
pytest: $(STAMP)
	$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadgroup

# imagejobs and the idiomatic peer in one run against the same upstream: ratios for B1, B9, B4, B3, commits
bench: $(STAMP)
	PEERS=$(PEERS) PEERS_VENV=$(PEERS_VENV) $(PY) bench/peers.py --out bench/last-run.json $(BENCH_ARGS)

# our own figures without the peer: the poll policy simulation and the whole-stack throughput
bench-self: $(STAMP)
	$(PY) bench/poll_policy.py
	$(PY) bench/throughput.py --jobs 300 --repeats 3

clean:
	rm -rf $(VENV) var .mypy_cache .ruff_cache .pytest_cache
