# The front door. `make help` lists the targets.
# The venv is rebuilt when pyproject.toml changes and stamped only after pip succeeds.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# LiteLLM's proxy lives in a venv of its own (its pins clash with the test tools'); the
# gateway tests start it from there. See docs/gateway.md.
LITELLM_VENV  := .venv-litellm
LITELLM_STAMP := $(LITELLM_VENV)/.installed-stamp
HOST   ?= 127.0.0.1
PORT   ?= 5000

.DEFAULT_GOAL := help
.PHONY: help venv run serve-prod test test-fast lint typecheck bench bench-deps docs-cli screenshots clean clean-instance

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-12s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

$(LITELLM_STAMP): pyproject.toml
	@test -x $(LITELLM_VENV)/bin/python || $(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LITELLM_VENV)/bin/python -m pip install --quiet -e '.[litellm]'
	@touch $(LITELLM_STAMP)

venv: $(STAMP) ## create .venv and install the package with its test tools

run: export WALLET_BASE_URL ?= http://$(HOST):$(PORT)
run: $(STAMP) ## bootstrap (venv, migrations, demo data), serve on http://$(HOST):$(PORT) with a job worker beside it
	$(BIN)/wallet db upgrade
	$(BIN)/wallet demo --if-empty
	@# The worker runs in the background; Ctrl-C (or the server ending) stops it too.
	@$(BIN)/wallet worker & worker=$$!; \
	trap 'kill -TERM $$worker 2>/dev/null; wait $$worker 2>/dev/null' EXIT; \
	trap 'exit 130' INT TERM; \
	$(BIN)/wallet serve --host $(HOST) --port $(PORT)

serve-prod: $(STAMP) ## gunicorn (deploy/gunicorn.conf.py) on PostgreSQL at $(HOST):$(PORT), behind a balancer: docs/deployment.md
	@test -n "$$WALLET_DATABASE_URL" || { echo "make serve-prod: set WALLET_DATABASE_URL=postgresql+psycopg://user@host/dbname (instances share one PostgreSQL; make run is the SQLite default)" >&2; exit 2; }
	$(BIN)/gunicorn -c deploy/gunicorn.conf.py --bind $(HOST):$(PORT)

test: $(STAMP) $(LITELLM_STAMP) ## bootstrap and run the whole test suite (PostgreSQL too when WALLET_TEST_POSTGRES_URL is set)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: $(STAMP) ## the suite without the browser and multi-process tests
	$(BIN)/python -m pytest -m "not browser and not slow" $(PYTEST_ARGS)

lint: $(STAMP) ## ruff, mypy --strict on the core, and the layer contract (lint-imports)
	$(BIN)/ruff check wallet tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports --no-cache --no-logo

typecheck: lint ## alias of lint

bench: $(STAMP) $(LITELLM_STAMP) bench-deps ## every benchmark, then each figure with its goal (BENCH_ARGS="--quick", "--only honour"; docs/benchmarks.md)
	$(BIN)/python bench/run_all.py $(BENCH_ARGS)

bench-deps: ## wrk and HAProxy (Debian packages) for the HTTP benchmarks, installed when missing
	@missing=""; for tool in wrk haproxy; do \
	  command -v $$tool >/dev/null 2>&1 || test -x /usr/sbin/$$tool || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
	    echo "installing$$missing (Debian packages)"; apt-get update -qq && \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else echo "make bench: install$$missing first (Debian: sudo apt-get install -y$$missing)" >&2; exit 2; fi; fi

docs-cli: $(STAMP) ## regenerate docs/cli.md from the commands' own help (a test keeps them equal)
	$(BIN)/python -m wallet.cli.reference > docs/cli.md

screenshots: $(STAMP) ## refresh docs/images/ from the browser tests
	WALLET_SCREENSHOTS=docs/images $(BIN)/python -m pytest -m browser $(PYTEST_ARGS)

clean: ## remove the venv and caches (keeps the local database, secrets and keys)
	rm -rf $(VENV) $(LITELLM_VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis *.egg-info

clean-instance: ## DELETE the local database, generated secrets and the keystore's private keys
	rm -rf instance
	find keys -mindepth 2 \( -name '*.key.pem' -o -name '*.jwk.json' \) -delete 2>/dev/null || true
	find keys -mindepth 1 -type d -empty -delete 2>/dev/null || true
