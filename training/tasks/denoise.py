"""Gaussian denoising, fixed sigma or blind (paper Sec. V, Table IV; DnCNN-B's recipe).

Training adds fresh white Gaussian noise of standard deviation sigma / 255 to every patch,
not clipped (the Set12/BSD68 protocol of DnCNN and MemNet); blind denoising (--sigma-range)
draws each patch's sigma uniformly from a range first and validates at several sigmas.
Validation noise is drawn once from the run seed. Evaluation: y = (x + sigma * n) / 255 with
x on [0, 255] and n ~ N(0, 1) drawn by `numpy.random.default_rng(seed)`, seed = CRC-32 of
the file's base name, so every run and every model sees the same noise; y is neither
clipped nor rounded. Measured on the image itself (RGB: all channels), no shave; the
baseline is the noisy input.
"""

import os
import zlib

import numpy as np

from training.tasks.base import Task

# Blind denoising (--sigma-range) validates at these noise levels (DnCNN-B's Set12 columns).
BLIND_VAL_SIGMAS = (15.0, 25.0, 50.0)


def add_noise(clean, sigma, seed):
    """`clean` (float in [0, 1]) plus N(0, (sigma/255)^2) noise, stateless in `seed` ([2] int)."""
    import tensorflow as tf

    noise = tf.random.stateless_normal(tf.shape(clean), seed=seed, stddev=sigma / 255.0)
    return clean + noise


def draw_sigma(sigma_range, seed):
    """A noise level uniform in [low, high) (blind denoising), stateless in `seed` ([2] int)."""
    import tensorflow as tf

    low, high = sigma_range
    return tf.random.stateless_uniform([], seed=seed, minval=low, maxval=high)


def noise_seed(path):
    """Seed of the evaluation noise for an image: CRC-32 of its base name (stable across runs)."""
    return zlib.crc32(os.path.basename(path).encode("utf-8"))


class Denoising(Task):
    name = "denoise"
    help = "Gaussian denoising"
    baseline = "noisy"
    neutral = {"sigma": None, "sigma_range": None, "val_sigmas": None}
    setting = "sigma"
    evaluate_flags = {"--sigma": dict(type=float, help="Gaussian noise level on [0, 255]")}

    @classmethod
    def add_fit_flags(cls, parser):
        noise = parser.add_mutually_exclusive_group()
        noise.add_argument("--sigma", type=float,
                           help="noise std on the 0-255 scale (--task denoise; default: 30)")
        noise.add_argument("--sigma-range", type=float, nargs=2, metavar=("LOW", "HIGH"),
                           help="blind denoising: a sigma drawn per patch uniformly from "
                                "[LOW, HIGH] (DnCNN-B: 0 55); the saved model records sigma null")
        parser.add_argument("--val-sigmas", type=float, nargs="+", metavar="SIGMA",
                            help="blind denoising: validate at each of these sigmas, the best "
                                 "model chosen on their mean PSNR (default: "
                                 f"{' '.join(f'{v:g}' for v in BLIND_VAL_SIGMAS)})")

    @classmethod
    def resolve(cls, config, args):
        """sigma (fixed noise), or sigma_range and val_sigmas (blind)."""
        if args.sigma_range is None:
            if args.val_sigmas:
                raise ValueError("--val-sigmas is for blind denoising (--sigma-range); a fixed "
                                 "--sigma validates at that sigma")
            config["sigma"] = 30.0 if args.sigma is None else args.sigma
            return
        low, high = args.sigma_range
        if not 0 <= low < high:
            raise ValueError(f"--sigma-range {low:g} {high:g}: needs 0 <= LOW < HIGH")
        config["sigma_range"] = [low, high]
        config["val_sigmas"] = list(args.val_sigmas or BLIND_VAL_SIGMAS)
        if min(config["val_sigmas"]) < 0:
            raise ValueError(f"--val-sigmas must be >= 0, got {config['val_sigmas']}")

    @classmethod
    def run_suffix(cls, config):
        return "blind" if config["sigma_range"] else f"s{config['sigma']:g}"

    @classmethod
    def facts(cls, config):
        # blind: sigma stays null, so evaluation asks for --sigma
        return {"sigma_range": config["sigma_range"]} if config["sigma_range"] else {}

    @classmethod
    def valid_setting(cls, value):
        return value is not None and value >= 0

    @classmethod
    def invalid_note(cls, info):
        blind = info.get("sigma_range")
        return (f" (the model is a blind denoiser, trained for sigma {blind[0]:g}-{blind[1]:g})"
                if blind else "")

    @property
    def sigma(self):
        return self.settings.get("sigma") or 0.0

    def train_input(self, inp, element_seed):
        sigma_range = self.settings.get("sigma_range")
        level = self.sigma if sigma_range is None else draw_sigma(sigma_range, element_seed + 3)
        return add_noise(inp, level, element_seed + 2)

    def validation_levels(self):
        return self.settings.get("val_sigmas") or [None]

    def validation_input(self, inp, rng, level=None):
        sigma = level or self.sigma
        return inp + rng.normal(0.0, sigma / 255.0, inp.shape).astype(np.float32)

    def evaluation_pair(self, path, truth):
        noise = np.random.default_rng(noise_seed(path)).standard_normal(truth.shape)
        return ((truth + self.sigma * noise) / 255.0).astype(np.float32), truth


TASK = Denoising
