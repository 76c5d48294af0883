# Everything a fresh Debian/Ubuntu machine needs is installed by these targets:
# system packages (python3-venv, ffmpeg, redis-server, chromium for the web page's
# browser test) when missing, then a venv
# that is rebuilt only when pyproject.toml or requirements.lock change.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-$(shell cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PROMPT ?= a handwritten 7
PYTEST_ARGS ?=

.PHONY: help system-deps venv demo serve test test-fast lint fmt openapi model clean

help:
	@echo "make demo     run the service locally and render one animation (prints the video path last)"
	@echo "make serve    run the service on http://127.0.0.1:8000 until Ctrl-C"
	@echo "make test     run the whole test suite (unit, integration, end-to-end)"
	@echo "make lint     ruff + mypy + openapi.yaml drift check"
	@echo "make openapi  regenerate openapi.yaml from the app"
	@echo "make model    train the digits demo model into models/digits (long: see digits/train.py)"

system-deps:
	@missing=""; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	$(PYTHON) -c "import venv, ensurepip" 2>/dev/null || missing="$$missing python3-venv python3-pip"; \
	if [ -n "$$missing" ]; then \
	  if ! command -v apt-get >/dev/null; then \
	    echo "error: please install:$$missing (no apt-get on this machine)"; exit 1; fi; \
	  echo "installing system packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

$(STAMP): pyproject.toml requirements.lock
	@$(MAKE) --no-print-directory system-deps
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.stamp-*
	@touch $@

venv: $(STAMP)

demo: venv
	@$(MAKE) --no-print-directory system-deps
	@$(PY) scripts/demo.py --prompt "$(PROMPT)"

serve: venv
	@$(MAKE) --no-print-directory system-deps
	@$(PY) scripts/serve.py

test: venv
	@$(MAKE) --no-print-directory system-deps
	$(PY) -m pytest $(PYTEST_ARGS)

test-fast: venv
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

lint: venv
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy .

fmt: venv
	$(PY) -m ruff format .
	$(PY) -m ruff check --fix .

openapi: venv
	$(PY) -m api openapi > openapi.yaml

model: venv
	$(PY) -m digits.train models/digits

clean:
	rm -rf .cache out data .pytest_cache .mypy_cache .ruff_cache
