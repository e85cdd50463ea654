# Meterline developer commands. `make dev` and `make test` install what they need first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NPM_STAMP := node_modules/.installed
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20
export CDK_DISABLE_CLI_TELEMETRY := true
export CDK_DISABLE_VERSION_CHECK := true

.PHONY: install dev test bench-local test-unit test-integration test-infra test-e2e bench lint format synth deploy destroy clean

$(STAMP): pyproject.toml clients/python/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[local,infra,test]"
	$(BIN)/pip install --quiet -e "clients/python[openai,powertools]"
	touch $(STAMP)

$(NPM_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $(NPM_STAMP)

install: $(STAMP) $(NPM_STAMP)

dev: $(STAMP) $(NPM_STAMP)
	$(BIN)/meterline dev --host 127.0.0.1 --port 8888

test: $(STAMP) $(NPM_STAMP)
	$(BIN)/python -m pytest -n 2

# The tiers: the domain alone (no AWS, no engine); the handlers on moto and DynamoDB Local; the
# synthesized CDK template; `meterline dev` over HTTP.
test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit tests/client

test-integration: $(STAMP) $(NPM_STAMP)
	$(BIN)/python -m pytest -n 2 tests/integration

test-infra: $(STAMP)
	$(BIN)/python -m pytest -n 2 tests/infra

test-e2e: $(STAMP) $(NPM_STAMP)
	$(BIN)/python -m pytest -n 2 tests/e2e

BENCHMARKS := bench/ingest_cpu.py bench/cold_import.py bench/processor_cpu.py bench/storage_cost.py \
              bench/entitlement_value.py

bench: $(STAMP)
	@for script in $(BENCHMARKS); do $(BIN)/python $$script || exit 1; done

# `meterline dev` with 100,000 events (about half an hour: it waits for late events to be folded).
bench-local: $(STAMP) $(NPM_STAMP)
	$(BIN)/python bench/local_stack.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format .

synth: $(STAMP) $(NPM_STAMP)
	npx --no-install cdk synth --no-notices --quiet $(CDK_ARGS)

deploy: $(STAMP) $(NPM_STAMP)
	npx --no-install cdk deploy --no-notices $(CDK_ARGS)

destroy: $(STAMP) $(NPM_STAMP)
	npx --no-install cdk destroy --no-notices $(CDK_ARGS)

clean:
	rm -rf $(VENV) node_modules cdk.out .pytest_cache .hypothesis
