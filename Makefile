# Entry points; each creates .venv and installs what it needs into it on first use.
#   make figures    regenerate every figure: execute pullbacks.ipynb in place (it rewrites the tracked notebook and
#                   media/; the paper's models when their weights download, else the model trained here; offline
#                   it uses data/examples/)
#   make test       the test suite and the notebook under nbval (bundled model; never downloads: PULLBACK_DOWNLOAD=0;
#                   the notebook's figures go to a folder outside the clone, TEST_MEDIA)
#   make evaluate   the faithfulness evaluation (needs the full Imagenette: IMAGENETTE_ROOT), resumable
#   make study      the path-stability study (needs IMAGENETTE_ROOT and training checkpoints), resumable
#   make alignment  the alignment study across the bundled models (needs IMAGENETTE_ROOT), resumable
#   make alignment-control  its mismatched-target control of the agreement (needs IMAGENETTE_ROOT), resumable
#   make alignment-over-training  its measures on training checkpoints (data/checkpoints/seed0, seed1;
#                   other runs: RUNS="--run NAME ARCH FOLDER --run ...")
#   make benchmark  time and memory of the pullback against a plain input gradient
#   make test-torch TORCH=2.x.y [TORCHVISION=0.y.z]  the core tests (tests/core) on that torch, in a venv of its own
#                   under $TMPDIR or /tmp (TORCH_VENVS); the result goes to tests/core/torch-versions.csv
#                   (CPU_WHEELS=1: PyTorch's CPU wheels instead of PyPI's CUDA builds)
#   make app        the explorer as a web page of its own (Voilà on http://127.0.0.1:APP_PORT/, default 8866;
#                   it starts on the offline default model, PULLBACK_DEVICE picks the device; a closed tab's
#                   kernel is shut down after APP_CULL_SECONDS idle, default 60)
# IMAGENETTE_ROOT: a folder with train/<wnid>/ and val/<wnid>/; with it set, `make test` also runs the tests
# that read the full dataset.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
APP_PORT ?= 8866
APP_CULL_SECONDS ?= 60

.PHONY: app figures test test-torch evaluate study alignment alignment-control alignment-over-training benchmark install install-test clean

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed requirements-test.txt
	$(PY) -m pip install --quiet -r requirements-test.txt
	touch $@

# Progress bars and widget state are left out of the committed outputs (they would show as static widgets).
figures: install
	TQDM_DISABLE=1 $(PY) -m jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=-1 \
	--ExecutePreprocessor.store_widget_state=False pullbacks.ipynb
	$(PY) -m utils.figures.notebook pullbacks.ipynb

# The figures go outside the clone, as a user's PULLBACK_MEDIA may: every printed path must cope with that.
TEST_MEDIA ?= $(or $(TMPDIR),/tmp)/pullbacks-test-media

test: install-test
	PULLBACK_MODELS=$${PULLBACK_MODELS:-bundled} PULLBACK_MEDIA=$${PULLBACK_MEDIA:-$(TEST_MEDIA)} PULLBACK_DOWNLOAD=0 \
	TQDM_DISABLE=1 $(PY) -m pytest tests --nbval-lax --nbval-current-env pullbacks.ipynb

test-torch:
	@test -n "$(TORCH)" || { echo "usage: make test-torch TORCH=2.x.y [TORCHVISION=0.y.z]"; exit 2; }
	.ci/test-torch $(TORCH) $(TORCHVISION)

evaluate: install
	$(PY) -m utils.experiments.faithfulness

study: install
	$(PY) -m utils.experiments.stability

alignment: install
	$(PY) -m utils.experiments.alignment

alignment-control: install
	$(PY) -m utils.experiments.alignment.control

alignment-over-training: install
	$(PY) -m utils.experiments.alignment.over_training $(RUNS)

benchmark: install
	$(PY) benchmarks/overhead.py

# Localhost only; each browser tab gets its own kernel, culled once its tab is gone (utils/figures/explore/server.py
# also puts the repo on PYTHONPATH, since Voilà starts the kernel in app/, and serves a template that loads nothing
# from outside).
app: install
	@echo "The explorer: http://127.0.0.1:$(APP_PORT)/ (first page load takes a few seconds; Ctrl-C stops it)"
	$(PY) -m utils.figures.explore.server --port=$(APP_PORT) --cull-idle=$(APP_CULL_SECONDS)

clean:
	rm -rf $(VENV) data/test-media $(TEST_MEDIA)
