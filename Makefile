# Two commands: `make run` (the pipeline on the quick profile) and `make test` (unit tests +
# every notebook on the smoke profile, validated with nbval). Both create the environment
# from uv.lock when it is missing or stale.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
UV_VERSION := 0.13.9
TOOLS := .tools
UV := $(TOOLS)/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.clxai-synced

PROFILE ?= quick
DATASET ?= cifar10
SHARED_ARCHIVE := $(wildcard ../shared/data/cifar10_jpeg.tar.gz)
# Data: CLXAI_DATA_SOURCE if set; else the shared JPEG CIFAR-10 beside the clone; else the official download.
export CLXAI_DATA_SOURCE ?= $(if $(SHARED_ARCHIVE),$(abspath $(SHARED_ARCHIVE)),torchvision)

NOTEBOOKS := 00_data 01_train_ce 02_train_supcon 03_train_triplet 04_linear_probe
RUN_OUT := outputs/notebooks
SMOKE_ROOT := outputs/smoke
PAPERMILL := $(VENV)/bin/papermill --kernel python3 --cwd notebooks --no-progress-bar --log-level WARNING

.PHONY: help env run test unit-tests smoke-notebooks nbval clean-smoke

help:
	@echo "make run   - create the environment if needed, then run notebooks $(NOTEBOOKS) (PROFILE=$(PROFILE)) into $(RUN_OUT)/"
	@echo "make test  - create the environment if needed, run unit tests and every notebook on the smoke profile (nbval)"
	@echo "make env   - only create/update the environment (.venv from uv.lock)"

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python 3.11
	$(PY) -c "import torch, torchvision, pytorch_grad_cam, quantus, cv2, skimage, seaborn, papermill, nbval; print('environment ok: torch', torch.__version__, 'torchvision', torchvision.__version__, 'quantus', quantus.__version__)" \
	  || { echo "ERROR: the environment in $(VENV) cannot import its packages (see above); delete $(VENV) and rerun"; exit 1; }
	touch $(STAMP)

env: $(STAMP)

run: $(STAMP)
	@echo "data source: $$CLXAI_DATA_SOURCE"
	@mkdir -p $(RUN_OUT)
	@for nb in $(NOTEBOOKS); do \
	  echo "== $$nb (profile=$(PROFILE))"; start=$$(date +%s); \
	  $(PAPERMILL) notebooks/$$nb.ipynb $(RUN_OUT)/$$nb.ipynb -p profile $(PROFILE) -p dataset $(DATASET); \
	  echo "   $$nb done in $$(( $$(date +%s) - start )) s"; \
	done

test: unit-tests nbval

unit-tests: $(STAMP)
	$(PY) -m pytest tests -q

# Smoke runs write to their own outputs root, so they never overwrite the quick run's artefacts.
smoke-notebooks: $(STAMP)
	@rm -rf $(SMOKE_ROOT) && mkdir -p $(SMOKE_ROOT)/notebooks
	@src="$$CLXAI_DATA_SOURCE"; \
	if [ "$$src" = torchvision ]; then \
	  echo "no local CIFAR-10: the smoke notebooks use a generated tiny image folder"; \
	  $(PY) -c "from clxai_utils.data import write_synthetic_imagefolder as w; w('$(SMOKE_ROOT)/synthetic')"; \
	  src="$(abspath $(SMOKE_ROOT))/synthetic"; \
	fi; \
	for nb in $(NOTEBOOKS); do \
	  echo "== $$nb (profile=smoke, data=$$src)"; \
	  params="-p profile smoke"; [ $$nb = 00_data ] && params="$$params -p data_source $$src"; \
	  CLXAI_OUTPUTS=$(abspath $(SMOKE_ROOT)) $(PAPERMILL) notebooks/$$nb.ipynb $(SMOKE_ROOT)/notebooks/$$nb.ipynb $$params; \
	done

# nbval re-executes each smoke-executed notebook (with its injected parameters) and compares
# the cells marked NBVAL_CHECK_OUTPUT with the papermill run: the smoke path must be deterministic.
nbval: smoke-notebooks
	CLXAI_OUTPUTS=$(abspath $(SMOKE_ROOT)) $(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env \
	  --nbval-sanitize-with tests/nbval_sanitize.cfg $(SMOKE_ROOT)/notebooks
