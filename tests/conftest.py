"""The fixtures every test module may use.  Plain helper functions live in
`tests/helpers.py` (and the tiny run directory in `tests/tiny_run.py`): a
test module imports helpers, never another test module."""

import os

# Before Keras is imported anywhere: the tests run on the TensorFlow backend.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def rng():
    return np.random.RandomState(0)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """The built-in dataset (default size) as TFRecords, written once."""
    # Imported here so that the keras_vgg-only tests collect without
    # pipelines' TensorFlow input code.
    from pipelines import synthetic

    return str(synthetic.write_builtin(tmp_path_factory.mktemp("builtin")))
