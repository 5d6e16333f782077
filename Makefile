# The two commands of the README:
#   make book   installs everything into .venv and opens the book in JupyterLab
#   make test   installs everything into .venv and runs every test, every chapter included
#
# torch: a CPU-only build is installed first unless torch is already importable in the
# venv. TORCH_INDEX picks where it comes from (the PyTorch CPU wheel index by default);
# `make test TORCH_INDEX=` uses your pip configuration instead (how CI installs it).

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PY := $(VENV)/bin/python
PYTEST_ARGS ?=

.PHONY: book test install-notebook install-test torch clean-outputs

$(PY):
	$(PYTHON) -m venv $(VENV)

torch: $(PY)
	@$(PY) -c "import torch" 2>/dev/null || \
	  $(PY) -m pip install "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),)

install-notebook: torch
	$(PY) -m pip install -q -e ".[notebook]"

install-test: torch
	$(PY) -m pip install -q -e ".[test]"

book: install-notebook
	$(VENV)/bin/jupyter lab chapters/00_preface.ipynb

test: install-test
	$(PY) -m pytest $(PYTEST_ARGS)

# make gpu-check: on a machine with a CUDA GPU (and a CUDA build of torch in the venv), run the
# device-parametrised tests on CUDA (`pytest -m device`, tests/conftest.py's `device` fixture) and
# every benchmark on CUDA; the tables are written to $(GPU_TABLES) for benchmarks/README.md.
GPU_PY ?= .venv/bin/python
GPU_TABLES ?= benchmarks/results-cuda.md

.PHONY: gpu-check
gpu-check:
	@$(GPU_PY) -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else \
	  'gpu-check: torch.cuda.is_available() is False (no GPU, or a CPU-only torch)')"
	PGBOOK_TEST_DEVICES=cuda $(GPU_PY) -m pytest -q -m device tests
	$(GPU_PY) benchmarks/run_all.py --device cuda --out $(GPU_TABLES)
