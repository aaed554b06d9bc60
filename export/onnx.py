"""Export a `.keras` model to ONNX with tf2onnx, checked against Keras with onnxruntime.

The graph takes `images`, float32 `[batch, height, width, channels]` in [0, 1], with dynamic
batch, height and width, like the SavedModel's `serving_default`. Right after conversion the
file is run by onnxruntime on a probe image whose sides are not multiples of the pyramid
strides (so the padding path is exercised) and compared with Keras; the file is moved into
place only if the largest absolute difference is within `atol`. The model's facts travel in
the ONNX metadata property `pnen_tf` (see `read_export_info`).

Example:

    python -m export.onnx --model pnen.keras --out pnen.onnx --opset 17
"""

import logging

import numpy as np
import tensorflow as tf
from tf2onnx import constants as tf2onnx_constants

from export import _cli
from export._atomic import staged_file
from export._info import ONNX_METADATA_KEY, info_json, read_export_info
from export._model import load
from export.signatures import IMAGES

# tf2onnx 1.17 converts for opsets up to 18; below 13 Softmax and Split change meaning.
SUPPORTED_OPSETS = range(13, max(tf2onnx_constants.OPSET_TO_IR_VERSION) + 1)
DEFAULT_OPSET = tf2onnx_constants.PREFERRED_OPSET
DEFAULT_ATOL = 1e-4
PROBE_SIZE = (21, 27)

__all__ = ["export_onnx", "max_abs_error", "read_export_info", "add_arguments", "run", "main"]


def export_onnx(model_path, out, *, opset=None, atol=DEFAULT_ATOL):
    """Convert the `.keras` file `model_path` to the ONNX file `out`; return the probe error.

    Raises `ValueError` for an opset outside `SUPPORTED_OPSETS`, an `out` not ending in
    `.onnx`, or an onnxruntime result further than `atol` from Keras (nothing is written then).
    """
    opset = _check_opset(opset)
    if not str(out).endswith(".onnx"):
        raise ValueError(f"the ONNX file name must end in '.onnx', got {out!r}")
    model, info = load(model_path)
    info["export"]["onnx_opset"] = opset
    probe = np.random.default_rng(0).uniform(size=(1, *PROBE_SIZE, info["in_channels"]))
    probe = probe.astype(np.float32)
    # `predict` runs a compiled graph (eager tiled attention is slow) and also makes the call
    # that Keras' ONNX export needs on a freshly loaded model.
    expected = model.predict(probe, verbose=0)
    spec = tf.TensorSpec([None, None, None, info["in_channels"]], tf.float32, name=IMAGES)
    with staged_file(out, suffix=".onnx") as staging:
        _quiet_tf2onnx()
        model.export(staging, format="onnx", input_signature=[spec], opset_version=opset, verbose=False)
        _add_metadata(staging, info)
        error = max_abs_error(staging, probe, expected)
        if not error <= atol:  # `not <=` also rejects NaN
            raise ValueError(
                f"onnxruntime's result for {model_path!r} differs from Keras by {error:.3g} "
                f"(> atol {atol:g}) on a {PROBE_SIZE} probe; {out!r} was not written"
            )
    return error


def max_abs_error(onnx_path, images, expected):
    """Largest absolute difference between onnxruntime's output for `images` and `expected`."""
    import onnxruntime

    session = onnxruntime.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    (restored,) = session.run(None, {session.get_inputs()[0].name: images})
    return float(np.max(np.abs(restored - expected)))


def _check_opset(opset):
    if opset is None:
        return DEFAULT_OPSET
    if isinstance(opset, bool) or not str(opset).isdigit() or int(opset) not in SUPPORTED_OPSETS:
        raise ValueError(
            f"unknown ONNX opset {opset!r}: tf2onnx converts for opsets "
            f"{SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}"
        )
    return int(opset)


def _add_metadata(onnx_path, info):
    import onnx

    model = onnx.load(onnx_path)
    entry = model.metadata_props.add()
    entry.key, entry.value = ONNX_METADATA_KEY, info_json(info)
    onnx.save(model, onnx_path)


def _quiet_tf2onnx():
    # tf2onnx logs every rewrite pass at INFO; our own summary line is enough.
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)


DESCRIPTION = "convert a .keras model to ONNX and check it with onnxruntime"


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="the .keras file to convert")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", help=f"ONNX opset, {SUPPORTED_OPSETS.start}.."
                        f"{SUPPORTED_OPSETS.stop - 1} (default {DEFAULT_OPSET})")
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL,
                        help="largest accepted |onnxruntime - Keras| on the probe image")


@_cli.reports_user_errors
def run(args):
    """Convert as the parsed `args` say; print the measured probe error."""
    error = export_onnx(args.model, args.out, opset=args.opset, atol=args.atol)
    print(f"exported {args.model} to {args.out}; max |onnxruntime - keras| = {error:.3g}")


def main(argv=None):
    """`python -m export.onnx --model M.keras --out M.onnx [--opset N] [--atol X]`."""
    return _cli.main("python -m export.onnx", DESCRIPTION, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
