"""Bicubic baselines on Set5 against the literature: ×2 33.66, ×3 30.39, ×4 28.42 dB.

    python benchmarks/bicubic_set5.py [SET5_DIR]      (default /work/shared/datasets/Set5)

Row "rgb" is `python -m training.evaluate --baseline bicubic`'s protocol: HR modcropped,
LR = uint8(round(imresize(HR, 1/s))), SR = uint8(round(imresize(LR, s))) in RGB, PSNR on
BT.601 Y, shave s. Row "y" is the float protocol of the VDSR/MemNet MATLAB scripts: Y of
uint8 `rgb2ycbcr`, resized down and up without rounding. Exits 1 if a row is more than
0.03 dB from the literature.
"""

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pnen_tf import image_io  # noqa: E402
from pnen_tf.apps.imresize import imresize, modcrop  # noqa: E402
from pnen_tf.metrics import calculate_psnr, calculate_ssim, rgb_to_ycbcr  # noqa: E402
from training import evaluate  # noqa: E402

LITERATURE = {2: 33.66, 3: 30.39, 4: 28.42}
TOLERANCE = 0.03


def rgb_protocol(folder, scale):
    """Mean (PSNR, SSIM) through `training.evaluate`'s bicubic baseline."""
    args = argparse.Namespace(task="sr", scale=scale, test_y_channel=True, shave=scale, save=None)
    rows, failed = evaluate.evaluate_folder(args, folder, evaluate.baseline("bicubic", scale))
    if failed or not rows:
        raise SystemExit(f"{folder}: could not read the Set5 images")
    return np.mean([r["psnr"] for r in rows]), np.mean([r["ssim"] for r in rows])


def y_protocol(folder, scale):
    """Mean (PSNR, SSIM) with the float Y-channel pipeline of the MATLAB SR scripts."""
    scores = []
    for path in image_io.list_images(folder):
        rgb = modcrop(image_io.read_image(path).pixels, scale)
        y = image_io.to_integers(rgb_to_ycbcr(rgb)[..., :1]) / 255.0
        sr = 255.0 * imresize(imresize(y, 1.0 / scale), scale).numpy()
        scores.append((calculate_psnr(255.0 * y, sr, scale), calculate_ssim(255.0 * y, sr, scale)))
    return tuple(np.mean(scores, axis=0))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set5", nargs="?", default="/work/shared/datasets/Set5")
    folder = parser.parse_args(argv).set5
    print(f"{'scale':>5} {'protocol':>8} {'PSNR':>7} {'SSIM':>7} {'paper':>6} {'diff':>6}")
    worst = 0.0
    for scale, expected in LITERATURE.items():
        for name, protocol in (("rgb", rgb_protocol), ("y", y_protocol)):
            psnr, ssim = protocol(folder, scale)
            worst = max(worst, abs(psnr - expected))
            print(f"{scale:>5} {name:>8} {psnr:>7.2f} {ssim:>7.4f} {expected:>6.2f} "
                  f"{psnr - expected:>+6.3f}")
    ok = worst <= TOLERANCE
    print(f"largest difference {worst:.3f} dB: {'OK' if ok else 'FAIL'} (tolerance {TOLERANCE})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
