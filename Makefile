# marker-ls-plugin: set up, run, test. `make start` and `make test` are the README's two commands.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
CONSTRAINTS := requirements/constraints.txt
SURYA := surya-ocr==0.17.1
PORT ?= 8080
LS_TESTS_VENV ?= .venv-ls-tests
LS_TESTS_PY := $(LS_TESTS_VENV)/bin/python
LS_TESTS_REQUIREMENTS := requirements/label-studio-tests.txt

.PHONY: start install test test-deps test-label-studio lint worker clean

start: install  ## Label Studio with the plugin on http://localhost:$(PORT) (SQLite, no Redis needed)
	$(VENV)/bin/marker-ls start --port $(PORT)

install: $(VENV)/.installed

# surya-ocr 0.17.1 pins Pillow<11 and opencv 4.11; Label Studio 1.23 pins Pillow>=12.3 and opencv 4.12.
# surya is installed without its pins on purpose (its real run-time needs are listed in setup.py);
# tests/ocr/test_surya_runtime.py proves it runs on Label Studio's Pillow and opencv.
$(VENV)/.installed: setup.py $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c $(CONSTRAINTS) torch==2.13.0
	$(PIP) install -q -c $(CONSTRAINTS) -e '.[dev]'
	$(PIP) install -q --no-deps $(SURYA)
	$(PY) -c "import surya, label_studio, marker_ls_plugin"
	touch $@

# Chromium for the browser tests, from Debian's packages (Playwright's own browser download is not used).
test-deps:
	@command -v chromium >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

test: install test-deps  ## the whole suite (PostgreSQL and Redis on their default ports when present)
	$(PY) -m pytest

test-label-studio: $(LS_TESTS_VENV)/.installed  ## Label Studio's own tests, with its settings and with the plugin's
	$(LS_TESTS_PY) tests/mls_label_studio_suite.py

# Its own environment: Label Studio's suite needs pytest 7-era plugins, ours pytest>=8. The plugin goes in
# without its dependencies: everything its settings, apps and urls import comes with Label Studio (importing
# the app never imports torch), so no torch or surya here.
$(LS_TESTS_VENV)/.installed: setup.py $(CONSTRAINTS) $(LS_TESTS_REQUIREMENTS)
	test -x $(LS_TESTS_PY) || $(PYTHON) -m venv $(LS_TESTS_VENV)
	$(LS_TESTS_PY) -m pip install -q --upgrade pip
	$(LS_TESTS_PY) -m pip install -q -c $(CONSTRAINTS) -r $(LS_TESTS_REQUIREMENTS)
	$(LS_TESTS_PY) -m pip install -q --no-deps -e .
	$(LS_TESTS_PY) -c "import label_studio, marker_ls_plugin, pytest_django, pytest_env, moto"
	touch $@

lint: install
	$(VENV)/bin/ruff check marker_ls_plugin tests bench

worker: install  ## an RQ worker; needs MARKER_LS_REDIS_URL
	$(VENV)/bin/marker-ls worker

clean:
	rm -rf $(VENV) $(LS_TESTS_VENV) build dist *.egg-info
