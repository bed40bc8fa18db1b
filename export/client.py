"""A client for the VGG model served by TF-Serving, over REST or gRPC.

REST sends the encoded image files base64-encoded, as TF-Serving's JSON API
wants binary strings (`{"b64": ...}`, decoded by the server back into the
same bytes); gRPC sends them as a string tensor in a `PredictRequest`.

Usage:
    python -m export.client --url=http://localhost:8501 --model=vgg16 a.jpg
    python -m export.client --grpc=localhost:8500 --model=vgg16 a.jpg b.png

Example (library):
>>> body = rest_request_body([open("a.jpg", "rb").read()])
>>> request = grpc_request([open("a.jpg", "rb").read()], "vgg16")
"""

import base64
import http.client
import json
import sys
import urllib.error
import urllib.request

from absl import app
from absl import flags

from export.saved_model import INPUT_KEY
from pipelines import entry

DEFAULT_SIGNATURE = "serving_default"


def rest_request_body(encoded_images, signature_name=DEFAULT_SIGNATURE):
    """The JSON body (str) of a REST `:predict` request, in the row
    ("instances") format, one `{"images": {"b64": ...}}` per image."""
    instances = [{INPUT_KEY: {"b64": base64.b64encode(bytes(e)).decode(
        "ascii")}} for e in encoded_images]
    return json.dumps({"signature_name": signature_name,
                       "instances": instances})


def rest_url(base_url, model, version=None):
    """`http://host:8501/v1/models/NAME[/versions/N]:predict`."""
    url = f"{base_url.rstrip('/')}/v1/models/{model}"
    if version is not None:
        url += f"/versions/{int(version)}"
    return url + ":predict"


def predict_rest(base_url, model, encoded_images, version=None,
                 signature_name=DEFAULT_SIGNATURE, timeout=60):
    """POSTs the request; returns the list of per-image prediction dicts
    (`probabilities`, `top_k_labels`, `top_k_scores`, `top_k_indices`).

    Raises:
        ServerError: the server answered with an HTTP error; its message
            is the server's (`{"error": "..."}`), e.g. the image limit an
            image broke, rather than the bare "Bad Request".  Or no answer
            came (no server at `base_url`, a timeout): the URL and why.
    """
    body = rest_request_body(encoded_images, signature_name).encode()
    url = rest_url(base_url, model, version)
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())["predictions"]
    except urllib.error.HTTPError as e:
        raise ServerError(f"{url}: HTTP {e.code}: "
                          f"{server_message(e.read(), e.reason)}") from None
    except urllib.error.URLError as e:  # no connection: e.reason says why
        raise ServerError(f"{url}: {_os_error_text(e.reason)}") from None
    except (OSError, http.client.HTTPException) as e:
        # A timeout or a connection dropped mid-answer.
        raise ServerError(f"{url}: {_os_error_text(e)}") from None


def _os_error_text(error):
    if isinstance(error, OSError) and error.strerror:
        return error.strerror  # "Connection refused", not "[Errno 111] ..."
    return str(error) or type(error).__name__


class ServerError(Exception):
    """The server refused a request (the message is the server's), or could
    not be reached (the message names the address and the failure)."""


def server_message(body, reason):
    """The error text of a TF-Serving REST error body (`{"error": "..."}`),
    else the body itself (at most 1000 characters), else `reason`."""
    text = body.decode("utf-8", "replace").strip()
    try:
        text = json.loads(text)["error"]
    except (ValueError, KeyError, TypeError):
        pass
    return str(text)[:1000] or str(reason)


def grpc_request(encoded_images, model, version=None,
                 signature_name=DEFAULT_SIGNATURE):
    """A `tensorflow_serving.apis.predict_pb2.PredictRequest` holding the
    encoded images as a string tensor [N] under input "images"."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature_name
    if version is not None:
        request.model_spec.version.value = int(version)
    request.inputs[INPUT_KEY].CopyFrom(tf.make_tensor_proto(
        [bytes(e) for e in encoded_images], dtype=tf.string,
        shape=[len(encoded_images)]))
    return request


def predict_grpc(target, model, encoded_images, version=None,
                 signature_name=DEFAULT_SIGNATURE, timeout=60):
    """Sends the request to `host:port`; returns per-image prediction dicts
    like `predict_rest` (ServerError with the server's message when the
    call fails)."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    channel = grpc.insecure_channel(target)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    try:
        response = stub.Predict(grpc_request(encoded_images, model, version,
                                             signature_name), timeout)
    except grpc.RpcError as e:
        raise ServerError(f"{target}: {e.code().name}: {e.details()}") \
            from None
    outputs = {k: tf.make_ndarray(v) for k, v in response.outputs.items()}
    n = len(encoded_images)
    return [{k: v[i].tolist() for k, v in outputs.items()} for i in range(n)]


def format_predictions(paths, predictions):
    lines = []
    for path, p in zip(paths, predictions):
        labels = [label.decode() if isinstance(label, bytes) else label
                  for label in p["top_k_labels"]]
        boxes = p.get("boxes") or [None] * len(labels)
        # A localiser's outputs carry each class's box (ymin, xmin, ymax,
        # xmax), normalised to the image.
        top = ", ".join(
            f"{label} {score:.3f}" + ("" if box is None else " [" + " ".join(
                f"{v:.3f}" for v in box) + "]")
            for label, score, box in zip(labels, p["top_k_scores"], boxes))
        lines.append(f"{path}: {top}")
    return "\n".join(lines)


def define_flags(flag_values=None):
    fv = flag_values or flags.FLAGS
    flags.DEFINE_string("url", None, "REST base URL, http://host:8501.",
                        flag_values=fv)
    flags.DEFINE_string("grpc", None, "gRPC target, host:8500.",
                        flag_values=fv)
    flags.DEFINE_string("model", "vgg16", "Model name on the server.",
                        flag_values=fv)
    flags.DEFINE_integer("version", None, "Model version (default: latest).",
                         flag_values=fv)
    flags.DEFINE_string("signature", DEFAULT_SIGNATURE, "Signature name.",
                        flag_values=fv)


def main(argv):
    fv = flags.FLAGS
    paths = argv[1:]
    if not paths:
        raise app.UsageError("Give one or more image files.")
    if bool(fv.url) == bool(fv.grpc):
        raise app.UsageError("Give exactly one of --url and --grpc.")
    images = []
    for path in paths:
        with open(path, "rb") as f:
            images.append(f.read())
    try:
        if fv.url:
            predictions = predict_rest(fv.url, fv.model, images, fv.version,
                                       fv.signature)
        else:
            predictions = predict_grpc(fv.grpc, fv.model, images,
                                       fv.version, fv.signature)
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_predictions(paths, predictions))
    return 0


def run():
    """The command line, as `python -m export.client` runs it; also the
    `vgg-client` console script."""
    define_flags()
    entry.run(main, __name__)


if __name__ == "__main__":
    run()
