"""The TF-Serving repository: atomic versions, warmup records, the server
files, and the client's requests (no server runs on these machines)."""

import json
import os
import socket
import subprocess
import sys

import pytest
import tensorflow as tf

from export import client
from export import common
from export import saved_model
from export import serving
from tests import tiny_run


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    directory, _ = tiny_run.write_run(
        str(tmp_path_factory.mktemp("export_serving") / "run"))
    return common.load_export_model(directory)


@pytest.fixture(scope="module")
def repository(source, tmp_path_factory):
    base = str(tmp_path_factory.mktemp("models"))
    images = serving.warmup_images(sizes=((40, 40), (50, 70), (64, 45)))
    path = serving.export_for_serving(source, base, name="tiny",
                                      warmup=images)
    return base, path, images


def test_layout(repository):
    base, path, _ = repository
    assert path == os.path.join(base, "tiny", "1")
    assert sorted(os.listdir(base)) == ["Dockerfile", "docker-compose.yml",
                                        "models.config", "tiny"]
    assert os.listdir(os.path.join(base, "tiny")) == ["1"]
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))
    config = open(os.path.join(base, "models.config")).read()
    assert 'name: "tiny"' in config
    assert 'base_path: "/models/tiny"' in config
    assert 'model_platform: "tensorflow"' in config
    docker = open(os.path.join(base, "Dockerfile")).read()
    assert docker.startswith("# TF-Serving")
    assert "FROM tensorflow/serving" in docker
    assert "COPY tiny /models/tiny" in docker
    compose = open(os.path.join(base, "docker-compose.yml")).read()
    for needed in ('"8500:8500"', '"8501:8501"', "./:/models",
                   '"--model_config_file=/models/models.config"'):
        assert needed in compose


def test_every_model_is_served(source, repository, tmp_path):
    """Two exports of different names into one base dir: models.config,
    the Dockerfile and the compose file all serve both."""
    import shutil

    base = str(tmp_path / "models")
    shutil.copytree(repository[0], base)
    serving.export_for_serving(source, base, name="second",
                               warmup=serving.warmup_images(((40, 40),)),
                               dense_stride=16)
    # Each model keeps the score-map stride it was exported with.
    assert int(tf.saved_model.load(os.path.join(
        base, "second", "1")).dense_stride.numpy()) == 16
    assert int(tf.saved_model.load(os.path.join(
        base, "tiny", "1")).dense_stride.numpy()) == 32
    config = open(os.path.join(base, "models.config")).read()
    assert 'name: "second"' in config and 'name: "tiny"' in config
    docker = open(os.path.join(base, "Dockerfile")).read()
    assert "COPY tiny /models/tiny" in docker
    assert "COPY second /models/second" in docker
    assert "COPY models.config /models/models.config" in docker
    assert 'CMD ["--model_config_file=/models/models.config"' in docker
    assert "MODEL_NAME" not in docker
    compose = open(os.path.join(base, "docker-compose.yml")).read()
    assert "MODEL_NAME" not in compose
    assert '- "--model_config_file=/models/models.config"' in compose
    assert "/v1/models/tiny" in compose and "/v1/models/second" in compose


def test_models_config_parses(repository):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    base, _, _ = repository
    config = text_format.Parse(open(os.path.join(base, "models.config")).read(),
                               model_server_config_pb2.ModelServerConfig())
    assert [c.name for c in config.model_config_list.config] == ["tiny"]


def test_version_not_overwritten(source, repository, monkeypatch):
    base, path, _ = repository
    before = os.path.getmtime(os.path.join(path, "saved_model.pb"))
    with pytest.raises(FileExistsError):
        serving.export_for_serving(source, base, name="tiny", version=1)
    assert os.path.getmtime(os.path.join(path, "saved_model.pb")) == before
    # A failure half way leaves neither a version directory nor temp files.
    def fail(*args, **kwargs):
        raise RuntimeError("disk full")
    monkeypatch.setattr(serving, "write_warmup", fail)
    with pytest.raises(RuntimeError):
        serving.export_for_serving(source, base, name="tiny", version=7)
    assert os.listdir(os.path.join(base, "tiny")) == ["1"]


@pytest.mark.slow
def test_next_version_and_overwrite(source, tmp_path):
    images = serving.warmup_images(sizes=((40, 40),))
    base = str(tmp_path)
    first = serving.export_for_serving(source, base, name="m", warmup=images)
    second = serving.export_for_serving(source, base, name="m", warmup=images)
    assert (first, second) == (os.path.join(base, "m", "1"),
                               os.path.join(base, "m", "2"))
    marker = os.path.join(first, "marker")
    open(marker, "w").close()
    serving.export_for_serving(source, base, name="m", version=1,
                               overwrite=True, warmup=images)
    assert not os.path.exists(marker)
    assert sorted(os.listdir(os.path.join(base, "m"))) == ["1", "2"]
    with pytest.raises(ValueError, match="--name"):
        serving.export_for_serving(source, base, name="../x")


def test_warmup_records_run_through_serving_default(repository):
    from tensorflow_serving.apis import prediction_log_pb2

    base, path, images = repository
    records = list(tf.data.TFRecordDataset(
        os.path.join(path, serving.WARMUP_FILE)).as_numpy_iterator())
    assert len(records) == len(images)
    loaded = tf.saved_model.load(path, tags=["serve"])
    for record, image in zip(records, images):
        log = prediction_log_pb2.PredictionLog.FromString(record)
        request = log.predict_log.request
        assert request.model_spec.name == "tiny"
        assert request.model_spec.signature_name == "serving_default"
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        assert list(inputs) == [saved_model.INPUT_KEY]
        assert inputs["images"].tolist() == [image]
        out = loaded.signatures[request.model_spec.signature_name](
            **{k: tf.constant(v) for k, v in inputs.items()})
        assert out["probabilities"].shape == (1, 4)


@pytest.mark.slow
def test_saved_model_cli_lists_signatures(repository):
    _, path, _ = repository
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run([cli, "show", "--dir", path, "--all"],
                            capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    assert result.returncode == 0, result.stderr
    for name in ("serving_default", "predict_images", "predict_images_uint8",
                 "top_k_labels", "probabilities"):
        assert name in result.stdout
    assert "signature_def['serving_default']" in result.stdout
    assert "signature_def['predict_images']" in result.stdout


def test_rest_request():
    body = json.loads(client.rest_request_body([b"\x00\xffab", b"png"]))
    assert body == {"signature_name": "serving_default",
                    "instances": [{"images": {"b64": "AP9hYg=="}},
                                  {"images": {"b64": "cG5n"}}]}
    assert client.rest_url("http://h:8501/", "vgg16") == \
        "http://h:8501/v1/models/vgg16:predict"
    assert client.rest_url("http://h:8501", "vgg16", 3) == \
        "http://h:8501/v1/models/vgg16/versions/3:predict"


def test_grpc_request():
    request = client.grpc_request([b"abc", b"\x00de"], "vgg16", version=2)
    assert request.model_spec.name == "vgg16"
    assert request.model_spec.signature_name == "serving_default"
    assert request.model_spec.version.value == 2
    tensor = request.inputs["images"]
    assert tensor.dtype == tf.string.as_datatype_enum
    assert [d.size for d in tensor.tensor_shape.dim] == [2]
    assert tf.make_ndarray(tensor).tolist() == [b"abc", b"\x00de"]


def test_format_predictions():
    text = client.format_predictions(
        ["a.jpg"], [{"top_k_labels": [b"cat", "dog"],
                     "top_k_scores": [0.75, 0.25]}])
    assert text == "a.jpg: cat 0.750, dog 0.250"


def test_format_predictions_with_boxes():
    text = client.format_predictions(
        ["a.jpg"], [{"top_k_labels": [b"cat"], "top_k_scores": [0.75],
                     "boxes": [[0.1, 0.2, 0.5, 0.75]]}])
    assert text == "a.jpg: cat 0.750 [0.100 0.200 0.500 0.750]"


def test_client_prints_the_server_error(tmp_path):
    """A REST error (TF-Serving's JSON `{"error": ...}` with HTTP 400) is
    shown as the server's message, not as "Bad Request"."""
    import http.server
    import threading

    message = ("assertion failed: [image of 1x20000 pixels (height x "
               "width) is more elongated than max_aspect_ratio=4]")

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"error": message}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Refuse)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        with pytest.raises(client.ServerError) as e:
            client.predict_rest(url, "tiny", [b"png"], timeout=30)
        assert str(e.value).endswith(f"HTTP 400: {message}")
        image = tmp_path / "long.png"
        image.write_bytes(b"png")
        result = subprocess.run(
            [sys.executable, "-m", "export.client", f"--url={url}",
             "--model=tiny", str(image)],
            capture_output=True, text=True, timeout=120)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 1
    assert f"HTTP 400: {message}" in result.stderr
    assert "Bad Request" not in result.stderr


def _closed_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens once it is closed


@pytest.mark.slow
def test_client_without_server_is_one_line(tmp_path):
    """No server at --url: the URL and the failure in one line (as over
    gRPC), not urllib's traceback."""
    url = f"http://127.0.0.1:{_closed_port()}"
    with pytest.raises(client.ServerError, match=(
            rf"^{url}/v1/models/tiny:predict: Connection refused$")):
        client.predict_rest(url, "tiny", [b"png"], timeout=30)
    image = tmp_path / "a.png"
    image.write_bytes(b"png")
    result = subprocess.run(
        [sys.executable, "-m", "export.client", f"--url={url}",
         "--model=tiny", str(image)],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.splitlines() == [
        f"error: {url}/v1/models/tiny:predict: Connection refused"]
