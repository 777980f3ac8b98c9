# Two commands on a fresh machine (Python, pip and gcc only):
#   make demo   builds a small model folder (ordinary and malicious files, generated in code) and scans it,
#               then admits models to the gateway (the malicious one refused), serves one, calls it with a key
#   make test   installs everything the tests need into .venv and runs them
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: demo test check lint typecheck install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python examples/make_demo.py demo
	$(BIN)/airlock scan demo; status=$$?; \
	  echo "airlock scan exit code: $$status (1 = malicious found, as expected)"; \
	  test $$status -eq 1 && test ! -e demo/PWNED && echo "demo/PWNED does not exist: no payload ran"
	$(BIN)/python examples/serve_demo.py demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff format --check src tests bench examples
	$(BIN)/ruff check src tests bench examples

typecheck: $(STAMP)
	$(BIN)/mypy

check: lint typecheck test

clean:
	rm -rf $(VENV) demo
