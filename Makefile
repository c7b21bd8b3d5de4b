# Two commands: `make run` (the pipeline on the quick profile) and `make test` (lint and type checks,
# unit tests, the multi-process and submitit tests, every notebook on the smoke profile as JupyterLab runs it, the committed notebooks
# validated with nbval, and the quick run's numbers against the pinned reference).
# Both create the environment from uv.lock when it is missing or stale.

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
SHARED_MASKS := $(wildcard ../shared/data/realmask32.tar.gz)
# Data: CLXAI_DATA_SOURCE if set; else the shared JPEG CIFAR-10 beside the clone; else the official download.
export CLXAI_DATA_SOURCE ?= $(if $(SHARED_ARCHIVE),$(abspath $(SHARED_ARCHIVE)),torchvision)
# CIFAR-10's real photographs with object masks (coherence beside the mosaics): CLXAI_MASK_SOURCE if set; else the
# shared realmask32 beside the clone; else none (06 then says that part is skipped).
export CLXAI_MASK_SOURCE ?= $(if $(and $(SHARED_MASKS),$(filter cifar10,$(DATASET))),$(abspath $(SHARED_MASKS)),)

# The notebook that reads every run, from the one notebook list (clxai_utils/core/notebooks.py).
REPORT_NB = $(shell $(PY) -c 'from clxai_utils.core.notebooks import REPORT_NOTEBOOK as n; print(n)')
SEEDS ?= 1 2
RUNS := outputs/runs
REPORT := outputs/report
RUN_ID = $(DATASET)-$(PROFILE)-seed0
SMOKE_ROOT := outputs/smoke
PAPERMILL := $(PY) -m clxai_utils.tools.kernel --kernel python3 --cwd notebooks --no-progress-bar --log-level WARNING
SWEEP := $(PY) -m clxai_utils.tools.sweep --dataset $(DATASET) --profile $(PROFILE)
# Stages 5 and 6 of make test need a CPU that computes the committed run's precision (bf16): elsewhere `auto`
# means float32, which retrains for about an hour and gives another run's numbers. They then print why and
# skip; COMMITTED=1 runs them anyway.
COMMITTED ?=
$(if $(filter-out 1,$(COMMITTED)),$(error COMMITTED must be 1 (run stages 5-6 whatever the CPU) or unset, got "$(COMMITTED)"))
REPRODUCIBLE := [ "$(COMMITTED)" = 1 ] || $(PY) tests/test_pinned_numbers.py --can-reproduce
NBVAL := $(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env --nbval-cell-timeout 1800 \
  --nbval-sanitize-with tests/nbval_sanitize.cfg

.PHONY: help env run sweep report publish test lint unit-tests cluster-tests smoke-notebooks nbval nbval-committed pinned

help:
	@echo "make run      - create the environment if needed, run the pipeline (00-06, 09, 07) for seed 0 with PROFILE=$(PROFILE), then 08_analysis:"
	@echo "                executed notebooks and artefacts in $(RUNS)/<dataset>-<profile>-seed<k>/, tables and figures in $(REPORT)/"
	@echo "make sweep    - also run SEEDS=\"$(SEEDS)\" (finished runs are skipped), then 08_analysis over every run"
	@echo "make publish  - copy the executed notebooks of the seed-0 run into notebooks/ (what is committed), and"
	@echo "                rewrite the README's result blocks and gallery from $(REPORT)/"
	@echo "make test     - lint + types, unit tests, multi-process and submitit tests, every notebook on the smoke profile (as JupyterLab runs it), the committed"
	@echo "                notebooks re-executed (quick profile) and validated with nbval, then the pinned quick-run numbers"
	@echo "make lint     - ruff (lint + format check) on the package, tests and notebooks; mypy on the package"
	@echo "make cluster-tests / make nbval-committed / make pinned - single stages of make test"
	@echo "make env      - only create/update the environment (.venv from uv.lock)"

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --python 3.11
	$(PY) -c "import torch, torchvision, pytorch_grad_cam, quantus, cv2, skimage, seaborn, papermill, nbval, nbclient; print('environment ok: torch', torch.__version__, 'torchvision', torchvision.__version__, 'quantus', quantus.__version__)" \
	  || { echo "ERROR: the environment in $(VENV) cannot import its packages (see above); delete $(VENV) and rerun"; exit 1; }
	touch $(STAMP)

env: $(STAMP)

run: $(STAMP)
	@echo "data source: $$CLXAI_DATA_SOURCE; mask source: $${CLXAI_MASK_SOURCE:-none}"
	$(SWEEP) --seeds 0
	@$(MAKE) --no-print-directory report

sweep: $(STAMP)
	$(SWEEP) --seeds 0 $(SEEDS)
	@$(MAKE) --no-print-directory report

# 08 reads every run below $(RUNS) (its default parameters), whatever profile or seeds they used.
report: $(STAMP)
	@mkdir -p $(REPORT)
	@nb=$(REPORT_NB); echo "== $$nb over $(RUNS)/*"; start=$$(date +%s); \
	$(PAPERMILL) notebooks/$$nb.ipynb $(REPORT)/$$nb.ipynb; \
	echo "   $$nb done in $$(( $$(date +%s) - start )) s; report in $(REPORT)/"

# The executed notebooks become the committed ones; the README's result blocks and gallery follow the report.
publish: $(STAMP)
	$(PY) -m clxai_utils.tools.publish --run $(RUNS)/$(RUN_ID) --report $(REPORT) --gallery docs/gallery_$(PROFILE)_seed0.png

test: lint unit-tests cluster-tests nbval nbval-committed pinned

lint: $(STAMP)
	$(VENV)/bin/ruff check clxai_utils tests notebooks
	$(VENV)/bin/ruff format --check clxai_utils tests notebooks
	$(VENV)/bin/mypy

unit-tests: $(STAMP)
	$(PY) -m pytest tests -q

# Every notebook executed as a reader runs it in JupyterLab (nbclient, profile edited in the parameters
# cell), into its own outputs root, so the quick run's artefacts are never overwritten.
smoke-notebooks: $(STAMP)
	@rm -rf $(SMOKE_ROOT) && mkdir -p $(SMOKE_ROOT)
	@src="$$CLXAI_DATA_SOURCE"; \
	if [ "$$src" = torchvision ]; then \
	  echo "no local CIFAR-10: the smoke notebooks use a generated tiny image folder"; \
	  $(PY) -c "from clxai_utils.data.sources import write_synthetic_imagefolder as w; w('$(SMOKE_ROOT)/synthetic')"; \
	  src="$(abspath $(SMOKE_ROOT))/synthetic"; \
	fi; \
	echo "== 00-09 on the smoke profile (data=$$src, masks=$${CLXAI_MASK_SOURCE:-none}), then ImageNet-S50 (generated fixture) and a 5-class 48 px image folder, as JupyterLab runs them"; \
	CLXAI_DATA_SOURCE=$$src CLXAI_OUTPUTS=$(abspath $(SMOKE_ROOT)) $(PY) -m pytest -q -p no:cacheprovider -m notebooks tests/test_notebooks_jupyterlab.py

# Several processes and submitit jobs on this machine: the distributed losses and a DDP step on two gloo
# processes, torchrun and a two-task submitit job training one run, the sweep through submitit's debug and
# local executors (a failing run isolated, finished runs skipped, a task requeued at its time limit), and the
# real smoke grid through the debug executor.
cluster-tests: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m "cluster or notebooks" tests/train/test_distributed.py tests/tools/test_cluster.py

# nbval re-executes each smoke-executed notebook and compares the cells marked NBVAL_CHECK_OUTPUT
# with the first execution: the smoke path must be deterministic.
nbval: smoke-notebooks
	CLXAI_OUTPUTS=$(abspath $(SMOKE_ROOT)) $(NBVAL) $(SMOKE_ROOT)/notebooks

# The committed notebooks, re-executed as committed (quick profile, seed 0, in outputs/runs/) and compared
# with their stored outputs. A fresh clone trains the quick models first (12-14 min on 2 cores with native
# bf16); after `make run` the finished models and maps are reused. 08 reads whatever runs exist; its checked
# cell does not depend on how many seeds there are.
nbval-committed: $(STAMP)
	@if $(REPRODUCIBLE); then $(NBVAL) notebooks; fi

# The quick run's accuracy and metric means against tests/reference/ (see tests/test_pinned_numbers.py).
pinned: $(STAMP)
	@if $(REPRODUCIBLE); then $(PY) -m pytest -q -p no:cacheprovider -m pinned tests/test_pinned_numbers.py; fi
