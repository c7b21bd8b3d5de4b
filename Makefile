# Three commands: `make run` (the pipeline on the quick profile); `make test` (lint, types and the import
# contract, unit tests, the multi-process, submitit and papermill-kernel tests, every notebook on the smoke
# profile as JupyterLab runs it, validated with nbval: the same tests on every CPU, all in float32, about
# 19-24 minutes on 2 cores); `make reproduce` (a fresh quick run against the pinned reference, and the committed
# notebooks re-executed and validated with nbval; its numbers depend on the CPU's precision, see
# clxai_utils/tools/pinned.py). All create the environment from uv.lock (every dependency group) when it is
# missing or stale.

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
# make test computes in float32 on every CPU (tests/conftest.py sets it for pytest; the nbval stage below sets it
# for the kernels it starts), so it is the same suite with the same numbers whether or not the CPU has native bf16.
TEST_PRECISION := CLXAI_PRECISION=float32
# make reproduce compares the quick CIFAR-10 run of seed 0 with tests/reference/cifar10-quick-seed0.json: only
# that run can be compared. COMMITTED (the old bf16 gate of make test) is gone: say so rather than ignore it.
ifneq ($(COMMITTED),)
$(error COMMITTED is gone: make test runs the same tests on every CPU, and make reproduce (the committed notebooks and pinned numbers) runs wherever it is asked)
endif
ifneq ($(filter reproduce pinned nbval-committed,$(MAKECMDGOALS)),)
ifneq ($(PROFILE)-$(DATASET),quick-cifar10)
$(error make $(filter reproduce pinned nbval-committed,$(MAKECMDGOALS)) compares the quick CIFAR-10 run with tests/reference/cifar10-quick-seed0.json and the committed notebooks; got PROFILE=$(PROFILE) DATASET=$(DATASET): leave them unset)
endif
endif
NBVAL := $(PY) -m pytest -q -p no:cacheprovider --nbval-lax --nbval-current-env --nbval-cell-timeout 1800 \
  --nbval-sanitize-with tests/nbval_sanitize.cfg

.PHONY: help env run sweep report publish test reproduce lint unit-tests cluster-tests smoke-notebooks nbval nbval-committed pinned

help:
	@echo "make run      - create the environment if needed, run the pipeline (00-09, 11) for seed 0 with PROFILE=$(PROFILE), then 10_analysis:"
	@echo "                executed notebooks and artefacts in $(RUNS)/<dataset>-<profile>-seed<k>/, tables and figures in $(REPORT)/"
	@echo "make sweep    - also run SEEDS=\"$(SEEDS)\" (finished runs are skipped), then 10_analysis over every run"
	@echo "make publish  - copy the executed notebooks of the seed-0 run into notebooks/ (what is committed), and"
	@echo "                rewrite the result blocks of README.md and docs/results.md, docs/artefacts.md and the gallery;"
	@echo "                ONLY=\"10_analysis\" publishes only those (a notebook executed from older text is refused)"
	@echo "make test     - the same tests on every CPU, in float32 (19-24 min on 2 cores): lint, unit tests, the multi-process,"
	@echo "                submitit and papermill-kernel tests, every notebook on the smoke profile (as JupyterLab runs it) validated with nbval"
	@echo "make reproduce - make run, then its numbers against the pinned reference (tests/reference/) and the committed"
	@echo "                notebooks re-executed and validated with nbval (quick profile, cifar10, seed 0)"
	@echo "make lint     - ruff (lint + format check) on the package, tests and notebooks; mypy on the package; the import contract"
	@echo "make unit-tests / cluster-tests / smoke-notebooks / nbval - single stages of make test"
	@echo "make pinned / nbval-committed - single stages of make reproduce (after make run)"
	@echo "make env      - only create/update the environment (.venv from uv.lock)"

$(UV):
	$(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --disable-pip-version-check "uv==$(UV_VERSION)"

$(STAMP): pyproject.toml uv.lock | $(UV)
	$(UV) sync --frozen --all-groups --python 3.11
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

# 09 reads every run below $(RUNS) (its default parameters), whatever profile or seeds they used.
report: $(STAMP)
	@mkdir -p $(REPORT)
	@nb=$(REPORT_NB); echo "== $$nb over $(RUNS)/*"; start=$$(date +%s); \
	$(PAPERMILL) notebooks/$$nb.ipynb $(REPORT)/$$nb.ipynb; \
	echo "   $$nb done in $$(( $$(date +%s) - start )) s; report in $(REPORT)/"

# The executed notebooks become the committed ones; the README's result blocks and gallery follow the report.
publish: $(STAMP)
	$(PY) -m clxai_utils.tools.publish --run $(RUNS)/$(RUN_ID) --report $(REPORT) --gallery docs/gallery_$(PROFILE)_seed0.png \
	  $(if $(ONLY),--only $(ONLY))

# The stages run in this order and stop at the first failure.
test: lint unit-tests cluster-tests nbval

# The fresh quick run first (finished jobs are skipped), so the two comparisons read it and nbval reuses its models.
reproduce: run pinned nbval-committed

lint: $(STAMP)
	$(VENV)/bin/ruff check clxai_utils tests notebooks
	$(VENV)/bin/ruff format --check clxai_utils tests notebooks
	$(VENV)/bin/mypy
	$(PY) -m pytest -q -p no:cacheprovider tests/test_architecture.py

# Every test without a stage marker (pyproject.toml's addopts); the import contract ran in lint.
unit-tests: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider --ignore tests/test_architecture.py tests

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
	echo "== 00-11 on the smoke profile (data=$$src, masks=$${CLXAI_MASK_SOURCE:-none}), then ImageNet-S50 (generated fixture) and a 5-class 48 px image folder, as JupyterLab runs them"; \
	CLXAI_DATA_SOURCE=$$src CLXAI_OUTPUTS=$(abspath $(SMOKE_ROOT)) $(TEST_PRECISION) $(PY) -m pytest -q -p no:cacheprovider -m notebooks tests/test_notebooks_jupyterlab.py

# Several processes, submitit jobs and Jupyter kernels on this machine: the distributed losses and a DDP step on
# two gloo processes, torchrun and a two-task submitit job training one run, the papermill sweep on toy notebooks
# (failures, interrupts, resumption), the sweep through submitit's debug and local executors (a failing run
# isolated, finished runs skipped, a signalled task requeued and resumed), and the real smoke grid through the
# debug executor.
cluster-tests: $(STAMP)
	$(TEST_PRECISION) $(PY) -m pytest -q -p no:cacheprovider -m "cluster or kernels or notebooks" tests/train tests/tools

# nbval re-executes each smoke-executed notebook and compares the cells marked NBVAL_CHECK_OUTPUT
# with the first execution: the smoke path must be deterministic. float32, as the first execution.
nbval: smoke-notebooks
	CLXAI_OUTPUTS=$(abspath $(SMOKE_ROOT)) $(TEST_PRECISION) $(NBVAL) $(SMOKE_ROOT)/notebooks

# The committed notebooks, re-executed as committed (quick profile, seed 0, in outputs/runs/, precision auto as
# `make run`) and compared with their stored outputs. After `make run` the finished models and maps are reused
# (alone, it trains the quick models first: 12-14 min on 2 cores with native bf16, about an hour in float32).
# The committed run computed in bf16: on a CPU without native bf16 its checked cells can differ. 09 reads
# whatever runs exist; its checked cell does not depend on how many seeds there are.
nbval-committed: $(STAMP)
	$(NBVAL) notebooks

# The quick run's accuracy and metric means against tests/reference/ (clxai_utils/tools/pinned.py says how the
# tolerances are derived; `python -m clxai_utils.tools.pinned --update` rewrites the reference).
pinned: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -m pinned tests/test_pinned_numbers.py tests/evaluate/test_authors_loop.py
