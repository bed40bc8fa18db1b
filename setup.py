"""keras_vgg: VGG (Simonyan & Zisserman, ICLR 2015) for Keras 3, with
training pipelines and SavedModel / TF-Serving / TFLite export.

`pip install keras_vgg` is the models alone (any Keras backend); the extras
add the rest: `[train]` the TensorFlow pipelines, `[export]` SavedModel,
TF-Serving and TFLite export, `[all]` both, `[test]` the test suite and lint.
"""

import os
import re

from setuptools import setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_version():
    """`keras_vgg/version.py`'s `__version__`, parsed rather than imported:
    importing the package would need Keras before it is installed."""
    with open(os.path.join(HERE, "keras_vgg", "version.py"),
              encoding="utf-8") as f:
        match = re.search(r'^__version__\s*=\s*["\']([^"\']+)["\']',
                          f.read(), re.M)
    if not match:
        raise RuntimeError("No __version__ in keras_vgg/version.py")
    return match.group(1)


with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
    LONG_DESCRIPTION = f.read()

# keras_vgg alone: Keras 3 on any backend, weight files.
INSTALL_REQUIRES = [
    "keras>=3.15,<4",
    "numpy>=1.26",
    "h5py>=3.10",
    "safetensors>=0.4",
]
TRAIN = [
    "tensorflow>=2.21,<2.22",
    "tensorflow-datasets>=4.9.10,<5",
    # tensorflow-datasets 4.9.10's download_and_prepare imports it, but
    # tensorflow-datasets does not declare it.
    "importlib_resources>=5",
    # tensorflow-model-optimization 0.8 ([export]) pins absl-py~=1.2.
    "absl-py>=1.2,<2",
    "pillow>=10",
    "matplotlib>=3.8",
    "tensorboard>=2.20",
]
EXPORT = TRAIN + [
    "tf-keras>=2.21,<2.22",
    "tensorflow-model-optimization>=0.8.1,<0.9",
    "ai-edge-litert>=2.3,<3",
    "tensorflow-serving-api>=2.21,<2.22",
]
ALL = sorted(set(TRAIN + EXPORT))
# The tests exercise every floor, so they need everything.
TEST = ALL + [
    # Image loading and decoding are tested over drawn sizes, modes, bit
    # depths and orientations (tests/test_image_properties.py).
    "hypothesis>=6",
    "pytest>=8",
    # `make test` runs the suite on both cores (-n 2): 8.7 instead of 13.1
    # minutes here.
    "pytest-xdist>=3.5",
    "pytest-timeout>=2.3",
    "hypothesis>=6.100",
    "ruff==0.17.6",
]

# The keras_vgg tests on the other Keras backends, each in a venv without
# TensorFlow (`make test-jax`, `make test-torch`): they prove the package
# needs no TensorFlow.
BACKEND_TEST = [
    "pytest>=8",
    "pytest-xdist>=3.5",
    "pytest-timeout>=2.3",
    "hypothesis>=6.100",
    "pillow>=10",
]
# torch is pinned to its CPU build's version: an open range makes pip pick
# a CUDA build of several GB.
TEST_JAX = BACKEND_TEST + ["jax[cpu]>=0.4.34"]
TEST_TORCH = BACKEND_TEST + ["torch==2.13.0"]

CONSOLE_SCRIPTS = [
    "vgg-train=pipelines.train:run",
    "vgg-evaluate=pipelines.evaluate:run",
    "vgg-scoremap=pipelines.scoremap:run",
    "vgg-localize=pipelines.localize:run",
    "vgg-demo=pipelines.demo:run",
    "vgg-layer-table=pipelines.layer_table:run",
    "vgg-features=pipelines.features:run",
    "vgg-linear-probe=pipelines.linear_probe:run",
    "vgg-data-service=pipelines.data_service:run",
    "vgg-reproduce=pipelines.reproduce:run",
    "vgg-export-savedmodel=export.saved_model:run",
    "vgg-export-serving=export.serving:run",
    "vgg-export-tflite=export.tflite:run",
    "vgg-client=export.client:run",
    "vgg-demo-export=export.demo:run",
]

setup(
    name="keras_vgg",
    version=read_version(),
    description=("The VGG networks of Simonyan & Zisserman for Keras 3: "
                 "models, weights, training, evaluation and export."),
    long_description=LONG_DESCRIPTION,
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.13",
    packages=["keras_vgg", "pipelines", "export"],
    package_data={
        "keras_vgg": ["data/*.json"],
        "pipelines": ["data/*.jpg"],
    },
    install_requires=INSTALL_REQUIRES,
    extras_require={
        "train": TRAIN,
        "export": EXPORT,
        "all": ALL,
        "test": TEST,
        "test-jax": TEST_JAX,
        "test-torch": TEST_TORCH,
    },
    entry_points={"console_scripts": CONSOLE_SCRIPTS},
)
