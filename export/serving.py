"""A TF-Serving model repository: versioned SavedModels, a models.config,
warmup requests, a Dockerfile and a docker-compose.yml.

Layout written under `--base_dir` (default models/):

    models.config                  ModelServerConfig (text proto), every model
    Dockerfile                     FROM tensorflow/serving, COPY the models,
                                   serve every model of models.config
    docker-compose.yml             the same server on this directory, ports
                                   8500 (gRPC), 8501 (REST)
    <name>/<version>/              the SavedModel of `export.saved_model`
    <name>/<version>/assets.extra/tf_serving_warmup_requests
                                   PredictionLog records TF-Serving replays on
                                   load, so the first real request is not slow

A version directory is written beside its final place and renamed into it,
so TF-Serving (which polls the base path) never loads half a model; an
existing version is replaced only with `--overwrite`.

Usage:
    python -m export.serving --model=runs/demo --name=vgg16 --base_dir=models
    docker compose -f models/docker-compose.yml up

Example (library):
>>> path = export_for_serving(common.load_export_model("runs/demo"),
...                           "models", name="vgg_demo")
"""

import json
import os
import re

import numpy as np
import tensorflow as tf
from absl import flags

from export import client
from export import common
from export import dense
from export import saved_model
from keras_vgg import atomic
from keras_vgg.fully_conv import STRIDE
from pipelines import entry

WARMUP_FILE = os.path.join("assets.extra", "tf_serving_warmup_requests")
CONFIG_FILE = "models.config"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
# TF-Serving's container image; pin a version for production builds.
SERVING_IMAGE = "tensorflow/serving"
# Where the image looks for models.
CONTAINER_BASE = "/models"


def versions(base_dir, name):
    """The numeric version directories of model `name`, sorted."""
    directory = os.path.join(base_dir, name)
    if not os.path.isdir(directory):
        return []
    return sorted(int(v) for v in os.listdir(directory) if v.isdigit())


def warmup_images(sizes=((224, 224), (256, 341), (300, 200)), seed=0):
    """A few encoded images (JPEG and PNG, several sizes) for warmup."""
    rng = np.random.RandomState(seed)
    images = []
    for i, (h, w) in enumerate(sizes):
        pixels = rng.randint(0, 256, (h, w, 3)).astype(np.uint8)
        encode = tf.io.encode_png if i % 2 else tf.io.encode_jpeg
        images.append(encode(pixels).numpy())
    return images


def write_warmup(path, model_name, encoded_images):
    """Writes one PredictionLog per image (a request of one image, the way
    clients send them) to the TFRecord file `path`."""
    from tensorflow_serving.apis import prediction_log_pb2

    os.makedirs(os.path.dirname(path), exist_ok=True)
    with tf.io.TFRecordWriter(path) as writer:
        for image in encoded_images:
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(
                    request=client.grpc_request([image], model_name)))
            writer.write(log.SerializeToString())


def served_models(base_dir):
    """The names of the models under `base_dir` that have at least one
    numeric version: what models.config, the Dockerfile and the compose
    file serve."""
    return [name for name in sorted(os.listdir(base_dir))
            if _NAME.match(name) and versions(base_dir, name)]


def model_server_config(base_dir, container_base=CONTAINER_BASE):
    """The ModelServerConfig text listing every model of `served_models`."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = model_server_config_pb2.ModelServerConfig()
    for name in served_models(base_dir):
        model = config.model_config_list.config.add()
        model.name = name
        model.base_path = f"{container_base}/{name}"
        model.model_platform = "tensorflow"
    return text_format.MessageToString(config)


def server_arguments():
    """tensorflow_model_server's arguments: every model of models.config
    (the image's entrypoint serves one model, $MODEL_NAME, without it),
    the file re-read each minute so that a model exported later is served
    without a restart."""
    return [f"--model_config_file={CONTAINER_BASE}/{CONFIG_FILE}",
            "--model_config_file_poll_wait_seconds=60"]


def dockerfile(names):
    """A Dockerfile serving the models `names` (and models.config)."""
    copies = "".join(f"COPY {name} {CONTAINER_BASE}/{name}\n"
                     for name in names)
    return f"""\
# TF-Serving with the models of this directory baked in: {", ".join(names)}.
#   docker build -t vgg-serving .
#   docker run -p 8500:8500 -p 8501:8501 vgg-serving
FROM {SERVING_IMAGE}
COPY {CONFIG_FILE} {CONTAINER_BASE}/{CONFIG_FILE}
{copies}CMD {json.dumps(server_arguments())}
"""


def docker_compose(names):
    """A docker-compose.yml serving this directory: every model of
    models.config (`names`, for the comment)."""
    urls = "".join(f"#   http://localhost:8501/v1/models/{name}\n"
                   for name in names)
    command = "".join(f"      - \"{a}\"\n" for a in server_arguments())
    return f"""\
# docker compose up   (from this directory): TF-Serving on this directory,
# gRPC on 8500, REST on 8501, serving every model of {CONFIG_FILE}:
{urls}# New versions, and models added to {CONFIG_FILE}, are picked up without a
# restart.
services:
  tf-serving:
    image: {SERVING_IMAGE}
    ports:
      - "8500:8500"
      - "8501:8501"
    volumes:
      - ./:{CONTAINER_BASE}:ro
    command:
{command}"""


def export_for_serving(source, base_dir="models", name="vgg16", version=None,
                       overwrite=False, q=None, flip=True, top_k=5,
                       warmup=None, max_pixels=dense.MAX_PIXELS,
                       max_aspect_ratio=dense.MAX_ASPECT_RATIO,
                       dense_stride=STRIDE):
    """Writes `<base_dir>/<name>/<version>/` and the serving files.

    Args:
        source: a classifier `keras_vgg.runs.Run` (or a run dir / .keras
            path), or a `common.LocalizerSource` (outputs `boxes` too).
        version: default: one more than the newest version (1 if none).
        overwrite: replace an existing `version`.
        warmup: encoded images for the warmup requests (default
            `warmup_images()`).
        q, flip, top_k, max_pixels, max_aspect_ratio, dense_stride: as
            `export.saved_model.write_saved_model`.

    Returns:
        The version directory.

    Raises:
        FileExistsError: the version exists and `overwrite` is False.
        ValueError: a bad `name` or `version`.
    """
    if not _NAME.match(name or ""):
        raise ValueError(f"--name={name!r}: use letters, digits, '_', '.' "
                         "and '-' (it is a directory and a URL part).")
    if not common.is_export_source(source):
        source = common.load_export_model(source, q=q)
    if version is None:
        existing = versions(base_dir, name)
        version = (existing[-1] + 1) if existing else 1
    if not isinstance(version, int) or isinstance(version, bool) or \
            version < 1:
        raise ValueError(f"--version={version!r}: must be a positive int.")
    target = os.path.join(base_dir, name, str(version))
    if warmup is None:
        warmup = warmup_images()
    with atomic.atomic_directory(target, overwrite=overwrite) as tmp:
        saved_model.write_saved_model(
            source, tmp, q=q, flip=flip, top_k=top_k, max_pixels=max_pixels,
            max_aspect_ratio=max_aspect_ratio, dense_stride=dense_stride)
        write_warmup(os.path.join(tmp, WARMUP_FILE), name, warmup)
    atomic.atomic_write_file(os.path.join(base_dir, CONFIG_FILE),
                             model_server_config(base_dir), overwrite=True)
    names = served_models(base_dir)
    atomic.atomic_write_file(os.path.join(base_dir, "Dockerfile"),
                             dockerfile(names), overwrite=True)
    atomic.atomic_write_file(os.path.join(base_dir, "docker-compose.yml"),
                             docker_compose(names), overwrite=True)
    return target


def define_flags(flag_values=None):
    fv = flag_values or flags.FLAGS
    common.define_model_flags(fv)
    flags.DEFINE_string("name", "vgg16", "Model name on the server.",
                        flag_values=fv)
    flags.DEFINE_string("base_dir", "models", "Model repository directory.",
                        flag_values=fv)
    flags.DEFINE_integer("version", None, "Version (default: newest + 1).",
                         flag_values=fv)
    common.define_serving_flags(fv)
    # So that --help lists common's flags with this command's own flags.
    flags.adopt_module_key_flags(common, flag_values=fv)


def main(argv):
    del argv
    fv = flags.FLAGS
    source = common.model_from_flags(fv)
    path = export_for_serving(source, fv.base_dir, fv.name, fv.version,
                              fv.overwrite, q=fv.q, flip=fv.flip,
                              top_k=fv.top_k, max_pixels=fv.max_pixels,
                              max_aspect_ratio=fv.max_aspect_ratio,
                              dense_stride=fv.dense_stride)
    print(f"Wrote {path}; serve with: docker compose -f "
          f"{os.path.join(fv.base_dir, 'docker-compose.yml')} up")
    return 0


def run():
    """The command line, as `python -m export.serving` runs it; also the
    `vgg-export-serving` console script."""
    define_flags()
    entry.run(main, __name__)


if __name__ == "__main__":
    run()
