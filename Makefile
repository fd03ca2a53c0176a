# Two entry points; each creates .venv and installs requirements.txt into it on first use.
#   make figures   regenerate every figure: execute pullbacks.ipynb in place (paper models when their
#                  weights download, else the bundled model), writing media/
#   make test      the test suite and the notebook under nbval, offline on the bundled model
#   make evaluate  the faithfulness evaluation (python -m utils.experiments.faithfulness; needs IMAGENETTE_ROOT), resumable
#   make study     the path-stability study (python -m utils.experiments.stability; needs IMAGENETTE_ROOT and checkpoints), resumable
# Set IMAGENETTE_ROOT to a folder with train/ and val/ to use a local Imagenette copy instead of a download.

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python

.PHONY: figures test evaluate study benchmark install clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

figures: install
	$(PY) -m jupyter nbconvert --to notebook --execute --inplace --ExecutePreprocessor.timeout=-1 pullbacks.ipynb

test: install
	PULLBACK_MODELS=$${PULLBACK_MODELS:-bundled} PULLBACK_MEDIA=$${PULLBACK_MEDIA:-$(CURDIR)/data/test-media} \
	$(PY) -m pytest tests --nbval-lax --nbval-current-env pullbacks.ipynb

evaluate: install
	$(PY) -m utils.experiments.faithfulness

study: install
	$(PY) -m utils.experiments.stability

benchmark: install
	$(PY) benchmarks/overhead.py

clean:
	rm -rf $(VENV) data/test-media
