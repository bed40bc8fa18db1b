# `make demo` and `make test` work on a fresh machine with Python 3.11: they
# create .venv, install the package with every extra (train, export, test),
# then run.  `make test-jax` and `make test-torch` run the keras_vgg tests
# on the other Keras backends, each in a venv of its own without TensorFlow.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export KERAS_BACKEND ?= tensorflow

# The test modules that need keras_vgg alone (no TensorFlow, pipelines or
# export): they run on every backend.
BACKEND_TESTS := tests/test_atomic.py tests/test_compress.py \
	tests/test_configs.py tests/test_contracts.py tests/test_cost.py \
	tests/test_doctests.py tests/test_fully_conv.py \
	tests/test_fully_conv_stride.py tests/test_imagenet.py \
	tests/test_layering.py tests/test_localizer.py tests/test_packaging.py \
	tests/test_readme.py tests/test_vgg.py tests/test_weights.py

.PHONY: demo test test-processes test-fast test-jax test-torch test-backends lint benchmark install clean

$(STAMP): setup.py keras_vgg/version.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[all,test]"
	touch $(STAMP)

# .venv-jax and .venv-torch: keras_vgg with one backend and the test tools.
.venv-%/.installed-stamp: setup.py keras_vgg/version.py
	test -x .venv-$*/bin/python || $(PYTHON) -m venv .venv-$*
	.venv-$*/bin/python -m pip install -q --upgrade pip
	.venv-$*/bin/python -m pip install -q -e ".[test-$*]"
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m pipelines.demo
	$(BIN)/python -m export.demo

# Every test, the slow ones included, but for the multi-process drills
# (`make test-processes`, which CI runs too); the 15 slowest are listed.
test: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --durations=15 -m "not processes" tests

# The trainer in several processes: a tf.data service, two workers, SIGTERM
# and SIGKILL (pytest.ini's `processes`).
test-processes: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --durations=5 -m processes tests

# The tests not marked `slow` (pytest.ini): a quick check while editing.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 -m "not slow" tests

test-jax test-torch: test-%: .venv-%/.installed-stamp
	KERAS_BACKEND=$* .venv-$*/bin/python -m pytest -q -n 2 $(BACKEND_TESTS)

test-backends: test-jax test-torch

lint: $(STAMP)
	$(BIN)/ruff check .

benchmark: $(STAMP)
	$(BIN)/python -m benchmarks.models

clean:
	rm -rf $(VENV) .venv-jax .venv-torch build dist *.egg-info
