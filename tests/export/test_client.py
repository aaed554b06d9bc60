"""The TF Serving client: the messages it builds, and whole restorations over REST and gRPC.

The end-to-end tests run against small stand-ins that serve the exported SavedModel the way
TF Serving maps JSON and `PredictRequest`s onto signatures; `test_real_tf_serving` runs the
same checks against `tensorflow_model_server` when that binary is on PATH.
"""

import base64
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import types
import urllib.request
from concurrent import futures

import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from export import client as serving

MODEL = "pnen"
NO_SERVING_API = "the `serving` extra (tensorflow-serving-api) is not installed"


def _serving_apis():
    """`(predict_pb2, prediction_service_pb2_grpc)`, or skip: gRPC needs the `serving` extra."""
    return (pytest.importorskip("tensorflow_serving.apis.predict_pb2", reason=NO_SERVING_API),
            pytest.importorskip("tensorflow_serving.apis.prediction_service_pb2_grpc",
                                reason=NO_SERVING_API))


def _png(seed, size=(12, 17)):
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    return tf.io.encode_png(pixels).numpy()


def test_rest_url():
    assert serving.rest_url("h", 8501, "pnen") == "http://h:8501/v1/models/pnen:predict"
    assert serving.rest_url("h", 1, "pnen", 3) == "http://h:1/v1/models/pnen/versions/3:predict"


def test_rest_bodies_follow_the_row_format():
    pngs = [_png(0), _png(1)]
    body = json.loads(json.dumps(serving.rest_bytes_body(pngs)))
    assert body["signature_name"] == "restore_image"
    assert [base64.b64decode(item["b64"]) for item in body["instances"]] == pngs
    assert all(list(item) == ["b64"] for item in body["instances"])

    batch = np.random.default_rng(0).uniform(size=(2, 3, 4, 1)).astype(np.float32)
    body = json.loads(json.dumps(serving.rest_array_body(batch)))
    assert body["signature_name"] == "serving_default"
    np.testing.assert_array_equal(np.asarray(body["instances"], np.float32), batch)


def test_rest_responses_are_parsed():
    assert serving.parse_rest_bytes({"predictions": [{"b64": "AAE="}]}) == [b"\x00\x01"]
    restored = serving.parse_rest_array({"predictions": [[[[0.5]]]]})
    assert restored.dtype == np.float32 and restored.shape == (1, 1, 1, 1)


def test_grpc_requests_fill_the_protobuf_fields():
    _serving_apis()
    pngs = [_png(0), _png(1)]
    request = serving.grpc_bytes_request("pnen", pngs, version=4)
    assert request.model_spec.name == "pnen"
    assert request.model_spec.signature_name == "restore_image"
    assert request.model_spec.version.value == 4
    tensor = request.inputs["image_bytes"]
    assert tensor.dtype == types_pb2.DT_STRING
    assert [d.size for d in tensor.tensor_shape.dim] == [2]
    assert list(tensor.string_val) == pngs

    batch = np.random.default_rng(0).uniform(size=(1, 5, 6, 3)).astype(np.float32)
    request = serving.grpc_array_request("pnen", batch)
    assert request.model_spec.signature_name == "serving_default"
    assert not request.model_spec.HasField("version")  # the server's newest version
    tensor = request.inputs["images"]
    assert tensor.dtype == types_pb2.DT_FLOAT
    assert [d.size for d in tensor.tensor_shape.dim] == [1, 5, 6, 3]
    np.testing.assert_array_equal(tf.make_ndarray(tensor), batch)


def test_grpc_responses_are_parsed():
    predict_pb2, _ = _serving_apis()
    response = predict_pb2.PredictResponse()
    response.outputs["png_bytes"].CopyFrom(tf.make_tensor_proto([b"a", b"b"]))
    response.outputs["restored"].CopyFrom(tf.make_tensor_proto(np.ones((1, 2, 2, 3), np.float32)))
    assert serving.parse_grpc_bytes(response) == [b"a", b"b"]
    assert serving.parse_grpc_array(response).shape == (1, 2, 2, 3)


# --- Stand-ins for TF Serving ------------------------------------------------------------


def _rest_server(signatures, seen_paths):
    def answer(path, body):
        seen_paths.append(path)
        if not re.fullmatch(rf"/v1/models/{MODEL}(/versions/\d+)?:predict", path):
            return 404, json.dumps({"error": f"Servable not found for request: {path}"}).encode()
        signature = body.get("signature_name", "serving_default")
        if signature == "restore_image":
            data = [base64.b64decode(item["b64"]) for item in body["instances"]]
            pngs = signatures[signature](image_bytes=tf.constant(data))["png_bytes"].numpy()
            return _predictions(*[_b64(png) for png in pngs])
        images = tf.constant(body["instances"], tf.float32)
        return _predictions(*signatures[signature](images=images)["restored"].numpy().tolist())

    server = _answering(answer, host="localhost")
    return server, server.server_address[1]


def _grpc_server(signatures):
    import grpc

    predict_pb2, prediction_service_pb2_grpc = _serving_apis()

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):
            if request.model_spec.name != MODEL:
                context.abort(grpc.StatusCode.NOT_FOUND, f"Servable not found: {request.model_spec.name}")
            inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
            response = predict_pb2.PredictResponse()
            for name, value in signatures[request.model_spec.signature_name](**inputs).items():
                response.outputs[name].CopyFrom(tf.make_tensor_proto(value.numpy()))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("localhost:0")
    server.start()
    return server, port


@pytest.fixture(scope="module")
def rest_stand_in(loaded_signatures):
    """A REST stand-in serving the tiny PNEN; `paths` lists the URLs it was asked for."""
    paths = []
    server, port = _rest_server(loaded_signatures[MODEL], paths)
    yield types.SimpleNamespace(protocol="rest", port=port, paths=paths)
    server.shutdown()


@pytest.fixture(scope="module")
def grpc_stand_in(loaded_signatures):
    """A gRPC stand-in serving the tiny PNEN."""
    server, port = _grpc_server(loaded_signatures[MODEL])
    yield types.SimpleNamespace(protocol="grpc", port=port)
    server.stop(None)


@pytest.fixture(params=["rest", "grpc"])
def stand_in(request):
    """Each stand-in in turn."""
    return request.getfixturevalue(f"{request.param}_stand_in")


def _check_restorations(protocol, port, signatures, tmp_path):
    """Restore a file through the CLI and an array through the API; compare with the SavedModel."""
    source, target = tmp_path / "noisy.png", tmp_path / "restored.png"
    source.write_bytes(_png(5))
    assert serving.main([str(source), str(target), "--model", MODEL,
                         "--protocol", protocol, "--port", str(port)]) == 0
    expected = signatures["restore_image"](image_bytes=tf.constant([source.read_bytes()]))["png_bytes"]
    assert target.read_bytes() == expected.numpy()[0]

    batch = np.random.default_rng(6).uniform(size=(2, 9, 10, 3)).astype(np.float32)
    client = serving.ServingClient("localhost", port, model=MODEL, protocol=protocol, version=1)
    restored = client.restore_array(batch)
    np.testing.assert_allclose(restored, signatures["serving_default"](images=batch)["restored"], atol=1e-6)


def test_client_restores_end_to_end(stand_in, loaded_signatures, tmp_path):
    _check_restorations(stand_in.protocol, stand_in.port, loaded_signatures[MODEL], tmp_path)


def test_rest_client_asks_for_the_right_urls(rest_stand_in):
    for version in (None, 2):
        client = serving.ServingClient("localhost", rest_stand_in.port, model=MODEL, version=version)
        client.restore_bytes([_png(0)])
    assert rest_stand_in.paths[-2:] == ["/v1/models/pnen:predict", "/v1/models/pnen/versions/2:predict"]


def test_server_errors_are_reported(stand_in):
    client = serving.ServingClient("localhost", stand_in.port, model="other", protocol=stand_in.protocol)
    with pytest.raises(ValueError, match="answered (404|NOT_FOUND).*not found"):
        client.restore_bytes([_png(0)])


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_unreachable_server_is_a_clear_error(protocol, tmp_path, capsys):
    if protocol == "grpc":
        _serving_apis()
    source = tmp_path / "noisy.png"
    source.write_bytes(_png(0))
    port = _free_port()
    assert serving.main([str(source), str(tmp_path / "out.png"), "--model", MODEL,
                         "--protocol", protocol, "--port", str(port), "--timeout", "5"]) == 1
    error = capsys.readouterr().err
    assert "cannot reach TF Serving at" in error and str(port) in error and "Traceback" not in error
    assert sorted(os.listdir(tmp_path)) == ["noisy.png"]


def _free_port():
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


@pytest.mark.skipif(
    shutil.which("tensorflow_model_server") is None,
    reason="tensorflow_model_server is not on PATH (TF Serving's binary; not pip-installable)",
)
def test_real_tf_serving(saved_models, loaded_signatures, tmp_path):
    rest_port, grpc_port = _free_port(), _free_port()
    server = subprocess.Popen([
        "tensorflow_model_server", f"--port={grpc_port}", f"--rest_api_port={rest_port}",
        f"--model_name={MODEL}", f"--model_base_path={os.path.abspath(saved_models[MODEL])}",
    ], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_until_available(rest_port, server)
        for protocol, port in (("rest", rest_port), ("grpc", grpc_port)):
            _check_restorations(protocol, port, loaded_signatures[MODEL], tmp_path)
    finally:
        server.terminate()
        server.wait(timeout=30)


def _wait_until_available(port, server, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and server.poll() is None:
        try:
            with urllib.request.urlopen(f"http://localhost:{port}/v1/models/{MODEL}") as answer:
                if json.load(answer)["model_version_status"][0]["state"] == "AVAILABLE":
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"tensorflow_model_server did not serve {MODEL!r} within {timeout}s")


@pytest.mark.skipif(shutil.which("curl") is None, reason="the documented REST calls use curl")
def test_docs_rest_examples_work(rest_stand_in, serving_docs_block, docs_env, tmp_path):
    """docs/serving.md's curl and Python-client examples, against the REST stand-in."""
    (tmp_path / "noisy.png").write_bytes(_png(7, size=(10, 13)))

    def run_block(marker, command):
        code = serving_docs_block(marker).replace("8501", str(rest_stand_in.port))
        result = subprocess.run(command + [code], cwd=tmp_path, capture_output=True, text=True,
                                env=docs_env)
        assert result.returncode == 0, result.stderr
        return result.stdout

    run_block('"signature_name": "restore_image"', ["bash", "-ec"])
    assert tf.io.decode_png((tmp_path / "restored.png").read_bytes()).shape == (10, 13, 3)
    floats = json.loads(run_block('"signature_name": "serving_default"', ["bash", "-ec"]))
    assert np.asarray(floats["predictions"]).shape == (1, 1, 2, 3)
    (tmp_path / "restored.png").unlink()
    run_block("ServingClient(", ["python", "-c"])


# --- The client does not trust the server (issue 15) ----------------------------------------


def _answering(answer, host="127.0.0.1"):
    """A REST stand-in whose every POST gets `answer(path, request_json)` -> (status, body
    bytes)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            status, body = answer(self.path, request)
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer((host, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _predictions(*items):
    return 200, json.dumps({"predictions": list(items)}).encode()


def _b64(data):
    return {"b64": base64.b64encode(data).decode()}


@pytest.fixture
def noisy(tmp_path):
    path = tmp_path / "noisy.png"
    path.write_bytes(_png(9, size=(12, 17)))
    return path


@pytest.mark.parametrize("answer, problem", [
    (lambda r: _predictions(_b64(tf.io.encode_jpeg(np.zeros((12, 17, 3), np.uint8)).numpy())),
     "returned image 0 that is not PNG"),
    (lambda r: _predictions(_b64(b"")), "returned image 0 that is not PNG (0 bytes"),
    (lambda r: _predictions(_b64(_png(1, size=(5, 5)))), "returned image 0 at 5x5 for 17x12"),
    (lambda r: _predictions(_b64(_png(1)), _b64(_png(2))), "returned 2 results for 1 images"),
    (lambda r: (200, b""), "answered 200 but not with JSON: an empty body"),
    (lambda r: (200, b"<html><body>proxy login</body></html>"), "but not with JSON: b'<html>"),
    (lambda r: (502, b"<html>\n<h1>Bad Gateway</h1>\n</html>"), "answered 502: <html> <h1>Bad"),
    (lambda r: (200, b'{"outputs": []}'), "without the expected predictions (KeyError"),
])
def test_a_bad_reply_is_one_line_naming_the_server_and_writes_nothing(noisy, tmp_path, capsys,
                                                                     answer, problem):
    server = _answering(lambda path, request: answer(request))
    port = server.server_address[1]
    try:
        status = serving.main([str(noisy), str(tmp_path / "restored.png"), "--model", MODEL,
                               "--host", "127.0.0.1", "--port", str(port)])
    finally:
        server.shutdown()
    err = capsys.readouterr().err
    assert status == 1 and "Traceback" not in err, err
    (line,) = err.strip().splitlines()
    assert f"TF Serving at http://127.0.0.1:{port}/v1/models/{MODEL}:predict" in line
    assert problem in line, line
    assert sorted(os.listdir(tmp_path)) == ["noisy.png"]


def _with_non_finite():
    reply = np.full((1, 3, 4, 3), 0.5)
    reply[0, 1, 2, 0], reply[0, 2, 3, 1], reply[0, 0, 0, 2] = np.nan, np.inf, -np.inf
    return reply


@pytest.mark.parametrize("reply, scale, problem", [
    (_with_non_finite(), None, "returned 3 NaN or infinite values"),
    (np.full((1, 2, 4, 3), 0.5), None, "returned the batch at 4x2 for 4x3 pixels"),
    (np.full((1, 6, 8, 3), 0.5), 3, "at 8x6 for 4x3 pixels (expected x3)"),
    (np.full((1, 3, 4, 1), 0.5), None, "returned shape (1, 3, 4, 1) for a batch of shape (1, 3, 4, 3)"),
    (np.full((2, 3, 4, 3), 0.5), None, "returned 2 results for 1 images"),
])
def test_float_replies_are_checked(reply, scale, problem):
    server = _answering(lambda path, r: _predictions(*reply.tolist()))
    client = serving.ServingClient("127.0.0.1", server.server_address[1], model=MODEL, scale=scale)
    try:
        with pytest.raises(ValueError, match=re.escape(problem)) as info:
            client.restore_array(np.full((1, 3, 4, 3), 0.5, np.float32))
    finally:
        server.shutdown()
    assert client.server in str(info.value)


def test_a_finite_reply_at_a_whole_multiple_of_the_size_is_accepted():
    server = _answering(lambda path, r: _predictions(*np.full((1, 6, 8, 3), 0.25).tolist()))
    client = serving.ServingClient("127.0.0.1", server.server_address[1], model=MODEL)
    try:
        restored = client.restore_array(np.zeros((1, 3, 4, 3), np.float32))
    finally:
        server.shutdown()
    np.testing.assert_array_equal(restored, np.full((1, 6, 8, 3), 0.25, np.float32))


def _dripping_server(seconds=8.0):
    """A server that answers a byte every 0.5 s: no single read ever waits a whole second."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve():
        connection, _ = listener.accept()
        deadline = time.monotonic() + seconds
        reply = b"HTTP/1.1 200 OK\r\nContent-Length: 40\r\n\r\n" + b'{"predictions": []}'.ljust(40)
        with connection:
            connection.recv(1 << 20)
            for byte in reply:
                if time.monotonic() > deadline:
                    break
                try:
                    connection.sendall(bytes([byte]))
                except OSError:  # the client gave up: what this test wants
                    break
                time.sleep(0.5)
        listener.close()

    threading.Thread(target=serve, daemon=True).start()
    return listener.getsockname()[1]


def test_the_timeout_bounds_the_whole_call(noisy, tmp_path, capsys):
    port = _dripping_server()
    start = time.monotonic()
    status = serving.main([str(noisy), str(tmp_path / "restored.png"), "--model", MODEL,
                           "--host", "127.0.0.1", "--port", str(port), "--timeout", "1"])
    elapsed = time.monotonic() - start
    err = capsys.readouterr().err
    assert status == 1 and elapsed < 3, (elapsed, err)
    assert f"TF Serving at http://127.0.0.1:{port}/" in err and "within 1 s" in err
    assert sorted(os.listdir(tmp_path)) == ["noisy.png"]


def test_input_and_output_are_checked_before_anything_is_sent(noisy, tmp_path, capsys):
    port = str(_free_port())  # nothing listens: reaching the server would be another error
    before = noisy.read_bytes()
    for output, problem in ((noisy, "would overwrite the input"), (tmp_path, "is a folder"),
                            (tmp_path / "noisy.png" / "x.png", "exists and is not a folder")):
        assert serving.main([str(noisy), str(output), "--model", MODEL, "--port", port]) == 1
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert problem in line and "cannot reach" not in line, line
    assert noisy.read_bytes() == before
    (tmp_path / "notes.png").write_text("not an image")
    assert serving.main([str(tmp_path / "notes.png"), str(tmp_path / "o.png"), "--model", MODEL,
                         "--port", port]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert str(tmp_path / "notes.png") in line and "not an image" in line
    assert sorted(os.listdir(tmp_path)) == ["noisy.png", "notes.png"]
