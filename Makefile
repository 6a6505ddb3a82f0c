# HyperSDK security platform: the verbs are install, up, down, status, test, lint, bench.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PACKAGES := libs/contracts libs/kit libs/auditproof services/gateway services/identity services/policy \
            services/secrets services/exporter services/audit services/webhooks clients/hyperctl
STAMP := $(VENV)/.installed
# Debian packages: qemu-img; libvirt-python builds against libvirt-dev; the vSphere simulator of the
# tests builds from govmomi's Debian source with Go; wrk loads the gateway in `make bench`.
SYSTEM_PACKAGES := qemu-utils libvirt-dev pkg-config golang-go golang-github-vmware-govmomi-dev wrk

.PHONY: install up down status test test-unit test-integration lint bench clean

install: $(STAMP)

$(STAMP): requirements.lock requirements-dev.lock $(foreach p,$(PACKAGES),$(p)/pyproject.toml)
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -q >/dev/null; apt-get install -y -q $$missing >/dev/null; \
	  else echo "missing system packages: sudo apt-get install $$missing" >&2; exit 1; fi; fi
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip==26.3
	$(PY) -m pip install -q -r requirements.lock -r requirements-dev.lock
	$(PY) -m pip install -q --no-deps $(foreach p,$(PACKAGES),-e $(p))
	@touch $(STAMP)

up: install
	$(PY) tools/devstack.py up

down:
	@$(PY) tools/devstack.py down

status:
	@$(PY) tools/devstack.py status

test: install
	$(PY) -m pytest tests/unit tests/integration -q -p no:cacheprovider

test-unit: install
	$(PY) -m pytest tests/unit -q -p no:cacheprovider

test-integration: install
	$(PY) -m pytest tests/integration -q -p no:cacheprovider

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy libs/contracts/src libs/kit/src libs/auditproof/src services/*/src clients/*/src

bench: install
	$(PY) bench/run.py

clean:
	rm -rf $(VENV) build dist .pytest_cache .mypy_cache .ruff_cache
