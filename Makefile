# Two commands on a fresh machine: `make run` and `make test`. Both create .venv from the
# lock file first (uv, pinned, bootstrapped into .tools/ with the system python3): `make run`
# installs the pipeline alone; `make test` (and `make airflow`) add the `airflow` and `dev`
# groups. Nothing is ever removed by the smaller install (--inexact), so the order is free.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
UV_VERSION := 0.13.9
PYTHON ?= python3.11
UV := .tools/bin/uv
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
# Stage commands (`python -m tasks.x`, `dvc`) resolve to the project's environment.
export PATH := $(BIN):$(PATH)
export UV_PYTHON_DOWNLOADS := never
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install install-dev run test test-fast lint bench clean

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

# The one install command; docker/ images run the same line with their groups added.
$(VENV)/.installed: uv.lock pyproject.toml | $(UV)
	$(UV) sync --frozen --python $(PYTHON) --inexact --no-default-groups
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(UV) sync --frozen --python $(PYTHON) --inexact --no-default-groups --group dev
	touch $@

$(VENV)/.installed-gpu: $(VENV)/.installed  # TensorFlow's CUDA/cuDNN wheels (Linux x86_64)
	$(UV) sync --frozen --python $(PYTHON) --inexact --no-default-groups --group gpu
	touch $@

run: install  ## the whole pipeline on the embedded dataset, no network (the sweep: `dvc repro sweep`)
	dvc repro publish
	python -m tasks.summary

.PHONY: study
study: install  ## the unfreezing sweep (train.sweep) trained, scored and recommended; the report re-rendered
	dvc repro study
	if [ -f reports/report.html ]; then python -m tasks.report; fi

test: install-dev  ## every test; servers they need are started on 127.0.0.1 by the tests
	python -m pytest

test-fast: install-dev
	python -m pytest -m "not slow"

lint: install-dev
	ruff check .
	ruff format --check .

bench: install-dev  ## benchmark tables (printed, not asserted)
	python -m benchmarks

.PHONY: gpu-smoke
gpu-smoke: $(VENV)/.installed-gpu  ## on a GPU: every training stage at 224 px + the report in minutes; fails on silent fp32/XLA/NaN
	python -m benchmarks._gpu_smoke
	python -m benchmarks gpu

AIRFLOW_PORT ?= 8080
.PHONY: airflow
airflow: install-dev  ## Airflow on 127.0.0.1 with the project's DAGs (SQLite, LocalExecutor); prints the login
	python dags/resnet_retrain/standalone.py --port $(AIRFLOW_PORT)

clean:
	rm -rf data/raw data/prepared features models metrics plots figures reports runs
