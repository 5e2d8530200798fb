# Skyloom developer targets. Everything runs from .venv, created on first use.
#
#   make venv       create .venv and install skyloom[dev] (again only when pyproject.toml changes)
#   make lint       ruff and mypy
#   make test       lint, then the whole test suite
#   make test-fast  lint, then the suite without @pytest.mark.slow tests
#   make demo       the portfolio example on a local stack with two workers
#   make synth      the CDK app -> cdk.out with the pinned CDK CLI (no Docker, no AWS account)
#   make cfn-lint   synth, then cfn-lint on the template (errors fail; CDK's W3005 is noise)
#   make sbom       CycloneDX JSON SBOM of .venv's Python packages -> build/sbom/
#   make audit      pip-audit of .venv against PyPI's vulnerability data (SKIPPED when offline)
#   make test-localstack  tests/e2e again with LocalStack (host mode, no Docker) instead of moto
#   make bench-peers  Skyloom side by side with Celery and Dask (benchmarks/README.md; not in `make test`)
#   make clean      caches, build metadata and local run directories (keeps .venv)
#   make distclean  clean, and remove .venv

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Written after a successful install; older than pyproject.toml means "install again".
STAMP  := $(VENV)/.skyloom-installed

.PHONY: venv graphviz lint test test-fast demo clean distclean synth cfn-lint

venv: $(STAMP)
	@command -v dot >/dev/null 2>&1 || $(MAKE) --no-print-directory graphviz

# `skyloom graph --format svg/png` (and its test) need Graphviz's dot: installed where we may.
graphviz:
	@if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  apt-get install -y -qq --no-install-recommends graphviz >/dev/null 2>&1 \
	  || { apt-get update -qq && apt-get install -y -qq --no-install-recommends graphviz >/dev/null; }; \
	else echo "note: skyloom graph SVG/PNG needs Graphviz (dot); install it with your package manager"; fi

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
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

# ---- supply chain: SBOM and dependency audit (security/supply_chain.py; tools pinned in
# security/tools.txt, installed in build/security-tools; accepted findings in security/audit-ignore.toml)
.PHONY: sbom audit

sbom: venv
	$(BIN)/python security/supply_chain.py sbom

audit: venv
	$(BIN)/python security/supply_chain.py audit
# ---- end of supply chain

# ---- LocalStack (localstack/README.md): the end-to-end suite on LocalStack instead of moto.
# LocalStack's Python runtime in host mode (no Docker engine needed) from its own Python 3.13 venv;
# localstack/install.sh also pre-seeds DynamoDB Local and kinesis-mock (pinned in localstack/
# requirements.txt, package.json, package-lock.json). localstack/run-host.sh starts LocalStack on a
# free loopback port with its files under /tmp, waits for it, runs the tests and stops it by PID.
#   make test-localstack                  tests/e2e (LOCALSTACK_TESTS=... to choose, LOCALSTACK_PORT=...)
#   make localstack-venv                  only build .localstack-venv
.PHONY: localstack-venv test-localstack

LOCALSTACK_PYTHON ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13) python3.13)
LOCALSTACK_VENV   := .localstack-venv
LOCALSTACK_STAMP  := $(LOCALSTACK_VENV)/.skyloom-installed
LOCALSTACK_TESTS  ?= tests/e2e

localstack-venv: $(LOCALSTACK_STAMP)

$(LOCALSTACK_STAMP): localstack/requirements.txt localstack/package.json localstack/package-lock.json localstack/install.sh
	localstack/install.sh $(LOCALSTACK_VENV) $(LOCALSTACK_PYTHON)
	touch $@

test-localstack: venv localstack-venv
	localstack/run-host.sh --venv $(LOCALSTACK_VENV) -- $(BIN)/python -m pytest -q -p no:cacheprovider $(LOCALSTACK_TESTS)
# ---- end of LocalStack

# ---- side by side with the peers (benchmarks/README.md, "Side by side"): Skyloom's local stack,
# Celery on the same moto SQS with Redis results, and Dask, in one run. The peers get their own venvs
# (benchmarks/.peer-venv/, from benchmarks/peers/requirements-*.txt); redis-server comes from apt-get.
#   make bench-peers                                   1,000 and 10,000 tasks, latency, utilisation, tree sum
#   make bench-peers PEERS_ARGS="--quick"              small sizes (a few minutes)
#   make bench-peers PEERS_ARGS="--only throughput --tasks 1000"
.PHONY: bench-peers
PEERS_ARGS ?=

bench-peers: venv
	$(BIN)/python benchmarks/side_by_side.py $(PEERS_ARGS)
# ---- end of side by side

demo: venv
	$(BIN)/skyloom local run --workers 2 -- $(BIN)/python examples/portfolio.py

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache build dist *.egg-info sdk/*.egg-info cdk.out
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(LOCALSTACK_VENV)
