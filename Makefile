# The README's two commands. Both install into the Python that runs them, with
# the exact versions of constraints.txt (pip install -e is quick when they are
# already there).
PYTHON ?= python3
PIP = $(PYTHON) -m pip install -q -c constraints.txt

.PHONY: demo test install install-dev lint bench

install:
	$(PIP) -e .

install-dev:
	$(PIP) -e ".[dev,ray]"

demo: install
	$(PYTHON) -m fedsim scenario scenarios/mobile.yaml

test: install-dev
	$(PYTHON) -m pytest

lint:
	$(PYTHON) -m ruff check fedsim tests

bench:
	$(PYTHON) -m fedsim bench --json
