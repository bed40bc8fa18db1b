"""keras_vgg: VGG (Simonyan & Zisserman, ICLR 2015) for Keras 3, with
training pipelines and SavedModel / TF-Serving / TFLite export."""

from setuptools import setup

setup(
    name="keras_vgg",
    version="0.1.0",
    description=("The VGG networks of Simonyan & Zisserman for Keras 3: "
                 "models, weights, training, evaluation and export."),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.10,<3.13",
    packages=["keras_vgg", "pipelines", "export"],
    package_data={
        "keras_vgg": ["data/*.json"],
        "pipelines": ["data/*.jpg"],
    },
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.15,<4",
        "tf-keras>=2.21,<2.22",
        "tensorflow-datasets>=4.9.10,<5",
        "tensorflow-model-optimization>=0.8.1,<0.9",
        # tensorflow-model-optimization 0.8 pins absl-py~=1.2.
        "absl-py>=1.2,<2",
        "ai-edge-litert>=2.3,<3",
        "tensorflow-serving-api>=2.21,<2.22",
        "tensorboard>=2.20",
        "h5py>=3.10",
        "safetensors>=0.4",
        "numpy>=1.26",
        "pillow>=10",
        "matplotlib>=3.8",
    ],
    extras_require={"test": ["pytest>=8"]},
)
