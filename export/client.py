"""Restore images with a PNEN model served by TF Serving, over REST (JSON) or gRPC.

Both protocols use the SavedModel's signatures (see `export.saved_model`): `restore_image`
sends encoded images and gets PNGs back, `serving_default` sends float arrays in [0, 1].
REST needs nothing beyond the package's own dependencies; gRPC needs the `serving` extra
(`tensorflow-serving-api`).

The server is not trusted: `--timeout` bounds a whole call (connecting, sending, reading),
not each network read, and a reply is checked before anything is written — PNG bytes must
decode as a PNG, sizes must be the input's times the scale (`--scale`, or any whole
multiple), float results must be finite. Every failure names the server.

Example, against a server started as in docs/serving.md:

    python -m export.client noisy.png restored.png --model pnen
    python -m export.client noisy.png restored.png --model pnen --protocol grpc
"""

import base64
import binascii
import io
import json

import numpy as np

from export import _cli
from export._atomic import staged_file
from export._http import post
from pnen_tf.apps._outputs import output_file_folder, refuse_overwriting_inputs
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

    `timeout` (seconds) bounds each call as a whole. `scale`, if given, is the size ratio the
    replies must have (the model's SR scale; 1 for the others); by default any whole multiple
    of the input's size is accepted.

    Example:

        client = ServingClient("localhost", model="pnen")
        png = client.restore_bytes([open("noisy.png", "rb").read()])[0]
    """

    def __init__(self, host="localhost", port=None, *, model, protocol="rest", version=None,
                 timeout=60.0, scale=None):
        if protocol not in DEFAULT_PORTS:
            raise ValueError(f"protocol must be one of {sorted(DEFAULT_PORTS)}, got {protocol!r}")
        self.host, self.port = host, port or DEFAULT_PORTS[protocol]
        self.model, self.protocol, self.version, self.timeout = model, protocol, version, timeout
        self.scale = scale

    @property
    def server(self):
        """How failures name the server: the REST URL, or gRPC's `host:port`."""
        if self.protocol == "rest":
            return rest_url(self.host, self.port, self.model, self.version)
        return f"{self.host}:{self.port}"

    def restore_bytes(self, images):
        """PNG bytes of the restoration of each encoded image (PNG/JPEG bytes) in `images`."""
        images = list(images)
        sizes = [_checked_size(image, f"image {i} to send is") for i, image in enumerate(images)]
        if self.protocol == "rest":
            pngs = self._parsed(parse_rest_bytes, self._post(rest_bytes_body(images)))
        else:
            request = grpc_bytes_request(self.model, images, self.version)
            pngs = self._parsed(parse_grpc_bytes, self._predict(request))
        self._check_count(len(pngs), len(images))
        for i, (size, png) in enumerate(zip(sizes, pngs)):
            what = f"TF Serving at {self.server} returned image {i} that is"
            self._check_size(f"image {i}", size, _checked_size(png, what, formats=("PNG",)))
        return pngs

    def restore_array(self, batch):
        """The model's float output for a float32 batch `[B, H, W, C]` in [0, 1]."""
        batch = np.asarray(batch, np.float32)
        if self.protocol == "rest":
            restored = self._parsed(parse_rest_array, self._post(rest_array_body(batch)))
        else:
            request = grpc_array_request(self.model, batch, self.version)
            restored = self._parsed(parse_grpc_array, self._predict(request))
        if restored.ndim != 4 or restored.shape[-1] != batch.shape[-1]:
            raise ValueError(f"TF Serving at {self.server} returned shape {restored.shape} for "
                             f"a batch of shape {batch.shape}")
        self._check_count(len(restored), len(batch))
        self._check_size("the batch", batch.shape[2:0:-1], restored.shape[2:0:-1])
        bad = restored.size - np.count_nonzero(np.isfinite(restored))
        if bad:
            raise ValueError(f"TF Serving at {self.server} returned {bad} NaN or infinite values")
        return restored

    def _parsed(self, parse, reply):
        """`parse(reply)`, a reply of the wrong structure reported as the server's fault."""
        try:
            return parse(reply)
        except (KeyError, IndexError, TypeError, ValueError, binascii.Error) as error:
            raise ValueError(f"TF Serving at {self.server} sent a reply without the expected "
                             f"predictions ({type(error).__name__}: {error})") from None

    def _check_count(self, got, sent):
        if got != sent:
            raise ValueError(f"TF Serving at {self.server} returned {got} results for {sent} "
                             "images")

    def _check_size(self, what, size, restored_size):
        """`restored_size` (width, height) must be `size` times the scale (by default, any
        whole multiple: the server knows the model's scale, the client may not)."""
        (width, height), (out_width, out_height) = size, restored_size
        scale = self.scale or out_width // max(width, 1)
        if scale < 1 or (out_width, out_height) != (width * scale, height * scale):
            expected = f"x{self.scale}" if self.scale else "a whole multiple"
            raise ValueError(f"TF Serving at {self.server} returned {what} at "
                             f"{out_width}x{out_height} for {width}x{height} pixels "
                             f"(expected {expected})")

    def _post(self, body):
        url = self.server
        status, data = post(url, json.dumps(body).encode(), self.timeout)
        if status != 200:
            detail = " ".join(data.decode(errors="replace").split())[:300]  # one line
            raise ValueError(f"TF Serving at {url} answered {status}: {detail}")
        try:
            return json.loads(data)
        except ValueError:
            shown = repr(data[:80]) if data else "an empty body"
            raise ValueError(f"TF Serving at {url} answered 200 but not with JSON: "
                             f"{shown}") from None

    def _predict(self, request):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        target = self.server
        with grpc.insecure_channel(target) as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            try:  # gRPC's timeout is a deadline for the whole call
                return stub.Predict(request, timeout=self.timeout)
            except grpc.RpcError as error:
                detail = error.details()
                if error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                    raise ConnectionError(f"cannot reach TF Serving at {target}: {detail}") from None
                raise ValueError(f"TF Serving at {target} answered {error.code().name}: {detail}") from None


def _checked_size(data, what, formats=None):
    """(width, height) of encoded image bytes; a `ValueError` starting with `what` if Pillow
    cannot decode them all, they are not in `formats`, or they hold several frames."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data), formats=formats) as image:
            image.load()
            frames, size = getattr(image, "n_frames", 1), image.size
    except Exception as error:  # Pillow raises many types for bytes that are not an image
        kind = " or ".join(formats) if formats else "an image"
        start = f", starting {data[:16]!r}" if data else ""
        raise ValueError(f"{what} not {kind} ({len(data)} bytes{start}: {error})") from None
    if frames > 1:  # the server would restore the first frame alone
        raise ValueError(f"{what} an animation of {frames} frames; only single images are "
                         "restored")
    return size


def restore_file(in_path, out_path, client):
    """Send the image file `in_path` through `client`; write the restored PNG to `out_path`.

    Checked before anything is sent: the input is a single image, `out_path` is not the input
    and its folder can be written. Nothing is written unless the reply passed the checks.
    """
    refuse_overwriting_inputs([out_path], [in_path])
    with open(in_path, "rb") as file:
        data = file.read()
    _checked_size(data, f"{in_path} is")
    with output_file_folder(out_path):
        (png,) = client.restore_bytes([data])
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
    parser.add_argument("--timeout", type=float, default=60.0,
                        help="seconds for the whole call, connecting and reading included")
    parser.add_argument("--scale", type=int,
                        help="the model's scale, to check the reply's size exactly (default: "
                             "any whole multiple of the input's)")


@_cli.reports_user_errors
def run(args):
    """Restore `args.input` into `args.output` through the server `args` name."""
    client = ServingClient(args.host, args.port, model=args.model, protocol=args.protocol,
                           version=args.version, timeout=args.timeout, scale=args.scale)
    restore_file(args.input, args.output, client)
    print(f"restored {args.input} -> {args.output} via {args.protocol} {args.host}:{client.port}")


def main(argv=None):
    """`python -m export.client IN OUT.png --model NAME [--protocol grpc] [--host H --port P]`."""
    return _cli.main("python -m export.client", DESCRIPTION, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
