# The two commands of the README:
#   make book   installs everything into .venv and opens the book in JupyterLab
#   make test   installs everything into .venv and runs every test, every chapter included
# and three more:
#   make site          builds the website into build/html (offline; needs node and npm)
#   make test-browser  the real-browser test (headless Chromium + Playwright)
#   make ci            what CI runs (.ci/run)
#
# torch: tools/install_torch.py installs a CPU-only torch unless torch is already importable
# in the venv: from the PyTorch CPU index if it answers, else from your default package
# index as long as that would not pull CUDA libraries; otherwise it stops and says how to fix
# it. Variables (make test VAR=value):
#   TORCH_VERSION  the torch version (2.13.0, the one the chapters are executed with; empty: any)
#   TORCH_INDEX    the CPU wheel index tried first (empty: only your pip configuration)
#   TORCH_BUILD    cpu (default; never installs CUDA libraries) or cuda (accepts them)
#   ARGS           extra JupyterLab arguments: make book ARGS="--no-browser --port 8899"
#   PYTEST_ARGS    extra pytest arguments: make test PYTEST_ARGS="-x tests/test_rl.py"

PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_BUILD ?= cpu
ARGS ?=
PYTEST_ARGS ?=
PY := $(VENV)/bin/python
PIP := $(PY) -m pip install -q --disable-pip-version-check
# JupyterLab refuses to run as root without --allow-root (containers, Colab-like machines)
ALLOW_ROOT := $(if $(filter 0,$(shell id -u 2>/dev/null)),--allow-root,)

.PHONY: book test site test-browser ci torch install-notebook install-test install-docs \
        install-browser clean-site

$(PY):
	@$(PYTHON) -m venv $(VENV) || { \
	  echo "make: could not create $(VENV) with '$(PYTHON) -m venv'. On Debian/Ubuntu install" \
	       "the venv module (sudo apt-get install python3-venv), or pass another Python:" \
	       "make $(MAKECMDGOALS) PYTHON=python3.11" >&2; rm -rf $(VENV); exit 1; }

torch: $(PY)
	@$(PY) tools/install_torch.py --version "$(TORCH_VERSION)" --index "$(TORCH_INDEX)" \
	  --build "$(TORCH_BUILD)"

install-notebook: torch
	$(PIP) -e ".[notebook]"

install-test: torch
	$(PIP) -e ".[test]"

install-docs: torch
	$(PIP) -e ".[docs]"

install-browser: torch
	$(PIP) -e ".[test,browser]"

book: install-notebook
	$(VENV)/bin/jupyter lab $(ALLOW_ROOT) $(ARGS) chapters/00_preface.ipynb

test: install-test
	$(PY) -m pytest $(PYTEST_ARGS)

# The site's JavaScript assets (KaTeX, the widget HTML manager) come from npm, pinned by
# package-lock.json; nothing is fetched when the site is built or read.
node_modules/.package-lock.json: package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "make site: npm not found. The site renders" \
	  "its math with KaTeX under node: install Node.js >= 18 with npm (e.g. sudo apt-get" \
	  "install nodejs npm)" >&2; exit 1; }
	npm ci --ignore-scripts --no-audit --no-fund

site: install-docs node_modules/.package-lock.json
	rm -rf build/html build/doctrees docs/api
	$(PY) -m sphinx -W --keep-going -q -b html -d build/doctrees -c docs . build/html
	$(PY) -m pytest -q tests/test_site.py
	@echo "site: build/html/index.html ($$(du -sh build/html | cut -f1))"

test-browser: install-browser
	$(PY) -m pytest -m browser tests/browser $(PYTEST_ARGS)

ci:
	.ci/run

clean-site:
	rm -rf build/html build/doctrees build/jupyter_execute build/site_assets docs/api

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
