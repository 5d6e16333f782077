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
