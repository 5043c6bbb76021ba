# mr2ct: `make install run` sets up and runs the main job on the built-in phantom; `make install test` tests.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch; on a GPU machine install the CUDA build of the same version first.
TORCH ?= torch==2.13.0

.PHONY: install install-package deps run test test-full test-install bench segmenter-weights clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: deps
	$(BIN)/python -m pip install -q -e ".[dev]"

# What a user gets: a non-editable install without dev extras (`make install-package VENV=DIR`).
install-package: deps
	$(BIN)/python -m pip install -q .

deps: $(BIN)/python
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)" "numpy>=2,<2.5" setuptools wheel
	# elasticdeform's wheel is compiled against NumPy 1 and fails to import with NumPy 2: build it here.
	$(BIN)/python -m pip install -q --no-build-isolation --no-binary elasticdeform "elasticdeform==0.5.1"

run:
	$(BIN)/python -m mr2ct.train $(ARGS)

test:
	$(BIN)/python -m pytest -q $(ARGS)

test-full:
	$(BIN)/python -m pytest -q -m "" $(ARGS)

# install-package into a fresh venv, then its console scripts (slow: a few minutes)
test-install:
	$(BIN)/python -m pytest -q -m slow tests/test_install.py $(ARGS)

bench:
	@for script in benchmarks/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

# Retrain the shipped default CT segmenter (mr2ct/segment/pretrained) after its settings or the phantom change.
segmenter-weights:
	$(BIN)/python -c "from mr2ct.segment.phantom_unet import rebuild_shipped; print(rebuild_shipped('.cache/segmenter-weights'))"

clean:
	rm -rf outputs multirun .cache .pytest_cache build
