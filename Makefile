# Skyloom developer targets. Everything runs from .venv, created on first use.
#
#   make venv       create .venv and install skyloom[dev] (again only when pyproject.toml changes)
#   make lint       ruff and mypy
#   make test       lint, then the whole test suite
#   make test-fast  lint, then the suite without @pytest.mark.slow tests
#   make demo       the portfolio example on a local stack with two workers
#   make synth      the CDK app -> cdk.out with the pinned CDK CLI (no Docker, no AWS account)
#   make cfn-lint   synth, then cfn-lint on the template (errors fail; CDK's W3005 is noise)
#   make clean      caches, build metadata and local run directories (keeps .venv)
#   make distclean  clean, and remove .venv

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Written after a successful install; older than pyproject.toml means "install again".
STAMP  := $(VENV)/.skyloom-installed

.PHONY: venv lint test test-fast demo clean distclean synth cfn-lint

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

test: lint cfn-lint
	$(BIN)/python -m pytest -q

test-fast: lint
	$(BIN)/python -m pytest -q -m "not slow"

# The pinned CDK CLI (package.json: aws-cdk 2.x; the 3.x CLI cannot read aws-cdk-lib 2.x assemblies).
CDK     := node_modules/.bin/cdk
CDK_ENV := JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=20 CDK_DISABLE_VERSION_CHECK=1 CDK_CLI_NOTICES=false

$(CDK): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

synth: venv $(CDK)
	$(CDK_ENV) $(CDK) synth --quiet --no-notices --no-version-reporting

cfn-lint: synth
	$(BIN)/cfn-lint --ignore-checks W3005 -- cdk.out/*.template.json

demo: venv
	$(BIN)/skyloom local run --workers 2 -- $(BIN)/python examples/portfolio.py

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info sdk/*.egg-info cdk.out
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
