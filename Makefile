# Dockyard — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the tests and benchmarks drive (real clients and the reference registry)
DEB_PACKAGES := skopeo podman buildah runc uidmap fuse-overlayfs umoci busybox-static \
	docker-registry wrk apache2-utils postgresql nginx prometheus chromium
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install run test lint typecheck pytest bench deps clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

# An editable install leaves src/ without bytecode, and where PYTHONDONTWRITEBYTECODE is set
# (as on CI's machines) every process compiles every module it imports: each of the suite's
# hundreds of servers and commands paid ~0.6 s of CPU for it. compileall writes what a
# wheel's install would (only what changed since: a second run takes a fraction of a second).
install: $(STAMP) ## create .venv and install Dockyard (editable) with its dev extras
	@$(BIN)/python -m compileall -q src

run: install ## start the registry on the embedded defaults (127.0.0.1:5000, data in ./var/dockyard)
	$(BIN)/dockyard serve

deps: ## apt-get the Debian packages the tests use, when missing
	@missing=$$(for p in $(DEB_PACKAGES); do dpkg-query -W -f='$${db:Status-Status}\n' $$p 2>/dev/null | grep -q '^installed$$' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages: $$missing"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
	    -o DPkg::Lock::Timeout=300 --no-install-recommends $$missing; \
	fi

lint: install ## ruff
	$(BIN)/ruff check src tests bench

typecheck: install ## mypy --strict on src/
	$(BIN)/mypy

pytest: install deps ## the test suite only (and its 30 slowest tests, to keep CI's time in view)
	$(BIN)/pytest --durations=30

test: install deps lint typecheck pytest ## everything CI runs: install, lint, types, tests

bench: install deps ## Dockyard vs the reference registry, side by side; web UI page times
	$(BIN)/python -m bench
	$(BIN)/python -m bench.ui_pages

clean: ## remove the virtualenv and local data
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
