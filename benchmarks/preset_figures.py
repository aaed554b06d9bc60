"""Before/after pictures of the shipped presets, for docs/models.md.

    python -m benchmarks.preset_figures [NAME ...] --out docs/images

For each preset, its built-in check image (`training.presets.check_image`) as the preset's
check measures it: one PNG `preset-<name>.png` of three panels side by side, the task's
baseline (bicubic, the noisy input, the unfiltered image) | the preset's restoration | the
target (the original image; for smoothing, the filter's own output), with their PSNR in the
card's check. Panels are the restorations `training.evaluate` saved, not re-rendered.
"""

import argparse
import os
import tempfile

import numpy as np

from pnen_tf import image_io
from pnen_tf.models.presets import PRESETS, is_shipped
from training.presets import check_image, measure_check
from training.tasks import TASKS, configure

GAP = 4  # white pixels between panels


def figure(name, out_dir):
    """Write `out_dir/preset-<name>.png`; returns (path, model PSNR, baseline PSNR)."""
    row = PRESETS[name]
    image_name, truth = check_image(row)
    with tempfile.TemporaryDirectory() as tmp:
        model_psnr, base_psnr = measure_check(name, save=tmp)
        baseline = TASKS[row["task"]].baseline
        panels = [_read(os.path.join(tmp, source, "check", f"{image_name}.png"))
                  for source in (baseline, name)]
    _, target = configure({**row, "target_cache": None}).evaluation_pair(image_name, truth)
    panels.append(target)
    channels = max(p.shape[-1] if p.ndim == 3 else 1 for p in panels)
    panels = [_as_channels(p, channels) for p in panels]
    height = max(p.shape[0] for p in panels)
    gap = np.full((height, GAP, channels), 255, np.uint8)
    strip = np.concatenate(sum(([_pad(p, height), gap] for p in panels), [])[:-1], axis=1)
    path = os.path.join(out_dir, f"preset-{name}.png")
    image_io.write_image(path, strip / 255.0)
    return path, model_psnr, base_psnr


def _read(path):
    return image_io.to_integers(image_io.read_image(path).pixels)


def _as_channels(pixels, channels):
    pixels = pixels if pixels.ndim == 3 else pixels[..., None]
    return np.repeat(pixels, channels // pixels.shape[-1], axis=-1).astype(np.uint8)


def _pad(pixels, height):
    return np.pad(pixels, ((0, height - pixels.shape[0]), (0, 0), (0, 0)), constant_values=255)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="presets (default: every shipped one)")
    parser.add_argument("--out", default="docs/images", help="folder of the pictures")
    args = parser.parse_args(argv)
    for name in args.names or [n for n in PRESETS if is_shipped(n)]:
        path, model_psnr, base_psnr = figure(name, args.out)
        print(f"{path}: {TASKS[PRESETS[name]['task']].baseline} {base_psnr:.2f} dB | "
              f"{name} {model_psnr:.2f} dB | target")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
