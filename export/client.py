"""Restore images with a PNEN model served by TF Serving, over REST (JSON) or gRPC.

Both protocols use the SavedModel's signatures (see `export.saved_model`): `restore_image`
sends encoded images and gets PNGs back, `serving_default` sends float arrays in [0, 1].
REST needs only the standard library and NumPy; gRPC needs the `serving` extra
(`tensorflow-serving-api`).

Example, against a server started as in docs/serving.md:

    python -m export.client noisy.png restored.png --model pnen
    python -m export.client noisy.png restored.png --model pnen --protocol grpc
"""

import base64
import json
import urllib.error
import urllib.request

import numpy as np

from export import _cli
from export._atomic import staged_file
from export.signatures import (
    BYTES_SIGNATURE, IMAGE_BYTES, IMAGES, PNG_BYTES, RESTORED, SERVING_SIGNATURE,
)

DEFAULT_PORTS = {"rest": 8501, "grpc": 8500}


def rest_url(host, port, model, version=None):
    """TF Serving's REST predict URL for `model` (its newest version unless `version`)."""
    version_part = "" if version is None else f"/versions/{int(version)}"
    return f"http://{host}:{port}/v1/models/{model}{version_part}:predict"


def rest_bytes_body(images):
    """JSON body (row format) sending encoded images, base64 as `{"b64": ...}`, to `restore_image`."""
    instances = [{"b64": base64.b64encode(data).decode("ascii")} for data in images]
    return {"signature_name": BYTES_SIGNATURE, "instances": instances}


def rest_array_body(batch):
    """JSON body (row format) sending a float batch `[B, H, W, C]` to `serving_default`."""
    return {"signature_name": SERVING_SIGNATURE, "instances": np.asarray(batch, np.float32).tolist()}


def parse_rest_bytes(response):
    """The PNG bytes of each image in a `restore_image` REST response."""
    return [base64.b64decode(item["b64"]) for item in response["predictions"]]


def parse_rest_array(response):
    """The float32 batch of a `serving_default` REST response."""
    return np.asarray(response["predictions"], np.float32)


def grpc_bytes_request(model, images, version=None):
    """A `PredictRequest` sending encoded images, a string tensor `[batch]`, to `restore_image`."""
    values = np.array(list(images), dtype=object)
    return _grpc_request(model, BYTES_SIGNATURE, IMAGE_BYTES, values, version)


def grpc_array_request(model, batch, version=None):
    """A `PredictRequest` sending a float batch `[B, H, W, C]` to `serving_default`."""
    return _grpc_request(model, SERVING_SIGNATURE, IMAGES, np.asarray(batch, np.float32), version)


def _grpc_request(model, signature, input_name, values, version):
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = model
    request.model_spec.signature_name = signature
    if version is not None:
        request.model_spec.version.value = int(version)
    request.inputs[input_name].CopyFrom(tf.make_tensor_proto(values))
    return request


def parse_grpc_bytes(response):
    """The PNG bytes of each image in a `restore_image` `PredictResponse`."""
    import tensorflow as tf

    return list(tf.make_ndarray(response.outputs[PNG_BYTES]).reshape(-1))


def parse_grpc_array(response):
    """The float32 batch of a `serving_default` `PredictResponse`."""
    import tensorflow as tf

    return tf.make_ndarray(response.outputs[RESTORED])


class ServingClient:
    """One served model, reached over `protocol` ('rest' or 'grpc') at `host:port`.

    Example:

        client = ServingClient("localhost", model="pnen")
        png = client.restore_bytes([open("noisy.png", "rb").read()])[0]
    """

    def __init__(self, host="localhost", port=None, *, model, protocol="rest", version=None,
                 timeout=60.0):
        if protocol not in DEFAULT_PORTS:
            raise ValueError(f"protocol must be one of {sorted(DEFAULT_PORTS)}, got {protocol!r}")
        self.host, self.port = host, port or DEFAULT_PORTS[protocol]
        self.model, self.protocol, self.version, self.timeout = model, protocol, version, timeout

    def restore_bytes(self, images):
        """PNG bytes of the restoration of each encoded image (PNG/JPEG bytes) in `images`."""
        if self.protocol == "rest":
            return parse_rest_bytes(self._post(rest_bytes_body(images)))
        return parse_grpc_bytes(self._predict(grpc_bytes_request(self.model, images, self.version)))

    def restore_array(self, batch):
        """The model's float output for a float32 batch `[B, H, W, C]` in [0, 1]."""
        if self.protocol == "rest":
            return parse_rest_array(self._post(rest_array_body(batch)))
        return parse_grpc_array(self._predict(grpc_array_request(self.model, batch, self.version)))

    def _post(self, body):
        url = rest_url(self.host, self.port, self.model, self.version)
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                return json.load(answer)
        except urllib.error.HTTPError as error:
            detail = error.read().decode(errors="replace")
            raise ValueError(f"TF Serving at {url} answered {error.code}: {detail}") from None
        except urllib.error.URLError as error:
            raise ConnectionError(f"cannot reach TF Serving at {url}: {error.reason}") from None

    def _predict(self, request):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        target = f"{self.host}:{self.port}"
        with grpc.insecure_channel(target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            try:
                return stub.Predict(request, timeout=self.timeout)
            except grpc.RpcError as error:
                detail = error.details()
                if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise ConnectionError(f"cannot reach TF Serving at {target}: {detail}") from None
                raise ValueError(f"TF Serving at {target} answered {error.code().name}: {detail}") from None


def restore_file(in_path, out_path, client):
    """Send the image file `in_path` through `client`; write the restored PNG to `out_path`."""
    with open(in_path, "rb") as file:
        (png,) = client.restore_bytes([file.read()])
    with staged_file(out_path, suffix=".png") as staging:
        with open(staging, "wb") as file:
            file.write(png)


DESCRIPTION = "restore an image file with a model served by TF Serving (REST or gRPC)"


def add_arguments(parser):
    parser.add_argument("input", help="the image to restore (PNG, JPEG, BMP or GIF)")
    parser.add_argument("output", help="where to write the restored PNG")
    parser.add_argument("--model", required=True, help="the model name TF Serving serves")
    parser.add_argument("--host", default="localhost")
    parser.add_argument("--protocol", choices=sorted(DEFAULT_PORTS), default="rest")
    parser.add_argument("--port", type=int, help="default 8501 for rest, 8500 for grpc")
    parser.add_argument("--version", type=int, help="a model version (default: the newest)")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds")


@_cli.reports_user_errors
def run(args):
    """Restore `args.input` into `args.output` through the server `args` name."""
    client = ServingClient(args.host, args.port, model=args.model, protocol=args.protocol,
                           version=args.version, timeout=args.timeout)
    restore_file(args.input, args.output, client)
    print(f"restored {args.input} -> {args.output} via {args.protocol} {args.host}:{client.port}")


def main(argv=None):
    """`python -m export.client IN OUT.png --model NAME [--protocol grpc] [--host H --port P]`."""
    return _cli.main("python -m export.client", DESCRIPTION, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
