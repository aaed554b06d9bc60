"""`python -m benchmarks.preset_figures`: baseline | preset | target, as the check measured."""

import numpy as np
from skimage import data
from stand_ins import save_filter

from pnen_tf.image_io import read_image
from pnen_tf.metrics import calculate_psnr
from pnen_tf.models import presets
from benchmarks import preset_figures

NAME = "denoise-gray-s30"


def test_the_picture_shows_the_noisy_input_the_restoration_and_the_original(tmp_path,
                                                                             monkeypatch):
    monkeypatch.setattr(presets, "PRESETS_DIR", str(tmp_path))
    save_filter(tmp_path / f"{NAME}.keras")
    assert preset_figures.main([NAME, "--out", str(tmp_path / "figures")]) == 0
    strip = np.round(read_image(str(tmp_path / "figures" / f"preset-{NAME}.png")).pixels * 255)
    truth = data.camera()[96:217, 160:291].astype(np.float64)
    width = truth.shape[1]
    assert strip.shape[:2] == (121, 3 * width + 2 * preset_figures.GAP)
    noisy, restored, target = (strip[:, i * (width + preset_figures.GAP):][:, :width, 0]
                               for i in range(3))
    np.testing.assert_array_equal(target, truth)
    # The noisy panel is sigma-30 noise (20 log10(255 / 30) = 18.6 dB, a little more where
    # clipping cuts it); the box filter's panel is closer to the original by dBs.
    assert 18.4 < calculate_psnr(noisy, truth) < 19.5
    assert calculate_psnr(restored, truth) > calculate_psnr(noisy, truth) + 2.5
