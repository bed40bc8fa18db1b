"""The TFLite localiser: the central-crop protocol on the fixed crop input,
with the classifier that rates the boxes (see `export.localizer`).

Signature outputs: `probabilities`, `top_k_indices`, `top_k_scores` and
`boxes [1, k, 4]` (corners (ymin, xmin, ymax, xmax) normalised to the crop);
read them with `interpreter.get_signature_runner()(pixels=x)`.
"""

import os
import time

import keras
import numpy as np

from export import calibration
from export import litert
from keras_vgg import boxes as box_lib
from keras_vgg import layers as vgg_layers


@keras.saving.register_keras_serializable(package="keras_vgg_export")
class TopKBoxes(keras.layers.Layer):
    """(probabilities (N, C), boxes (N, 4 or 4C) as (cx, cy, w, h)) ->
    {top_k_scores, top_k_indices, boxes (N, k, 4) corners}."""

    def __init__(self, k, regression, **kwargs):
        super().__init__(**kwargs)
        self.k = int(k)
        self.regression = regression

    def call(self, probabilities, box_out):
        scores, indices = keras.ops.top_k(probabilities, self.k)
        if self.regression == "scr":
            boxes = keras.ops.repeat(box_out[:, None, :], self.k, axis=1)
        else:
            classes = keras.ops.shape(probabilities)[-1]
            per_class = keras.ops.reshape(box_out, (-1, classes, 4))
            boxes = keras.ops.take_along_axis(
                per_class, keras.ops.expand_dims(indices, -1), axis=1)
        cx, cy, w, h = (boxes[..., i] for i in range(4))
        corners = keras.ops.stack([cy - h / 2, cx - w / 2, cy + h / 2,
                                   cx + w / 2], axis=-1)
        return {"top_k_scores": scores,
                "top_k_indices": keras.ops.cast(indices, "int32"),
                "boxes": corners}

    def get_config(self):
        return {**super().get_config(), "k": self.k,
                "regression": self.regression}


def crop_pixel_model(source, top_k=5):
    """The Keras model the TFLite localiser is converted from: RGB pixels
    [0, 255] of the crop in; probabilities, top_k_* and boxes out."""
    crop = source.crop
    inputs = keras.Input(shape=(crop, crop, 3), name="pixels")

    def prepared(mode, name):
        if mode == "none":
            return inputs
        return vgg_layers.preprocessing_conv(mode, name=name)(inputs)

    clf_in = prepared(source.classifier.preprocessing, "preprocessing")
    loc_in = (clf_in if source.preprocessing ==
              source.classifier.preprocessing
              else prepared(source.preprocessing, "loc_preprocessing"))
    probabilities = source.classifier.model(clf_in, training=False)
    box_out = source.localizer(loc_in, training=False)
    k = max(1, min(int(top_k), source.num_classes))
    out = TopKBoxes(k, source.regression, name="top_k_boxes")(
        probabilities, box_out)
    out["probabilities"] = probabilities
    return keras.Model(inputs, out, name=f"{source.name}_pixels")


def lite_outputs(runner, image, input_details):
    """One image through a LiteRT signature runner -> dict of float / int
    arrays without the batch axis (quantised outputs dequantised)."""
    out = runner(pixels=litert.quantize_input(
        np.asarray(image, np.float32)[None], input_details))
    details = runner.get_output_details()
    result = {}
    for key, value in out.items():
        q = details[key].get("quantization", (0.0, 0))
        if value.dtype in (np.int8, np.uint8) and q[0]:
            value = (value.astype(np.float32) - q[1]) * q[0]
        result[key] = value[0]
    return result


def verify_tflite(tflite_bytes, keras_model, images):
    """Runs the .tflite localiser with LiteRT on `images` (crops) and
    compares it with the Keras pixel model.

    Returns:
        dict: size_bytes, images, top1_agreement, max_abs_prob_diff,
        mean_box_iou (IoU of the two top-1 boxes, where the classes agree),
        latency_ms, keras_latency_ms.
    """
    interpreter = litert.interpreter(model_content=tflite_bytes)
    runner = interpreter.get_signature_runner()
    input_details = runner.get_input_details()["pixels"]
    lite_outputs(runner, images[0], input_details)  # warm up
    start = time.perf_counter()
    got = [lite_outputs(runner, image, input_details) for image in images]
    latency = (time.perf_counter() - start) / len(images)
    expected = keras_model.predict(images, batch_size=16, verbose=0)
    agree, ious, diffs = [], [], []
    for i, g in enumerate(got):
        same = int(g["top_k_indices"][0]) == int(
            expected["top_k_indices"][i][0])
        agree.append(same)
        diffs.append(np.abs(g["probabilities"]
                            - expected["probabilities"][i]).max())
        if same:
            ious.append(box_lib.iou(g["boxes"][0],
                                    expected["boxes"][i][0]))
    return {"size_bytes": len(tflite_bytes), "images": int(len(images)),
            "top1_agreement": float(np.mean(agree)),
            "max_abs_prob_diff": float(np.max(diffs)),
            "mean_box_iou": float(np.mean(ious)) if ious else 0.0,
            "latency_ms": 1000.0 * latency,
            "keras_latency_ms":
                1000.0 * litert.keras_latency(keras_model, images)}


def export_tflite_localizer(source, output, quantize="none", int8_io=False,
                            calibration_data="builtin", calibration_steps=100,
                            data_dir=None, verify_images=50, top_k=5,
                            overwrite=False):
    """`export.tflite.export_tflite` for a `LocalizerSource`: converts the
    crop model, verifies it with LiteRT, writes the JSON beside `output` and
    then `output` (`litert.write_verified`).  Returns the verification
    dict ({} when not verified)."""
    if quantize == "qat":
        raise ValueError("--quantize=qat is for classifiers; a localiser "
                         "exports with none, fp16, dynamic or int8.")
    if os.path.exists(output) and not overwrite:
        raise FileExistsError(f"{output!r} exists; pass --overwrite.")
    keras_model = crop_pixel_model(source, top_k)
    representative = None
    if quantize == "int8":
        if calibration_data is None:
            raise ValueError("--quantize=int8 needs --calibration_data.")
        representative = calibration.calibration_images(
            calibration_data, "train", data_dir, source.test_scale, source.crop,
            calibration_steps)
    flatbuffer = litert.convert(keras_model, quantize, representative,
                                int8_io)

    def check(flatbuffer):
        if calibration_data is None or not verify_images:
            return {}
        images, class_counts = calibration.sampled_images(
            calibration_data, "validation", data_dir, source.test_scale,
            source.crop, verify_images)
        report = verify_tflite(flatbuffer, keras_model, images)
        report.update(quantize=quantize, int8_io=bool(int8_io),
                      input_size=source.crop, regression=source.regression,
                      output=os.path.abspath(output),
                      calibration_data=calibration_data,
                      class_counts=class_counts)
        return report

    return litert.write_verified(output, flatbuffer, check, overwrite)
