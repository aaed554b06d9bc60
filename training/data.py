"""Training and validation data: image folders -> (input, target) pairs -> `tf.data` batches.

Images are decoded once (`pnen_tf.image_io`, which names the file of any decoding problem),
brought to the model's channels, degraded once per whole image by their task
(`training.tasks`: bicubic SR pairs, cached smoothing targets, JPEG images), and held in
memory as uint8. The training stream crops random patches, applies the paper's flips and
90-degree rotations and what the task draws per patch (denoising's noise; Sec. IV-A, V).

Every training element n is a pure function of (seed, n): the image and crop come from a NumPy
random generator seeded with [seed, n], the augmentation and noise from stateless TF ops seeded with
(seed, n). A run resumed at step k therefore sees exactly the batches the uninterrupted run
would have seen, and `--seed` reproduces a run.
"""

import logging
import os

import numpy as np
import tensorflow as tf

from pnen_tf import image_io
from training import degradations

log = logging.getLogger("training")


class DataError(ValueError):
    """A problem with the user's images; the message says which file or folder and why."""


def list_folder(folder):
    """Image files in `folder`, or a `DataError` saying why there are none."""
    if not os.path.isdir(folder):
        raise DataError(f"{folder}: no such directory")
    paths = image_io.list_images(folder)
    if not paths:
        raise DataError(f"{folder}: no images found (looked for {', '.join(image_io.IMAGE_EXTENSIONS)})")
    return paths


def folder_list(value):
    """config.json's --data / --val as a list: None, one folder (a string) or several."""
    return [] if value is None else [value] if isinstance(value, str) else list(value)


def list_folders(folders):
    """The image files of each folder (one list per folder, in the order given)."""
    real = [os.path.realpath(folder) for folder in folders]
    twice = sorted({f for f, r in zip(folders, real) if real.count(r) > 1})
    if twice:
        raise DataError(f"{', '.join(twice)}: the same folder given twice")
    return [list_folder(folder) for folder in folders]


def hold_out(per_folder, every=20):
    """(training paths, validation paths): the last 1/`every` of each folder's sorted images.

    Each folder with two images or more gives max(1, n // every) of its last ones, so the
    split is deterministic and validation sees every source; a folder of one image trains.
    """
    train, held = [], []
    for paths in per_folder:
        count = max(1, len(paths) // every) if len(paths) > 1 else 0
        train += paths[:len(paths) - count]
        held += paths[len(paths) - count:]
    if not held:
        raise DataError(f"{', '.join(os.path.dirname(p[0]) for p in per_folder)}: one image "
                        "only; pass --val DIR")
    return train, held


def load_images(paths, channels, min_side):
    """Decode `paths` to uint8 [H, W, channels]; skip (with a warning) what cannot be used.

    Unreadable files and images with a side below `min_side` are skipped. Gray images for an
    RGB model are replicated to RGB and RGB images for a gray model reduced to Y; a folder
    that mixes both gets a warning listing the converted ones, as it is often a mistake.
    """
    images, converted = [], []
    for path in paths:
        try:
            loaded = image_io.read_image(path)
        except image_io.ImageReadError as error:
            log.warning("skipping %s", error)
            continue
        pixels = image_io.to_integers(loaded.pixels)
        if min(pixels.shape[:2]) < min_side:
            log.warning("skipping %s: %dx%d pixels, smaller than the %d-pixel patch",
                        path, pixels.shape[1], pixels.shape[0], min_side)
            continue
        if pixels.shape[-1] != channels:
            converted.append(os.path.basename(path))
        images.append((path, degradations.to_channels(pixels, channels)))
    if converted:
        what = "reduced to Y (gray model)" if channels == 1 else "replicated to RGB (RGB model)"
        # All-RGB data for a gray model is the SR/denoising norm; a mixed folder is not.
        report = log.warning if len(converted) < len(images) else log.info
        report("%d image(s) %s: %s", len(converted), what, ", ".join(converted[:10]))
    if not images:
        raise DataError(f"none of the {len(paths)} image(s) is usable for training "
                        f"(see the warnings above; patches need {min_side}x{min_side} pixels)")
    return images


def center_crop(images, size):
    """Central `size` x `size` crops of (path, image) items (images already smaller: kept).

    Non-local attention is quadratic in the image area, so whole-image validation of a
    non-local model is slow on a CPU; `--val-crop` trades coverage for time.
    """
    return [(path, center_crop_array(image, size)) for path, image in images]


def center_crop_array(image, size):
    """The central `size` x `size` window of an [H, W, ...] array (all of a smaller side)."""
    top, left = max(0, (image.shape[0] - size) // 2), max(0, (image.shape[1] - size) // 2)
    return image[top:top + size, left:left + size]


def _crop(pair, patch, ratio, rng):
    """Aligned random crops: `patch` pixels of the target, `patch // ratio` of an LR input."""
    inp, target = pair
    size = patch // ratio
    top = rng.integers(0, inp.shape[0] - size + 1)
    left = rng.integers(0, inp.shape[1] - size + 1)
    t, l, p = top * ratio, left * ratio, size * ratio
    return inp[top:top + size, left:left + size], target[t:t + p, l:l + p]


def train_dataset(pairs, *, patch, batch, seed, task, start_step=0):
    """Infinite stream of (input, target) float32 batches in [0, 1] (input unclipped if noisy).

    Args:
        pairs: from the task's `training_pairs`; an LR input is `ratio` times smaller than
            its target.
        patch: target patch side (the paper's 96); an LR input patch is `patch // scale`.
        batch: global batch size (split across replicas by the distribution strategy).
        seed: run seed; element n depends on (seed, n) only.
        task: the configured task (`training.tasks.configure`), whose `train_input` adds
            what is drawn per patch (denoising's noise).
        start_step: first batch to produce (to resume).
    """
    ratio = pairs[0][1].shape[0] // pairs[0][0].shape[0]
    channels = pairs[0][0].shape[-1]
    size = patch // ratio

    def crop(n):
        rng = np.random.default_rng([seed, int(n)])
        return _crop(pairs[rng.integers(len(pairs))], size * ratio, ratio, rng)

    def load(n):
        # numpy_function, not from_generator: a stateless function of n, so the stream
        # can start anywhere and no generator thread outlives the run.
        inp, target = tf.numpy_function(crop, [n], [tf.as_dtype(pairs[0][0].dtype), tf.uint8],
                                        stateful=False)
        inp.set_shape([size, size, channels])
        target.set_shape([size * ratio, size * ratio, channels])
        return n, inp, target

    def transform(n, inp, target):
        element_seed = tf.stack([tf.cast(seed, tf.int64), n])
        inp, target = degradations.augment((inp, target), element_seed)
        inp = tf.image.convert_image_dtype(inp, tf.float32)
        target = tf.image.convert_image_dtype(target, tf.float32)
        return task.train_input(inp, element_seed), target

    dataset = tf.data.Dataset.counter(start_step * batch).map(load)
    dataset = dataset.map(transform, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    dataset = dataset.batch(batch, drop_remainder=True).prefetch(tf.data.AUTOTUNE)
    options = tf.data.Options()
    # Each worker builds the same stream and keeps its share of every global batch: the
    # stream has no files to shard by.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def validation_set(pairs, *, task, convention="same", level=None, seed=0):
    """Whole validation images as float32 [H, W, C] dicts: input, target and baseline.

    The configured `task` makes the input (denoising's noise at `level`, default its sigma) and
    the baseline the network must beat (the noisy input, the bicubic upsampling, the
    unfiltered image, the JPEG image). Validation noise is drawn once from `seed`, so scores
    are comparable from epoch to epoch.
    """
    rng = np.random.default_rng([seed, 2**31])
    items = []
    for inp, target in pairs:
        inp = task.validation_input(tf.image.convert_image_dtype(inp, tf.float32).numpy(), rng,
                                    level)
        items.append({"input": inp, "target": target.astype(np.float32) / 255.0,
                      "baseline": task.validation_baseline(inp, convention)})
    return items
