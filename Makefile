# `make demo` and `make test` each create .venv when missing and install what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: install demo test clean

$(STAMP): requirements.txt requirements-dev.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

# The spam pipeline end to end on generated demo data (CPU, a few minutes).
demo: $(STAMP)
	$(PY) -m preprocess.demo --task=spam --out=demo_data/spam
	$(PY) -m pipelines.spam --flagfile=demo.flags --raw_dir=demo_data/spam \
		--data_dir=demo_data/spam_shards --workdir=runs/spam_demo

test: $(STAMP)
	$(PY) -m pytest -q tests

clean:
	rm -rf demo_data runs
