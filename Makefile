# Everything a fresh Debian/Ubuntu machine needs is installed by these targets:
# system packages (python3-venv, ffmpeg, redis-server, chromium for the web page's
# browser test, the Noto Color Emoji font for the emoji model's training and tests) when missing, then a venv
# that is rebuilt only when pyproject.toml or requirements.lock change.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.stamp-$(shell cat pyproject.toml requirements.lock | sha256sum | cut -c1-16)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PROMPT ?= a rocket
PYTEST_ARGS ?=
DEMO_ARGS ?=
SERVE_ARGS ?=

.PHONY: help system-deps browser-deps emoji-font venv demo serve test test-fast lint fmt openapi model model-digits clean

help:
	@echo "make demo     run the service locally and render one animation (prints the video path last)"
	@echo "make serve    run the service on http://127.0.0.1:8000 until Ctrl-C"
	@echo "make test     run the whole test suite (unit, integration, end-to-end)"
	@echo "make lint     ruff + mypy (the openapi.yaml drift check is a test)"
	@echo "make openapi  regenerate openapi.yaml from the app"
	@echo "make model    train the emoji demo model into models/emoji (about an hour on 2 cores: see emoji/train.py)"
	@echo "make model-digits  train the small digits test model into models/digits (about 15 minutes)"

# ffmpeg, redis-server and venv support: what the service itself needs (demo, serve, test).
system-deps:
	@missing=""; \
	command -v ffmpeg >/dev/null || missing="$$missing ffmpeg"; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	$(PYTHON) -c "import venv, ensurepip" 2>/dev/null || missing="$$missing python3-venv python3-pip"; \
	[ -z "$$missing" ] && exit 0; \
	command -v apt-get >/dev/null || { echo "error: please install:$$missing (no apt-get on this machine)"; exit 1; }; \
	[ "$$(id -u)" = 0 ] || command -v sudo >/dev/null || { echo "error: installing$$missing needs root: run as root, or install sudo"; exit 1; }; \
	echo "installing system packages:$$missing"; \
	$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing

# Chromium, for the web page's browser test only: Debian's package is "chromium", Ubuntu's
# "chromium-browser" (a snap). Without one the browser test says what to do.
browser-deps:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || [ -n "$$STEPANIM_CHROMIUM" ] && exit 0; \
	command -v apt-get >/dev/null || { echo "warning: no Chromium and no apt-get: the browser test needs STEPANIM_CHROMIUM=/path/to/chrome"; exit 0; }; \
	echo "installing Chromium for the web page's browser test"; \
	$(SUDO) apt-get update -qq; \
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium 2>/dev/null \
	|| DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium-browser \
	|| echo "warning: could not install Chromium: set STEPANIM_CHROMIUM=/path/to/chrome (or STEPANIM_SKIP_BROWSER=1 to skip the browser test)"

# Google's Noto Color Emoji (SIL Open Font License 1.1): the emoji model's training data, and what
# its evaluation and quality test compare the frames with. Debian and Ubuntu: fonts-noto-color-emoji.
EMOJI_FONT_DIRS := /usr/share/fonts/truetype/noto /usr/share/fonts/noto /usr/share/fonts/google-noto-emoji
emoji-font:
	@for d in $(EMOJI_FONT_DIRS); do [ -f $$d/NotoColorEmoji.ttf ] && exit 0; done; \
	command -v apt-get >/dev/null || { echo "error: please install the Noto Color Emoji font (NotoColorEmoji.ttf; no apt-get on this machine)"; exit 1; }; \
	[ "$$(id -u)" = 0 ] || command -v sudo >/dev/null || { echo "error: installing fonts-noto-color-emoji needs root: run as root, or install sudo"; exit 1; }; \
	echo "installing system packages: fonts-noto-color-emoji"; \
	$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq fonts-noto-color-emoji

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
	@$(PY) -m scripts.demo --prompt "$(PROMPT)" $(DEMO_ARGS)

serve: venv
	@$(MAKE) --no-print-directory system-deps
	@$(PY) -m scripts.serve $(SERVE_ARGS)

test: venv
	@$(MAKE) --no-print-directory system-deps browser-deps emoji-font
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

# Seeded, so a rerun on the same machine and library versions gives the same model; a CUDA GPU is used when present.
model: venv
	@$(MAKE) --no-print-directory emoji-font
	nice -n 19 $(PY) -m emoji.train models/emoji

model-digits: venv
	$(PY) -m digits.train models/digits

clean:
	rm -rf .cache out data .pytest_cache .mypy_cache .ruff_cache
