"""Export a `.keras` model to ONNX with tf2onnx, checked against Keras with onnxruntime.

The graph takes `images`, float32 `[batch, height, width, channels]` in [0, 1], with dynamic
batch, height and width, like the SavedModel's `serving_default`. Right after conversion the
file is run by onnxruntime and compared with Keras on probe images (`PROBE_SIZES`): one whose
sides are not multiples of the pyramid strides (the padding paths) and one of an ordinary
photograph's size. The attention of the file tiles its queries and keys by sizes fixed at
export, which a probe small enough to be quick runs as one or two tiles; so the model is also
converted a second time with tiles so small (`MULTI_TILE`) that on `MULTI_TILE_PROBE` every
non-local block runs several query chunks and several key blocks, and that conversion is
probed too: the loops then take every path a large photograph takes. The file is moved into
place only if every difference is within `atol`. The model's facts travel in the ONNX
metadata property `pnen_tf` (see `read_export_info`).

Example:

    python -m export.onnx --model pnen.keras --out pnen.onnx --opset 17
"""

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from tf2onnx import constants as tf2onnx_constants

from export import _cli
from export._atomic import staged_file
from export._info import read_export_info
from export._model import load
from export.signatures import IMAGES
from pnen_tf.layers.nonlocal_base import NonLocalBase

# tf2onnx 1.17 converts for opsets up to 18; below 13 Softmax and Split change meaning.
SUPPORTED_OPSETS = range(13, max(tf2onnx_constants.OPSET_TO_IR_VERSION) + 1)
DEFAULT_OPSET = tf2onnx_constants.PREFERRED_OPSET
DEFAULT_ATOL = 1e-4
# Sides of odd remainders modulo the pyramid's strides, and a photograph's (multiples of 8:
# the "same" padding of a 3x3 key at stride 8 would be negative there).
PROBE_SIZES = ((21, 27), (96, 128))
# Forced tiles of the second conversion, and its probe: at strides up to 8 every attention of
# a 40x37 image has >= 25 keys (>= 2 blocks of 15) and 1,480 queries (6 chunks of 256).
MULTI_TILE = {"query_chunk": 256, "key_block": 15}
MULTI_TILE_PROBE = (40, 37)

__all__ = ["export_onnx", "max_abs_error", "read_export_info", "add_arguments", "run", "main"]


# A converted graph may differ from Keras by as much as two exact Keras evaluations of the
# model with different attention tilings differ from each other, times this: float32 rounding
# in the online softmax, amplified by the network (a random 64-channel PNEN moves its output
# by 5.7e-4 for a 1e-6 change of its input). The conversion errors this check exists for were
# 0.3-3.
NOISE_FACTOR = 4


@dataclass(frozen=True)
class Probe:
    """One check of a conversion: the probe's size, the tiles forced on the conversion (None:
    the file's own), the largest |onnxruntime - Keras| measured, and the largest difference
    between Keras with that tiling and Keras with the direct formula (the noise floor)."""

    size: tuple
    tiles: dict | None
    error: float
    noise: float

    def allowed(self, atol):
        return max(atol, NOISE_FACTOR * self.noise)

    def __str__(self):
        tiles = "" if self.tiles is None else (
            f" (forced tiles of {self.tiles['query_chunk']} queries x {self.tiles['key_block']} keys)")
        return f"{self.size[0]}x{self.size[1]}{tiles}: {self.error:.3g} (Keras tiled vs direct: {self.noise:.3g})"


def export_onnx(model_path, out, *, opset=None, atol=DEFAULT_ATOL):
    """Convert the `.keras` file `model_path` to the ONNX file `out`; return its `Probe`s.

    Raises `ValueError` for an opset outside `SUPPORTED_OPSETS`, an `out` not ending in
    `.onnx`, or an onnxruntime result on any probe further from Keras than `atol` or than
    `NOISE_FACTOR` times Keras' own tiling noise there (nothing is written then).
    """
    opset = _check_opset(opset)
    if not str(out).endswith(".onnx"):
        raise ValueError(f"the ONNX file name must end in '.onnx', got {out!r}")
    model, info = load(model_path)
    info = info.updated(export={**info.export, "onnx_opset": opset})
    rng = np.random.default_rng(0)
    images = {size: rng.uniform(size=(1, *size, info.in_channels)).astype(np.float32)
              for size in (*PROBE_SIZES, MULTI_TILE_PROBE)}
    spec = tf.TensorSpec([None, None, None, info.in_channels], tf.float32, name=IMAGES)
    # The call that Keras' ONNX export needs on a freshly loaded model.
    model.predict(images[PROBE_SIZES[0]], verbose=0)
    # Keras traced with the file's dynamic sizes tiles its attention as the file does.
    planned = {size: _traced(model, images[size], spec) for size in PROBE_SIZES}
    blocks = _nonlocal_blocks(model)
    with _attention_options(blocks, memory_budget_mb=float("inf"), query_chunk=None, key_block=None):
        direct = {size: _traced(model, image) for size, image in images.items()} if blocks else planned
    _quiet_tf2onnx()

    def convert(path):
        model.export(path, format="onnx", input_signature=[spec], opset_version=opset, verbose=False)

    def check(path, size, tiles, expected):
        noise = float(np.max(np.abs(expected - direct[size])))
        probe = Probe(size, tiles, max_abs_error(path, images[size], expected), noise)
        if not probe.error <= probe.allowed(atol):  # `not <=` also rejects NaN
            raise ValueError(
                f"onnxruntime's result for {model_path!r} differs from Keras by {probe.error:.3g} "
                f"on a {size[0]}x{size[1]} probe{'' if tiles is None else ' with forced small tiles'} "
                f"(allowed: {probe.allowed(atol):.3g}, the larger of atol {atol:g} and "
                f"{NOISE_FACTOR}x the {noise:.3g} between Keras with the file's tiles and with the "
                f"direct attention); "
                f"{out!r} was not written"
            )
        return probe

    report = []
    if blocks:
        with tempfile.TemporaryDirectory() as scratch, _attention_options(blocks, **MULTI_TILE):
            # Against Keras with the same tiles, which round as the converted graph does.
            forced = _traced(model, images[MULTI_TILE_PROBE], spec)
            multi_tile = os.path.join(scratch, "multi_tile.onnx")
            convert(multi_tile)
            report.append(check(multi_tile, MULTI_TILE_PROBE, MULTI_TILE, forced))
    with staged_file(out, suffix=".onnx") as staging:
        convert(staging)
        info.write(staging)
        report[:0] = [check(staging, size, None, planned[size]) for size in PROBE_SIZES]
    return report


def _traced(model, images, spec=None):
    """The model's output for `images`, traced anew (so that the blocks' current attention
    options are read) for `spec` (default: the images' own, static, sizes)."""
    signature = None if spec is None else [spec]
    return tf.function(lambda x: model(x, training=False), input_signature=signature)(images).numpy()


def _nonlocal_blocks(model):
    return [layer for layer in model._flatten_layers(include_self=False) if isinstance(layer, NonLocalBase)]


@contextlib.contextmanager
def _attention_options(blocks, **options):
    """Every non-local block in `blocks` plans its attention with `options` (attributes of
    `NonLocalBase`, read when a call is traced) while inside."""
    saved = [{name: getattr(block, name) for name in options} for block in blocks]
    try:
        for block in blocks:
            for name, value in options.items():
                setattr(block, name, value)
        yield
    finally:
        for block, values in zip(blocks, saved):
            for name, value in values.items():
                setattr(block, name, value)


def onnxruntime_session(onnx_path, options=None):
    """An onnxruntime CPU session of `onnx_path` whose threads flush denormal floats to zero.

    The attention's softmax gives probabilities below float32's normal range (a logit more
    than 87 below its row's largest), which the product with the values then reads; a CPU
    takes many times longer per denormal operand. TensorFlow flushes them in its threads,
    onnxruntime only with `session.set_denormal_as_zero`: PNEN then ran twice as fast, its
    largest difference from Keras unchanged (BENCHMARKS.md, section 6).

    Args:
        onnx_path: the `.onnx` file.
        options: an `onnxruntime.SessionOptions` to start from (e.g. with profiling on).
    """
    import onnxruntime

    options = options or onnxruntime.SessionOptions()
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    return onnxruntime.InferenceSession(onnx_path, options, providers=["CPUExecutionProvider"])


def max_abs_error(onnx_path, images, expected):
    """Largest absolute difference between onnxruntime's output for `images` and `expected`."""
    session = onnxruntime_session(onnx_path)
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


def _quiet_tf2onnx():
    # tf2onnx logs every rewrite pass at INFO; our own summary line is enough.
    logging.getLogger("tf2onnx").setLevel(logging.WARNING)


DESCRIPTION = "convert a .keras model to ONNX and check it with onnxruntime"


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="the .keras file to convert, or a preset name (`pnen-tf presets`)")
    parser.add_argument("--out", required=True, help="the .onnx file to write")
    parser.add_argument("--opset", help=f"ONNX opset, {SUPPORTED_OPSETS.start}.."
                        f"{SUPPORTED_OPSETS.stop - 1} (default {DEFAULT_OPSET})")
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL,
                        help="largest accepted |onnxruntime - Keras| on every probe image")


@_cli.reports_user_errors
def run(args):
    """Convert as the parsed `args` say; print the measured probe error."""
    report = export_onnx(args.model, args.out, opset=args.opset, atol=args.atol)
    checks = "; ".join(str(probe) for probe in report)
    print(f"exported {args.model} to {args.out}; max |onnxruntime - keras| on {checks}")


def main(argv=None):
    """`python -m export.onnx --model M.keras --out M.onnx [--opset N] [--atol X]`."""
    return _cli.main("python -m export.onnx", DESCRIPTION, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
