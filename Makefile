# Set-up and test entry points.  `make test` is the one command that takes a
# fresh machine to a finished test run; `make demo` runs the gateway with its
# demo backends.  Every step leaves a stamp under $(VENV), so a second run
# with nothing changed does no network work.

PYTHON ?= python3
VENV ?= .venv
LISTEN ?= tcp:8080
PYTEST_ARGS ?=

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DELETE_ON_ERROR:
.SUFFIXES:

BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check
# Plain `pip install -e .` hides twisted/plugins/ from twistd (setuptools'
# import-hook finder); strict mode installs a tree of links instead.
EDITABLE := --config-settings editable_mode=strict
WHEELHOUSE := $(VENV)/wheelhouse
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

# Strict editable mode links the files that exist at install time: a module
# added later needs a re-install.  This list changes only when one is.
PACKAGE_DIRS := $(wildcard gateway plugins twisted)
INSTALLED := $(VENV)/.installed
SOURCES := $(VENV)/.sources
# Build the plugin caches (twisted.plugins' and the gateway's own plugins
# package) as the owner of the environment, from outside the checkout (-I),
# so that twistd never has to write them.
PLUGIN_CACHES := import importlib.util; from twisted.plugin import IPlugin, getPlugins; \
    [list(getPlugins(IPlugin, importlib.import_module(p))) for p in ("twisted.plugins", "plugins") \
     if importlib.util.find_spec(p)]
# The wheelhouse is complete for one set of requirements: key it on them.
WHEELHOUSE_STAMP := $(WHEELHOUSE)/.complete-$(shell cat setup.cfg pyproject.toml | sha256sum | cut -c1-16)

.PHONY: test demo clean redis-server browser-deps haproxy node-deps FORCE

# Node's Socket.IO 4 server and client for tests/integration/test_socketio.py,
# from its package-lock.json (npm ci), again only when the lock file changes.
SOCKETIO_NODE := tests/integration/socketio
SOCKETIO_NODE_STAMP := $(SOCKETIO_NODE)/node_modules/.installed

test: redis-server browser-deps haproxy node-deps $(SOCKETIO_NODE_STAMP) $(INSTALLED) $(WHEELHOUSE_STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: $(INSTALLED)
	$(BIN)/twistd -n gateway --demo --listen $(LISTEN)

redis-server:
	@if ! command -v redis-server >/dev/null; then \
	    $(SUDO) apt-get update && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server; \
	fi

# The cluster tests put a real HAProxy (round robin, no stickiness) in front
# of several gateway nodes (tests/integration/test_cluster.py).
haproxy:
	@if ! { command -v haproxy || test -x /usr/sbin/haproxy; } >/dev/null; then \
	    $(SUDO) apt-get update && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y haproxy; \
	fi

# The browser tests drive Debian's headless Chromium through a real nginx
# (tests/integration/test_browser.py); nothing downloads a browser of its own.
browser-deps:
	@if ! command -v chromium >/dev/null || ! { command -v nginx || test -x /usr/sbin/nginx; } >/dev/null; then \
	    $(SUDO) apt-get update && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver nginx; \
	fi

node-deps:
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
	    $(SUDO) apt-get update && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs npm; \
	fi

$(SOCKETIO_NODE_STAMP): $(SOCKETIO_NODE)/package-lock.json | node-deps
	cd $(SOCKETIO_NODE) && npm ci --no-audit --no-fund
	touch $@

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(SOURCES): FORCE | $(BIN)/python
	@find $(PACKAGE_DIRS) -name __pycache__ -prune -o -type f \
	    \( -name '*.py' -o -name py.typed -o -path 'gateway/static/*' \) -print \
	    | LC_ALL=C sort >$@.new
	@if cmp -s $@.new $@; then rm $@.new; else mv $@.new $@; fi

$(INSTALLED): setup.cfg pyproject.toml $(SOURCES) | $(BIN)/python
	$(PIP) install $(EDITABLE) -e '.[test]'
	$(BIN)/python -I -c '$(PLUGIN_CACHES)'
	touch $@

# Wheels of every runtime requirement (transitively) and of the build
# requirements, for the tests that install the project offline.
$(WHEELHOUSE_STAMP): | $(INSTALLED)
	rm -rf $(WHEELHOUSE)
	$(BIN)/python -I -c 'import importlib.metadata as m; print("\n".join(r for r in m.requires("txgateway") if "extra ==" not in r))' >$(VENV)/runtime-requirements.txt
	$(PIP) wheel --wheel-dir $(WHEELHOUSE) -r $(VENV)/runtime-requirements.txt setuptools wheel
	touch $@

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache $(SOCKETIO_NODE)/node_modules
	find . -path ./.git -prune -o \( -name dropin.cache -o -name '*.pyc' \) -type f -print0 | xargs -0 rm -f
	find . -path ./.git -prune -o -name __pycache__ -type d -print0 | xargs -0 rm -rf
