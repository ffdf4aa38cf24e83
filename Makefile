# The two entry points of the README. Both create .venv and install everything they need on a fresh machine.
VENV := .venv
PYTHON := $(VENV)/bin/python
PORT ?= 8501

.PHONY: run test lint bench install install-test

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	# torch is pinned to the CPU wheel; installing it first keeps pip from considering CUDA builds.
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PYTHON) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

run: install
	$(VENV)/bin/streamlit run app/main.py --server.headless true --server.port $(PORT)

test: install-test
	$(VENV)/bin/ruff check core app sample_models tests bench
	$(VENV)/bin/ruff format --check core app sample_models tests bench
	$(PYTHON) -m pytest

bench: install
	$(PYTHON) bench/live_prune.py
