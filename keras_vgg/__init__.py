"""keras_vgg: the VGG networks of Simonyan & Zisserman (ICLR 2015) in Keras 3.

    import keras_vgg
    model = keras_vgg.VGG16(weights="imagenet")
    preds = model.predict(keras_vgg.preprocess_input(images))
    keras_vgg.decode_predictions(preds)

The package imports no TensorFlow: the models run on any Keras backend.
"""

from keras_vgg import runs  # noqa: E402  keras_vgg.runs.load_run
from keras_vgg.configs import CONFIGS
from keras_vgg.configs import count_macs
from keras_vgg.configs import count_params
from keras_vgg.configs import get_config
from keras_vgg.features import FeatureInfo
from keras_vgg.features import LayerRow
from keras_vgg.features import feature_extractor
from keras_vgg.features import feature_info
from keras_vgg.features import layer_table
from keras_vgg.fully_conv import fully_convolutional
from keras_vgg.imagenet import class_names
from keras_vgg.imagenet import decode_predictions
from keras_vgg.layers import LocalResponseNormalization
from keras_vgg.layers import Preprocessing
from keras_vgg.localizer import VGGLocalizer
from keras_vgg.losses import PerceptualLoss
from keras_vgg.losses import StyleLoss
from keras_vgg.preprocessing import preprocess_input
from keras_vgg.transforms import EvalTransform
from keras_vgg.transforms import eval_transform
from keras_vgg.transforms import load_images
from keras_vgg.version import __version__
from keras_vgg.vgg import VGG
from keras_vgg.vgg import VGG11
from keras_vgg.vgg import VGG11LRN
from keras_vgg.vgg import VGG13
from keras_vgg.vgg import VGG16
from keras_vgg.vgg import VGG16C
from keras_vgg.vgg import VGG19
from keras_vgg.weights import WEIGHT_SETS
from keras_vgg.weights import WeightSet
from keras_vgg.weights import available_weights
from keras_vgg.weights import get_weight_set
from keras_vgg.weights import load_weights

__all__ = [
    "CONFIGS",
    "EvalTransform",
    "FeatureInfo",
    "LayerRow",
    "PerceptualLoss",
    "StyleLoss",
    "LocalResponseNormalization",
    "Preprocessing",
    "VGG",
    "VGG11",
    "VGG11LRN",
    "VGG13",
    "VGG16",
    "VGG16C",
    "VGG19",
    "VGGLocalizer",
    "WEIGHT_SETS",
    "WeightSet",
    "__version__",
    "available_weights",
    "class_names",
    "count_macs",
    "count_params",
    "decode_predictions",
    "eval_transform",
    "feature_extractor",
    "feature_info",
    "fully_convolutional",
    "get_config",
    "get_weight_set",
    "layer_table",
    "load_images",
    "load_weights",
    "preprocess_input",
    "runs",
]
