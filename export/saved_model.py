"""Export a `.keras` model as a SavedModel laid out for TF Serving: `DIR/NAME/VERSION/`.

Two signatures, both with dynamic batch, height and width:

- `serving_default`: `images`, float32 `[batch, height, width, channels]` in [0, 1] ->
  `restored`, float32 (height and width times `scale` for a model that takes the LR image).
- `restore_image`: `image_bytes`, encoded PNG/JPEG/BMP/GIF as a string tensor of shape
  `[batch]` or a scalar -> `png_bytes`, PNG of the same shape. Images in one batch may differ
  in size (names: `export.signatures`). A NaN or infinite model output fails the request
  (`InvalidArgument`) rather than come back as black pixels.

The model's facts are stored as an asset (`pnen_tf.model_info`; see `read_export_info`).

Example:

    python -m export.saved_model --model pnen.keras --out models/pnen --version 1
    python -m tensorflow.python.tools.saved_model_cli show --dir models/pnen/1 --all
"""

import os

import keras
import tensorflow as tf

from export import _cli
from export._atomic import staged_dir
from export._info import read_export_info
from export._model import load
from export.signatures import (
    BYTES_SIGNATURE, IMAGE_BYTES, IMAGES, PNG_BYTES, RESTORED, SERVING_SIGNATURE,
)

# Serving needs no gradients; tracing the attention's custom gradient would double the save time.
_SAVE_OPTIONS = tf.saved_model.SaveOptions(experimental_custom_gradients=False)

__all__ = ["export_saved_model", "read_export_info", "add_arguments", "run", "main"]


def export_saved_model(model_path, out, version, *, force=False):
    """Export the `.keras` file `model_path` as version `version` under `out`; return its path.

    An existing version is replaced only with `force`, and only once the new one is complete.
    """
    target = os.path.join(out, str(_check_version(version)))
    if os.path.exists(target) and not force:
        raise FileExistsError(f"{target!r} already exists; pass --force to replace it")
    model, info = load(model_path)
    archive = _archive(model, info)
    with staged_dir(target, replace=force) as staging:
        archive.write_out(staging, options=_SAVE_OPTIONS, verbose=False)
        info.write(staging)
    return target


def _check_version(version):
    if isinstance(version, bool) or not str(version).isdigit() or int(version) < 1:
        raise ValueError(f"version must be a positive integer (TF Serving's layout), got {version!r}")
    return int(version)


def _archive(model, info):
    spec = tf.TensorSpec([None, None, None, info.in_channels], tf.float32, name=IMAGES)
    # One traced graph of the model serves both signatures: tracing the tiled attention takes
    # seconds, and the archive would otherwise retrace the model per signature and per save pass.
    restore = tf.function(lambda images: model(images, training=False)).get_concrete_function(spec)
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        SERVING_SIGNATURE, lambda images: {RESTORED: restore(images)}, input_signature=[spec]
    )
    archive.add_endpoint(
        BYTES_SIGNATURE,
        _bytes_endpoint(restore, info),
        # Unknown rank: REST's row format sends [batch], its columnar format may send a scalar.
        input_signature=[tf.TensorSpec(None, tf.string, name=IMAGE_BYTES)],
    )
    return archive


def _bytes_endpoint(restore, info):
    """decode -> (bicubic upsampling) -> `restore` -> clip, round -> encode PNG, per image."""
    prepare = _input_preparation(info)

    def restore_one(data):
        image = tf.io.decode_image(
            data, channels=info.in_channels, expand_animations=False, dtype=tf.float32
        )
        restored = restore(prepare(image[tf.newaxis]))[0]
        # Clipped and encoded, NaN would be a black pixel: the request fails instead.
        restored = tf.debugging.assert_all_finite(
            restored, "the model's output holds NaN or infinite values")
        pixels = tf.round(tf.clip_by_value(restored, 0.0, 1.0) * 255.0)
        return tf.io.encode_png(tf.cast(pixels, tf.uint8))

    def restore_image(image_bytes):
        # One image at a time, so a batch may mix sizes.
        pngs = tf.map_fn(
            restore_one,
            tf.reshape(image_bytes, [-1]),
            fn_output_signature=tf.TensorSpec([], tf.string),
        )
        return {PNG_BYTES: tf.reshape(pngs, tf.shape(image_bytes))}

    return restore_image


def _input_preparation(info):
    """What turns a decoded image into the model's input: bicubic upsampling for 'upsampled'."""
    if info.input != "upsampled":
        return lambda batch: batch
    from pnen_tf.apps.imresize import imresize

    return lambda batch: imresize(batch, scale=info.scale)


DESCRIPTION = "export a .keras model as a TF Serving SavedModel (DIR/NAME/VERSION)"


def add_arguments(parser):
    parser.add_argument("--model", required=True, help="the .keras file to export, or a preset name (`pnen-tf presets`)")
    parser.add_argument("--out", required=True, help="the model directory DIR/NAME")
    parser.add_argument("--version", required=True, help="the version number N (positive)")
    parser.add_argument("--force", action="store_true", help="replace an existing version")


@_cli.reports_user_errors
def run(args):
    """Export as the parsed `args` say; print where to."""
    target = export_saved_model(args.model, args.out, args.version, force=args.force)
    print(f"exported {args.model} to {target} (signatures {SERVING_SIGNATURE}, {BYTES_SIGNATURE})")


def main(argv=None):
    """`python -m export.saved_model --model M.keras --out DIR/NAME --version N [--force]`."""
    return _cli.main("python -m export.saved_model", DESCRIPTION, add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
