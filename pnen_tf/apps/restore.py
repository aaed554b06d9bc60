"""Restore whole images with a trained model: `pnen-tf restore`, `python -m pnen_tf.apps.restore`.

Whole images, never tiles: the pyramid non-local attention sees the entire picture. Any mode
goes in (gray, RGB, RGBA, 16-bit PNG, EXIF-rotated JPEG) and comes out as PNG of the same
mode and bit depth; alpha is passed through (bicubic-resized for super-resolution).

The model's facts (`pnen_tf.model_info.ModelInfo`, read from the `.keras` file or the
SavedModel) say how it is fed: 'lr' models take the low-resolution image and return a
scale-times larger one (RDN), 'upsampled' models take the bicubic-upsampled image (MemNet,
the paper's SR protocol), 'same' models keep the size (denoising, smoothing). Channels are adapted: a
gray model restores the Y of an RGB image's BT.601 YCbCr (MATLAB `rgb2ycbcr`) with Cb, Cr
kept (bicubic-upsampled for SR); an RGB model restores a gray image replicated to RGB and
its output is brought back to gray with the BT.601 luma weights (0.299, 0.587, 0.114).

Example:
    pnen-tf restore photos/ --model rdn_x2.keras --output restored/ --compare
    pnen-tf restore photo.png --model denoise-gray-s50 --output restored/   # a preset
"""

import glob
import os
import sys

import numpy as np

from pnen_tf import image_io
from pnen_tf.apps._outputs import (OutputError, name_preferences, output_folder,
                                   refuse_overwriting_inputs, unique_names)
from pnen_tf.apps.imresize import imresize
from pnen_tf.metrics import rgb_to_ycbcr, ycbcr_to_rgb
from pnen_tf.model_info import ModelInfo

MIN_SIDE = 2  # a single row or column carries no spatial context to restore from
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


class RestoreError(ValueError):
    """A problem with one input image; its message names the file and the problem."""


class Restorer:
    """A loaded model plus its facts; `restore(pixels)` handles sizes and channels.

    Args:
        call: function from float32 [1, h, w, c] in [0, 1] to the model's [1, h', w', c].
        info: the model's facts, a `ModelInfo` (or a dict of facts) holding `in_channels`,
            `scale` and `input` (`ModelInfo.completed` fills them in for any model).
        notify: where one-off notes go (printed once each).
    """

    def __init__(self, call, info, notify=None):
        self.call, self.info = call, ModelInfo.of(info)
        missing = [k for k in ("in_channels", "scale", "input") if self.info.get(k) is None]
        if missing:
            raise ValueError(f"Restorer: the facts lack {', '.join(missing)}")
        self.in_channels, self.scale = int(self.info.in_channels), int(self.info.scale)
        self.input = self.info.input
        self._notify = notify or (lambda message: print(message, file=sys.stderr))
        self._noted = set()

    def note(self, message):
        if message not in self._noted:
            self._noted.add(message)
            self._notify(f"note: {message}")

    def _network(self, x):
        """Run the network on float32 [h, w, c] at the network's own input convention."""
        if self.input == "upsampled" and self.scale > 1:
            x = imresize(x, self.scale).numpy()
        y = np.asarray(self.call(x[None].astype(np.float32)))[0]
        expected = (x.shape[0] * self.scale, x.shape[1] * self.scale) if self.input == "lr" \
            else x.shape[:2]
        if y.shape[:2] != tuple(expected) or y.shape[-1] != self.in_channels:
            raise RestoreError(f"model returned shape {y.shape} for input {x.shape}, "
                               f"expected {tuple(expected) + (self.in_channels,)}")
        bad = np.size(y) - np.count_nonzero(np.isfinite(y))
        if bad:  # clipped and rounded, NaN would become black pixels and a plausible score
            raise RestoreError(f"the model's output holds {bad} NaN or infinite values")
        return y

    def restore(self, pixels):
        """Restore float32 [H, W, C] (C = 1 or 3) pixels in [0, 1]; unclipped, same C."""
        channels = pixels.shape[-1]
        if min(pixels.shape[:2]) < MIN_SIDE:
            raise RestoreError(f"image is {pixels.shape[1]}x{pixels.shape[0]} pixels; "
                               f"at least {MIN_SIDE}x{MIN_SIDE} needed")
        if channels == self.in_channels:
            return self._network(pixels)
        if self.in_channels == 1:
            self.note("gray model on RGB images: restoring the Y of YCbCr, Cb/Cr kept")
            ycbcr = rgb_to_ycbcr(pixels).astype(np.float32)
            chroma = ycbcr[..., 1:]
            if self.scale > 1:
                chroma = imresize(chroma, self.scale).numpy()
            y = self._network(ycbcr[..., :1])
            return ycbcr_to_rgb(np.concatenate([y, chroma], -1)).astype(np.float32)
        self.note("RGB model on gray images: gray replicated to RGB, output back to luma")
        return (self._network(np.repeat(pixels, 3, -1)) @ _LUMA)[..., None]


def _load_saved_model(path):
    import tensorflow as tf

    signature = tf.saved_model.load(path).signatures["serving_default"]
    (name, spec), = signature.structured_input_signature[1].items()

    def call(x):
        outputs = signature(**{name: tf.constant(x)})
        # A multi-output export lists Y first ([Y, Y_1, ..., Y_M], eq. 5): output_0.
        return outputs[sorted(outputs)[0]]

    return call, spec.shape[-1]


def _load_keras(path, staged_dir=None):
    from pnen_tf import saving
    from pnen_tf.models import single_output
    from pnen_tf.staged import StagedForward, check_stageable, fingerprint

    model = single_output(saving.load_model(path))  # Y alone for multi-supervised models
    # Compiled by Keras for the backend: an eager call runs the attention's loops in Python,
    # 5x slower (PNEN at 250x200: 16.7 s against 3.2 s, 6.4 s with the tracing).
    probe, channels = model.predict_on_batch, model.inputs[0].shape[-1]
    if staged_dir is None:
        return probe, probe, channels
    check_stageable(model)

    def staged(x):
        # One run per model and network input, found again when the restore is rerun.
        run = fingerprint(model, [x])[:16]
        return StagedForward(model, os.path.join(staged_dir, run))(x)

    return staged, probe, channels


def load_restorer(path, scale=None, notify=None, staged_dir=None):
    """A `Restorer` for a `.keras` file, SavedModel directory or preset name.

    With `staged_dir` a `.keras` model runs layer by layer (`pnen_tf.staged`), every result kept
    in a subfolder of `staged_dir` per model and network input: a restore of hours that was
    interrupted goes on where it stopped when run again. (A SavedModel is one graph: refused.)

    Missing facts are inferred and reported (`ModelInfo.completed`): channels from the input
    shape, the scale of an 'lr' model from its output size on a probe image. A same-size
    model given `scale` > 1 is taken to expect the bicubic-upsampled image ('upsampled').
    """
    from pnen_tf.models.presets import resolve

    location = resolve(path)  # a preset's name: its file in the package; an existing path wins
    if not os.path.exists(location):
        raise FileNotFoundError(f"{path}: no such model file or SavedModel directory "
                                "(nor a preset: see `pnen-tf presets`)")
    if staged_dir is not None and os.path.isdir(location):
        raise ValueError(f"{path}: a SavedModel is one graph and cannot run stage by stage; "
                         f"use its .keras file with --staged-dir")
    try:
        if os.path.isdir(location):
            call, channels = _load_saved_model(location)
            probe = call
        else:
            call, probe, channels = _load_keras(location, staged_dir)
    except (OSError, ValueError):
        raise
    except Exception as error:  # TF/Keras internals: one line for the user, not a traceback
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise ValueError(f"{path}: cannot load model ({type(error).__name__}: {first_line})") \
            from None
    # The probe is not staged: a few pixels, whose stages would only be kept on disk.
    info, notes = ModelInfo.read(location).completed(channels, probe, scale, source=path)
    if scale is not None and int(scale) != info.scale:
        raise ValueError(f"{path} is a x{info.scale} model, --scale {scale} asked")
    restorer = Restorer(call, info, notify)
    for message in notes:
        restorer.note(message)
    return restorer


def expand_inputs(specs):
    """Files named by each spec (a file, a folder's images, or a glob); unmatched specs kept.

    A spec that names nothing, or a folder without images, is returned as is, so that reading
    it reports the problem.
    """
    files = []
    for spec in specs:
        if os.path.isdir(spec):
            files.extend(image_io.list_images(spec) or [spec])
        elif os.path.exists(spec) or not glob.has_magic(spec):
            files.append(spec)
        else:
            files.extend(sorted(glob.glob(spec)) or [spec])
    return files


def output_paths(files, output_dir, compare=False):
    """Per input, the PNGs it is restored into: `[NAME.png]`, or `[NAME.png, NAME_compare.png]`.

    Names are unique within the run, so no result replaces another: `a/x.jpg`, `a/x.png` and
    `b/x.png` give `x`, `x_png` and `x_png_2`.
    """
    suffixes = ("", "_compare") if compare else ("",)
    names = unique_names([name_preferences(path) for path in files], suffixes)
    return [[os.path.join(output_dir, name + suffix + ".png") for suffix in suffixes]
            for name in names]


def _side_by_side(restorer, image, restored):
    """input | output; the input bicubic-upscaled to the output size for SR."""
    shown = image.pixels
    if restorer.scale > 1:
        shown = imresize(shown, output_size=restored.shape[:2]).numpy()
    return np.concatenate([shown, restored], axis=1)


def restore_file(restorer, path, targets):
    """Restore the image file `path` into `targets` (`output_paths`: the PNG, the comparison).

    Raises `RestoreError` with one line naming the file and whether reading it, the model or
    writing failed; nothing is written unless the restoration succeeded.
    """
    if os.path.isdir(path):
        raise RestoreError(f"{path}: a folder without images "
                           f"({', '.join(image_io.IMAGE_EXTENSIONS)})")
    try:
        image = image_io.read_image(path)
    except image_io.ImageReadError as error:  # its message names the file
        raise RestoreError(str(error)) from None
    try:
        restored = restorer.restore(image.pixels)
    except RestoreError as error:
        raise RestoreError(f"{path}: {error}") from None
    except Exception as error:  # a model failure on one image must not stop the others
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise RestoreError(f"{path}: model failed: {first_line}") from None
    alpha = image.alpha
    if alpha is not None and restorer.scale > 1:
        alpha = imresize(alpha, output_size=restored.shape[:2]).numpy()
    _write(path, targets[0], restored, alpha, image.bit_depth)
    if len(targets) > 1:
        _write(path, targets[1], _side_by_side(restorer, image, restored))


def _write(path, target, pixels, alpha=None, bit_depth=8):
    """`image_io.write_image`, its failure reported as a write error of the input `path`."""
    try:
        image_io.write_image(target, pixels, alpha, bit_depth)
    except OSError as error:
        raise RestoreError(f"{path}: cannot write {target}: {error.strerror or error}") from None


def add_arguments(parser):
    parser.add_argument("inputs", nargs="+", metavar="INPUT",
                        help="image file, folder of images, or quoted glob such as 'shots/*.jpg'")
    parser.add_argument("-o", "--output", required=True,
                        help="folder for the restored PNGs (never one that holds an input: "
                             "inputs are not overwritten)")
    parser.add_argument("--model", required=True,
                        help=".keras file, SavedModel directory or preset name (pnen-tf presets)")
    parser.add_argument("--scale", type=int, default=None,
                        help="SR scale, only needed for a model that records no facts")
    parser.add_argument("--compare", action="store_true",
                        help="also write NAME_compare.png: input | output side by side")
    parser.add_argument("--staged-dir", metavar="DIR",
                        help="run a .keras model layer by layer, every result kept in DIR: an "
                             "interrupted restore (hours for a large image on a CPU) resumes "
                             "when rerun with the same DIR")


def run(args):
    """Restore every input: exit status 0 if all were written, 1 if any image failed (one
    line each), 2 if nothing was run (bad model or output location, outputs that would
    overwrite inputs)."""
    files = expand_inputs(args.inputs)
    targets = output_paths(files, args.output, args.compare)
    try:
        refuse_overwriting_inputs([t for pair in targets for t in pair], [*files, args.model])
        with output_folder(args.output):
            return _restore_all(args, files, targets)
    except OutputError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


def _restore_all(args, files, targets):
    from tqdm import tqdm

    try:
        restorer = load_restorer(args.model, args.scale, staged_dir=args.staged_dir,
                                 notify=lambda message: tqdm.write(message, file=sys.stderr))
    except (OSError, ValueError) as error:
        print(f"error: cannot load model: {error}", file=sys.stderr)
        return 2
    written = 0
    for path, pair in tqdm(list(zip(files, targets)), desc="restoring", unit="image",
                           file=sys.stderr):
        try:
            restore_file(restorer, path, pair)
            written += 1
        except RestoreError as error:
            tqdm.write(f"error: {error}", file=sys.stderr)
    failed = len(files) - written
    print(f"restored {written} of {len(files)} files into {args.output}"
          + (f"; {failed} failed" if failed else ""), file=sys.stderr)
    return 1 if failed else 0


def main(argv=None):
    from pnen_tf.apps import cli

    return cli.main(["restore", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
