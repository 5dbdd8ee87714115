# Every target creates or reuses .venv and installs what it needs, so a fresh machine with only
# Python 3 can run `make demo` and `make test` directly.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
DEV    := $(VENV)/.dev-installed
BENCHV := .venv-bench
BENCH  := $(BENCHV)/.bench-installed

.PHONY: demo test test-quick lint bench bench-postgres clean faketime chromium postgres integrations

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(DEV): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[dev,postgres,serve]'
	touch $@

demo: $(DEV)
	$(BIN)/sessiondb demo

test: $(DEV) faketime chromium postgres integrations
	$(BIN)/python -m pytest

# The edit-test loop: everything but the many-process stress and kill -9 tests.
test-quick: $(DEV) faketime chromium postgres
	$(BIN)/python -m pytest -m "not stress and not crash"

# libfaketime (Debian's package faketime) shifts the other side's clock in the channel's skew tests
# (tests/channel/test_channel_clocks.py). Installed here on a Debian machine as root; elsewhere
# those tests skip, except under CI=true, where a missing libfaketime fails them.
faketime:
	@command -v faketime >/dev/null 2>&1 || \
		(DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq faketime) || \
		echo "warning: could not install faketime (apt-get as root): clock-skew tests will skip"

# Debian's chromium for the viewer's browser tests (tests/serve/test_browser.py, driven by
# Playwright's Python package with executable_path: no browser download). Installed here on a
# Debian machine as root; elsewhere those tests skip, except under CI=true, where they fail.
chromium:
	@command -v chromium >/dev/null 2>&1 || \
		(DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) || \
		echo "warning: could not install chromium (apt-get as root): browser tests will skip"

# The local PostgreSQL 15 cluster the PostgreSQL tests use (tests/pg.py), started when it is down.
# Without it those tests skip, except under CI=true, where they fail.
# pgbouncer (Debian's package) is what the conformance suite's third run goes through.
postgres:
	@pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null || \
		pg_ctlcluster --skip-systemctl-redirect 15 main start 2>/dev/null || \
		echo "warning: could not start PostgreSQL 15 (pg_ctlcluster): PostgreSQL tests will skip"
	@command -v pgbouncer >/dev/null 2>&1 || test -x /usr/sbin/pgbouncer || \
		(DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer) || \
		echo "warning: could not install pgbouncer (apt-get as root): its run will skip"

lint: $(DEV)
	$(BIN)/ruff check sessiondb tests benchmarks integrations
	$(BIN)/ruff format --check sessiondb tests benchmarks integrations
	$(BIN)/mypy

# Peers (hermes-agent, openai-agents, langchain-community) live in their own environment: the
# package never requires them.
$(BENCHV)/bin/python:
	$(PYTHON) -m venv $(BENCHV)
	$(BENCHV)/bin/python -m pip install -q --upgrade pip

$(BENCH): pyproject.toml benchmarks/requirements.txt | $(BENCHV)/bin/python
	$(BENCHV)/bin/python -m pip install -q -e . -r benchmarks/requirements.txt
	touch $@

bench: $(BENCH)
	$(BENCHV)/bin/python -m benchmarks.run_all

# benchmarks/postgres.py needs the PostgreSQL server (make postgres) and its anchors (LangGraph,
# OpenAI Agents, ADK on the same server) in their own pinned environment; not part of `make bench`.
.venv-bench-pg/.installed: pyproject.toml benchmarks/requirements-postgres.txt
	$(PYTHON) -m venv .venv-bench-pg
	.venv-bench-pg/bin/python -m pip install -q --upgrade pip
	.venv-bench-pg/bin/python -m pip install -q -e '.[postgres]' -r benchmarks/requirements-postgres.txt
	touch $@

bench-postgres: .venv-bench-pg/.installed
	.venv-bench-pg/bin/python -m benchmarks.postgres $(ARGS)

# The frameworks' own test suites against sessiondb's adapters, then ours (integrations/tests/:
# several processes, killed writers, the SDKs' retries), each framework in its own environment
# from its pinned integrations/requirements-<name>.txt; the package never requires them.
FRAMEWORKS := openai-agents claude-agent-sdk langgraph google-adk

.venv-int-%/.installed: pyproject.toml integrations/requirements-%.txt
	$(PYTHON) -m venv .venv-int-$*
	.venv-int-$*/bin/python -m pip install -q --upgrade pip
	.venv-int-$*/bin/python -m pip install -q -e . -r integrations/requirements-$*.txt
	touch $@

integrations: $(foreach f,$(FRAMEWORKS),.venv-int-$(f)/.installed)
	@for f in $(FRAMEWORKS); do \
		.venv-int-$$f/bin/python -m integrations.run $$f || exit 1; \
		.venv-int-$$f/bin/python -m pytest -q -p no:cacheprovider -o addopts= -W ignore::pytest.PytestConfigWarning \
			integrations/tests/test_$$(echo $$f | tr - _).py || exit 1; \
	done

clean:
	rm -rf $(VENV) $(BENCHV) .venv-bench-pg .venv-int-* .integrations-cache .pytest_cache .mypy_cache .ruff_cache build *.egg-info
