# qdeck — every target creates what it needs (.venv/ in the repository root, brokers for tests).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.qdeck-installed
PYTEST_ARGS ?=

.PHONY: setup test check demo brokers brokers-down bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "qdeck needs Python >= 3.11")'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev,inference]"
	@touch $@

# The whole suite against real brokers: tests/brokers.py finds or starts them once, for both pytest workers (the
# suite mostly waits on brokers, so two workers halve its time on two cores), and stops what it started. Tests
# marked `alone` (timing held against queueing theory) then run by themselves: a second worker would take the core
# their deterministic server needs. Exit 5 (no test selected, e.g. PYTEST_ARGS names one file) is not a failure.
# compileall first: where PYTHONDONTWRITEBYTECODE is set (this CI machine) nothing compiled on import is kept, and
# each of the suite's ~1,000 qdeck and worker processes compiled qdeck's modules again (0.1 s each).
PYTEST_WORKERS ?= 2
test: setup
	$(PY) -m compileall -q -j 0 console loadgen probes tests bench
	$(PY) -m tests.brokers run -- sh -c '\
	  $(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup -m "not alone" $(PYTEST_ARGS); rc=$$?; \
	  [ $$rc -eq 0 ] || [ $$rc -eq 5 ] || exit $$rc; \
	  $(PY) -m pytest -m alone $(PYTEST_ARGS); rc2=$$?; \
	  [ $$rc2 -eq 5 ] && [ $$rc -eq 0 ] && exit 0; [ $$rc2 -eq 5 ] && exit $$rc; exit $$rc2'

check: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy probes loadgen console
	$(PY) -m pytest -q -p no:cacheprovider tests/test_import_hygiene.py

demo: setup
	$(PY) -m console.demo $(ARGS)

brokers: setup
	$(PY) -m tests.brokers up

brokers-down:
	$(PY) -m tests.brokers down

bench: setup
	$(PY) -m bench.probe_rabbitmq
	$(PY) -m bench.probe_lag
	$(PY) -m bench.worker_batching
	$(PY) -m bench.loadgen_ceiling
	$(PY) -m bench.llm_chunks
	$(PY) -m bench.rabbitmq_clients
	$(PY) -m bench.console_10k
	$(PY) -m bench.large_messages
	$(PY) -m bench.faults
	$(PY) -m bench.dlq_redis
	$(PY) -m bench.dlq_rabbitmq
	$(PY) -m bench.dlq_kafka
	$(PY) -m bench.dlq_faults

clean:
	rm -rf $(VENV) .brokers .pytest_cache .mypy_cache .ruff_cache *.egg-info
