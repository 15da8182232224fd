# The README's two commands. Both install into the Python that runs them
# (pip install -e is a no-op when the requirements are already satisfied).
PYTHON ?= python3

.PHONY: demo test lint bench

demo:
	$(PYTHON) -m pip install -q -e .
	$(PYTHON) -m fedsim scenario scenarios/mobile.yaml

test:
	$(PYTHON) -m pip install -q -e ".[dev,ray]"
	$(PYTHON) -m pytest

lint:
	$(PYTHON) -m ruff check fedsim tests

bench:
	$(PYTHON) -m fedsim bench --json
