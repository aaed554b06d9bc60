"""`python -m training.evaluate`: protocols, baselines, model runs, reports and bad files."""

import csv
import json
import sys
import types

import keras
import numpy as np
import pytest

from pnen_tf import saving
from pnen_tf.image_io import read_image, to_integers, write_image
from pnen_tf.imresize import imresize
from pnen_tf.metrics import calculate_psnr, calculate_ssim
from training import evaluate


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "Tiny"
    # smooth ramps plus noise: something bicubic can partly recover
    ramp = np.linspace(0, 1, 26)[:, None, None] * np.linspace(0.2, 1, 31)[None, :, None]
    write_image(data / "a.png", np.clip(ramp + 0.05 * rng.random((26, 31, 3)), 0, 1))
    write_image(data / "b.png", rng.random((24, 24, 1)))
    return data


def _same_size_model(tmp_path, info, channels):
    inputs = keras.Input((None, None, channels))
    path = str(tmp_path / "identity.keras")
    saving.save_model(keras.Model(inputs, keras.layers.Identity()(inputs)), path, info)
    return path


def test_bicubic_baseline_matches_the_protocol_by_hand(folder, tmp_path, capsys):
    out = tmp_path / "report"
    status = evaluate.main(["--task", "sr", "--scale", "3", "--baseline", "bicubic",
                            "--data", str(folder), "--out", str(out), "--save", str(tmp_path / "s")])
    assert status == 0
    hr = to_integers(read_image(folder / "a.png").pixels)[:24, :30]  # modcrop(26x31, 3)
    lr = to_integers(imresize(hr / 255.0, 1 / 3).numpy()) / 255.0
    sr = to_integers(imresize(lr, 3).numpy())
    psnr = calculate_psnr(hr, sr, crop_border=3, test_y_channel=True)
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert [r["image"] for r in rows] == ["a.png", "b.png"]
    assert float(rows[0]["psnr"]) == pytest.approx(psnr, abs=1e-4)
    report = json.load(open(out / "results.json"))
    assert report["config"]["shave"] == 3 and report["config"]["test_y_channel"] is True
    assert report["folders"]["Tiny"]["psnr"] == pytest.approx(
        np.mean([float(r["psnr"]) for r in rows]), abs=1e-3)
    np.testing.assert_array_equal(to_integers(read_image(tmp_path / "s/Tiny/a.png").pixels), sr)
    assert "average" in capsys.readouterr().out


def test_denoising_noise_is_seeded_by_name_and_unclipped(folder):
    args = types.SimpleNamespace(task="denoise", sigma=50.0)
    truth = np.full((6, 6, 1), 250, np.uint8)
    noisy, target = evaluate.degrade(args, str(folder / "a.png"), truth)
    again, _ = evaluate.degrade(args, "/elsewhere/a.png", truth)
    other, _ = evaluate.degrade(args, "b.png", truth)
    np.testing.assert_array_equal(noisy, again)
    assert not np.array_equal(noisy, other)
    noise = np.random.default_rng(evaluate.noise_seed("a.png")).standard_normal(truth.shape)
    np.testing.assert_allclose(noisy, (250 + 50 * noise) / 255, rtol=1e-6)
    assert noisy.max() > 1  # not clipped
    assert target is truth


def test_identity_model_scores_the_noisy_baseline(folder, tmp_path):
    # A model that returns its input must reproduce the `noisy` baseline exactly: same noise,
    # same rounding, same metric. The RGB model also meets b.png (gray) and a.png (RGB).
    model = _same_size_model(tmp_path, {"task": "denoise", "in_channels": 3, "input": "same",
                                        "scale": 1, "sigma": 25}, 3)
    assert evaluate.main(["--model", model, "--data", str(folder), "--out", str(tmp_path / "m")]) == 0
    assert evaluate.main(["--task", "denoise", "--sigma", "25", "--baseline", "noisy",
                          "--data", str(folder), "--out", str(tmp_path / "b")]) == 0
    by_model = json.load(open(tmp_path / "m/results.json"))["folders"]["Tiny"]
    by_baseline = json.load(open(tmp_path / "b/results.json"))["folders"]["Tiny"]
    assert by_model["psnr"] == pytest.approx(by_baseline["psnr"], abs=1e-3)
    assert 15 < by_baseline["psnr"] < 25


def test_smoothing_targets_come_from_training_smoothing(folder, tmp_path, monkeypatch):
    fake = types.ModuleType("training.smoothing")
    fake.smooth_target = lambda image, name: (image // 2 if name == "wmf" else None)
    monkeypatch.setitem(sys.modules, "training.smoothing", fake)
    out = tmp_path / "r"
    assert evaluate.main(["--task", "smooth", "--filter", "wmf", "--baseline", "identity",
                          "--data", str(folder), "--out", str(out)]) == 0
    truth = to_integers(read_image(folder / "a.png").pixels)
    row = json.load(open(out / "results.json"))["folders"]["Tiny"]["images"][0]
    assert row["psnr"] == pytest.approx(calculate_psnr(truth // 2, truth))
    assert row["ssim"] == pytest.approx(calculate_ssim(truth // 2, truth))


def test_bad_files_and_folders_are_named_and_the_rest_measured(folder, tmp_path, capsys):
    (folder / "broken.png").write_text("not a png")
    write_image(folder / "small.png", np.zeros((5, 5, 3)))
    status = evaluate.main(["--task", "sr", "--scale", "2", "--baseline", "bicubic",
                            "--data", str(folder), str(tmp_path / "nowhere")])
    captured = capsys.readouterr()
    assert status == 1
    assert "broken.png" in captured.err and "not an image" in captured.err
    assert "small.png" in captured.err and "too small" in captured.err
    assert "nowhere: not a folder with images" in captured.err
    assert "a.png" in captured.out and "b.png" in captured.out


@pytest.mark.parametrize("argv,message", [
    (["--task", "sr", "--baseline", "noisy"], "baseline 'noisy' is for task 'denoise'"),
    (["--task", "sr", "--baseline", "bicubic"], "needs a valid --scale"),
    (["--baseline", "bicubic"], "--task is needed"),
    (["--task", "smooth", "--model", "missing.keras"], "missing.keras"),
])
def test_inconsistent_options_are_refused(folder, capsys, argv, message):
    assert evaluate.main([*argv, "--data", str(folder)]) == 2
    assert message in capsys.readouterr().err


def test_model_for_another_task_is_refused(folder, tmp_path, capsys):
    model = _same_size_model(tmp_path, {"task": "denoise", "in_channels": 1, "input": "same"}, 1)
    assert evaluate.main(["--task", "smooth", "--filter", "l0", "--model", model,
                          "--data", str(folder)]) == 2
    assert "trained for 'denoise'" in capsys.readouterr().err
