# The two commands: `make run` and `make test`. Everything they need is installed here.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Re-install whenever pyproject.toml changes.
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml clients/python/pyproject.toml 2>/dev/null | cksum | cut -d' ' -f1)
# System packages the tests need, installed with apt when missing (as root).
APT_PACKAGES := rustc libstd-rust-dev-wasm32 redis-server chromium

.PHONY: run test install system-deps lint typecheck pytest smartmodules-check js-test loadtest bench clean

$(STAMP): pyproject.toml clients/python/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,loadtest]' -e clients/python
	@rm -f $(VENV)/.installed-*
	@touch $@

install: $(STAMP)

run: install
	@echo "Development token (user dev, organization dev, all scopes, 7 days):"
	@$(BIN)/agentmem-gateway token --user dev --org dev --scopes publish,subscribe,admin --ttl 7d
	@echo
	$(BIN)/agentmem-gateway serve

system-deps:
	@missing=""; for pkg in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$pkg 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$pkg"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "Installing system packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "Run as root (or install:$$missing)"; exit 1; fi; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

lint: install
	$(BIN)/ruff check gateway agents tests loadtest clients/python

typecheck: install
	$(BIN)/mypy
	$(BIN)/mypy --strict clients/python/src

pytest: install system-deps
	$(BIN)/pytest

# The committed SmartModules must be what their sources build to, byte for byte.
smartmodules-check: system-deps
	$(MAKE) -C smartmodules check

# The JavaScript SDK's tests start real gateways from the project's .venv.
js-test: install
	cd clients/js && npm ci --no-audit --no-fund --loglevel=error && npm test

test: install system-deps lint typecheck smartmodules-check pytest js-test

LOADTEST_HOST ?= http://127.0.0.1:8080
LOADTEST_SHAPE ?= steady
LOADTEST_USERS ?= 20
LOADTEST_DURATION ?= 60s

# Locust against a running gateway (make run); reports in loadtest/results/.
loadtest: install
	$(BIN)/python -m loadtest.locust.run --host $(LOADTEST_HOST) --shape $(LOADTEST_SHAPE) \
	  --users $(LOADTEST_USERS) --duration $(LOADTEST_DURATION)

# Every benchmark in turn; tables on stdout, JSON in loadtest/results/bench-<time>/.
# With TARGET (make bench TARGET=http://127.0.0.1:8080): the network benchmarks against
# that running gateway (make run), beside bare ceiling servers started here.
TARGET ?=
bench: install
	$(BIN)/python -m loadtest.bench $(if $(TARGET),--target $(TARGET))

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
