# Skyloom developer targets. Everything runs from .venv, created on first use.
#
#   make venv       create .venv and install skyloom[dev] (again only when pyproject.toml changes)
#   make lint       ruff and mypy
#   make test       lint, then the whole test suite
#   make test-fast  lint, then the suite without @pytest.mark.slow tests
#   make demo       the portfolio example on a local stack with two workers
#   make clean      caches, build metadata and local run directories (keeps .venv)
#   make distclean  clean, and remove .venv

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Written after a successful install; older than pyproject.toml means "install again".
STAMP  := $(VENV)/.skyloom-installed

.PHONY: venv lint test test-fast demo clean distclean

venv: $(STAMP)

# aioboto3 goes first: its exact aiobotocore/botocore pins, resolved alone, save pip a long
# backtrack over botocore versions (see EMULATORS.md). The pin itself lives in pyproject.toml.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	spec="$$(grep -o 'aioboto3==[0-9.]*' pyproject.toml | head -n 1)"; \
	  if [ -n "$$spec" ]; then $(BIN)/python -m pip install --quiet "$$spec"; fi
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

lint: venv
	$(BIN)/ruff check .
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -q

test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow"

demo: venv
	$(BIN)/skyloom local run --workers 2 -- $(BIN)/python examples/portfolio.py

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info sdk/*.egg-info
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
