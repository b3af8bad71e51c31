# Two entry points (README.md): `make demo` and `make test`. Each creates or refreshes .venv,
# installs the pinned dependencies and builds the native extension ahead of time; every step is
# incremental, so a second run only does what changed.
SHELL := /bin/bash
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python

# torch infers CUDA_HOME from nvcc's location; our toolkit lives in /usr/local/cuda.
export CUDA_HOME ?= $(if $(wildcard /usr/local/cuda/bin/nvcc),/usr/local/cuda,)
export NUMBA_CACHE_DIR ?= $(CURDIR)/.cache/numba

.PHONY: demo test test-fast build venv browser clean

$(VENV)/.deps-stamp: requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# The package itself, editable; the extension is built by the `build` step below.
	RETINA_FAST_NO_EXT=1 $(PY) -m pip install -q --no-deps --no-build-isolation -e .
	@touch $@

venv: $(VENV)/.deps-stamp

build: venv
	$(PY) setup.py -q build_ext --inplace

demo: build
	$(VENV)/bin/retina-fast demo

# The reader app's browser test drives Debian's Chromium (Playwright's own browser download cannot
# work offline); installed here when missing and we may (root with apt-get).
browser:
	@command -v chromium >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium is missing and cannot be installed here: the browser test will be skipped"; fi; }

test: build browser
	$(PY) -m pytest

# For contributors: everything but the minutes-long end-to-end runs (pytest marker `slow`).
test-fast: build
	$(PY) -m pytest -m "not slow"

clean:
	rm -rf build retina_fast/_C*.so
