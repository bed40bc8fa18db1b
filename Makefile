# `make demo` and `make test` work on a fresh machine with Python 3.11: they
# create .venv, install the package with every extra (train, export, test),
# then run.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export KERAS_BACKEND ?= tensorflow

.PHONY: demo test test-fast lint benchmark install clean

$(STAMP): setup.py keras_vgg/version.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[all,test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m pipelines.demo
	$(BIN)/python -m export.demo

# Every test, the slow ones included; the 15 slowest are listed at the end.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --durations=15 tests

# The tests not marked `slow` (pytest.ini): a quick check while editing.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "not slow" tests

lint: $(STAMP)
	$(BIN)/ruff check .

benchmark: $(STAMP)
	$(BIN)/python -m benchmarks.models

clean:
	rm -rf $(VENV) build dist *.egg-info
