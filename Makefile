# Two commands do all set-up on a bare machine: `make quickstart` and `make test`.
# Both create .venv inside the repo and install what they need.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
HOME_DIR := .agentwharf
PORT   ?= 8710
STAMP  := $(VENV)/.installed

CHROMIUM := /usr/bin/chromium
WRK      := /usr/bin/wrk
NGINX    := /usr/sbin/nginx
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install quickstart stop test test-unit test-integration bench clean postgresql

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "agentwharf needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[server,test]'
	@# The editable install compiles nothing of src/; every platform, worker and test process would
	@# compile it again where PYTHONDONTWRITEBYTECODE is set (as in many CI images).
	$(PY) -m compileall -q src
	@touch $(STAMP)

install: $(STAMP)

# The browser test drives Debian's Chromium with Playwright (which never downloads a browser).
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq chromium

# The PostgreSQL configuration's tests (and the writer benchmark) start a throwaway cluster with
# this machine's initdb/postgres, which Debian keeps in /usr/lib/postgresql/<version>/bin.
postgresql:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 || { \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }

# The serving benchmark drives every system with wrk, from Debian's packages.
$(WRK):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq wrk

## Start the platform in the background, deploy the guide's EchoAgent, query it three ways.
quickstart: install
	$(PY) scripts/quickstart.py --home $(HOME_DIR) --port $(PORT)

## Stop the platform started by quickstart.
stop:
	@if [ -x $(VENV)/bin/agentwharf ]; then $(VENV)/bin/agentwharf down --home $(HOME_DIR); else echo "nothing to stop"; fi

# Gateway processes are tested (and benchmarked) behind nginx, as README shows them deployed.
$(NGINX):
	$(SUDO) apt-get update -qq
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light

# Two processes (pytest-xdist, each test file whole in one): the suite waits on real servers
# far more than it computes, so two halve its time on two cores.
test: install $(CHROMIUM) postgresql $(NGINX)
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile

test-unit: install
	$(PY) -m pytest -q tests/unit

test-integration: install $(CHROMIUM) postgresql
	$(PY) -m pytest -q tests/integration

bench: install $(WRK) postgresql $(NGINX)
	$(PY) benchmarks/run.py

clean: stop
	rm -rf $(VENV) $(HOME_DIR) .pytest_cache
