"""JPEG artifact removal: the IJG encoder at the standard tables, its flags, evaluation,
training and restoring through the task registry."""

import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from pnen_tf import image_io
from pnen_tf.apps import cli
from pnen_tf.metrics import calculate_psnr
from pnen_tf.model_info import ModelInfo
from training import evaluate, fit
from training.config import parser, resolve
from training.tasks import configure
from training.tasks.jpeg import jpeg_roundtrip

# ITU-T T.81 Annex K, Table K.1: the IJG library's standard luminance table (natural order).
LUMINANCE = [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
             14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
             18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
             49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]


def _photo(shape, seed=0):
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 220, shape[1])[None, :, None] * np.ones(shape)
    return np.clip(ramp + rng.normal(0, 12, shape), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("quality", [10, 40])
def test_the_encoder_uses_the_ijg_tables_scaled_to_the_quality(quality):
    buffer = io.BytesIO()
    Image.fromarray(_photo((32, 32, 1))[..., 0]).save(buffer, "JPEG", quality=quality)
    table = Image.open(buffer).quantization[0]
    # libjpeg's jpeg_quality_scaling and jpeg_add_quant_table (baseline: at most 255)
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    expected = [min(max((q * scale + 50) // 100, 1), 255) for q in LUMINANCE]
    assert sorted(table) == sorted(expected)


def test_roundtrip_keeps_the_mode_and_loses_more_at_lower_quality():
    rgb, gray = _photo((40, 48, 3)), _photo((40, 48, 1), seed=1)
    assert jpeg_roundtrip(rgb, 10).shape == rgb.shape
    assert jpeg_roundtrip(gray, 10).shape == gray.shape
    np.testing.assert_array_equal(jpeg_roundtrip(gray, 10), jpeg_roundtrip(gray, 10))
    psnr = {q: calculate_psnr(gray, jpeg_roundtrip(gray, q)) for q in (10, 20, 30, 40)}
    assert psnr[10] < psnr[20] < psnr[30] < psnr[40] < 60
    # A gray image is encoded as a gray JPEG, not as RGB: one component.
    buffer = io.BytesIO()
    Image.fromarray(gray[..., 0]).save(buffer, "JPEG", quality=10)
    assert Image.open(buffer).mode == "L"


def test_flags_resolve_to_a_quality_run_name_and_a_gray_model():
    config = resolve(parser().parse_args(["--task", "jpeg"]))
    assert config["quality"] == 10 and config["out"].endswith("jpeg-memnet-q10")
    assert config["scale"] == 1 and config["in_channels"] == 1 and config["input"] == "same"
    assert config["sigma"] is config["filter"] is None
    assert resolve(parser().parse_args(["--task", "jpeg", "--quality", "30", "--model", "rdn"])
                   )["out"].endswith("jpeg-rdn-q30")
    assert resolve(parser().parse_args(["--task", "sr", "--quality", "20"]))["quality"] is None
    with pytest.raises(ValueError, match="use memnet or rdn"):
        resolve(parser().parse_args(["--task", "jpeg", "--model", "pnen"]))
    with pytest.raises(SystemExit):
        parser().parse_args(["--task", "jpeg", "--quality", "50"])


def test_training_pairs_and_protocol():
    task = configure({"task": "jpeg", "quality": 20})
    image = _photo((24, 32, 1))
    (inp, target), = task.training_pairs([("a", image)], "same")
    np.testing.assert_array_equal(inp, jpeg_roundtrip(image, 20))
    assert target is image
    rgb = _photo((24, 32, 3))
    pixels, truth = task.evaluation_pair("a.png", rgb)
    np.testing.assert_array_equal(pixels, jpeg_roundtrip(rgb, 20) / np.float32(255))
    assert truth is rgb and task.test_y_channel and task.shave == 0
    assert task.restore_baseline(pixels) is pixels


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("jpeg")
    for split, count in (("train", 3), ("val", 1)):
        os.makedirs(root / split)
        for i in range(count):
            image_io.write_image(str(root / split / f"{i}.png"), _photo((40, 44, 3), i) / 255.0)
    image_io.write_image(str(root / "val" / "gray.png"), _photo((30, 36, 1), 9) / 255.0)
    return str(root / "train"), str(root / "val")


def test_the_baseline_is_the_jpeg_image_measured_on_y(folders, tmp_path):
    out = str(tmp_path / "report")
    assert evaluate.main(["--task", "jpeg", "--quality", "10", "--baseline", "jpeg",
                          "--data", folders[1], "--out", out]) == 0
    report = json.load(open(os.path.join(out, "results.json")))
    assert report["config"]["quality"] == 10 and report["config"]["test_y_channel"] is True
    rows = {r["image"]: r["psnr"] for r in report["folders"]["val"]["images"]}
    for name in ("0.png", "gray.png"):
        truth = image_io.to_integers(image_io.read_image(os.path.join(folders[1], name)).pixels)
        expected = calculate_psnr(truth, jpeg_roundtrip(truth, 10), 0, True)
        assert rows[name] == pytest.approx(expected, abs=1e-4)
    assert evaluate.main(["--task", "jpeg", "--baseline", "jpeg", "--data", folders[1]]) == 2
    assert evaluate.main(["--task", "jpeg", "--quality", "10", "--baseline", "noisy",
                          "--data", folders[1]]) == 2


def test_trains_evaluates_and_restores(folders, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert fit.main(["--task", "jpeg", "--quality", "20", "--data", folders[0], "--val",
                     folders[1], "--epochs", "1", "--out", out, "--channels", "8",
                     "--num-memory-blocks", "1", "--num-recursions", "1", "--nonlocal", "none",
                     "--patch", "24", "--batch", "2", "--steps-per-epoch", "3"]) == 0
    assert "baseline" in capsys.readouterr().out
    model = os.path.join(out, "best.keras")
    info = ModelInfo.read(model)
    assert {k: info.get(k) for k in ("task", "quality", "in_channels", "input", "scale")} == \
        {"task": "jpeg", "quality": 20, "in_channels": 1, "input": "same", "scale": 1}
    report = str(tmp_path / "eval")
    assert evaluate.main(["--model", model, "--data", folders[1], "--out", report]) == 0
    assert json.load(open(os.path.join(report, "results.json")))["config"]["quality"] == 20
    photo = str(tmp_path / "photo.jpg")
    Image.fromarray(_photo((30, 34, 3))).save(photo, "JPEG", quality=20)
    assert cli.main(["restore", photo, "--model", model, "-o", str(tmp_path / "restored")]) == 0
    restored = image_io.read_image(str(tmp_path / "restored" / "photo.png")).pixels
    assert restored.shape == (30, 34, 3)
