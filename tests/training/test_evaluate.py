"""`python -m training.evaluate`: protocols, baselines, model runs, reports and bad files."""

import csv
import json
import os
import sys
import types

import keras
import numpy as np
import pytest

from pnen_tf import saving
from pnen_tf.image_io import read_image, to_integers, write_image
from pnen_tf.apps.imresize import imresize
from pnen_tf.metrics import calculate_psnr, calculate_ssim
from training import evaluate
from training.tasks.denoise import noise_seed


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
    noise = np.random.default_rng(noise_seed("a.png")).standard_normal(truth.shape)
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


def test_a_blind_denoiser_asks_for_sigma(folder, tmp_path, capsys):
    # training.fit saves a blind model with sigma null and the range it was trained on.
    model = _same_size_model(tmp_path, {"task": "denoise", "in_channels": 3, "input": "same",
                                        "scale": 1, "sigma": None, "sigma_range": [0.0, 55.0]},
                             3)
    assert evaluate.main(["--model", model, "--data", str(folder)]) == 2
    assert ("--task denoise needs a valid --sigma, got None (the model is a blind denoiser, "
            "trained for sigma 0-55)") in capsys.readouterr().err
    out = tmp_path / "s15"
    assert evaluate.main(["--model", model, "--sigma", "15", "--data", str(folder),
                          "--out", str(out)]) == 0
    assert json.load(open(out / "results.json"))["config"]["sigma"] == 15.0


# --- Bad input never costs the user a file or a report (issue 15) ---------------------------

def _error_lines(err):
    return [line for line in err.splitlines() if line.startswith("error:")]


def _x2_model(tmp_path):
    """A tiny 'lr' x2 RGB model (nearest-neighbour upsampling) that records its facts."""
    inputs = keras.Input((None, None, 3))
    path = str(tmp_path / "x2.keras")
    saving.save_model(keras.Model(inputs, keras.layers.UpSampling2D(2)(inputs)), path,
                      {"task": "sr", "scale": 2, "in_channels": 3, "input": "lr"})
    return path


def _png_bomb(path):
    """A PNG whose header claims 30000x30000 pixels: Pillow's decompression-bomb check."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def test_save_never_writes_over_the_ground_truth(folder, tmp_path, monkeypatch, capsys):
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    monkeypatch.setattr(evaluate, "measure", lambda *a: pytest.fail("an image was restored"))
    status = evaluate.main(["--task", "sr", "--scale", "2", "--baseline", "bicubic",
                            "--data", str(folder), "--save", str(tmp_path)])
    assert status == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "would overwrite the input" in line and str(folder / "a.png") in line
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_saved_names_are_unique_within_a_set_and_across_sets(folder, tmp_path):
    write_image(folder / "a.jpg", np.random.default_rng(1).random((24, 24, 3)))
    other = tmp_path / "elsewhere" / "Tiny"  # a second set of the same name
    write_image(other / "a.png", np.random.default_rng(2).random((24, 24, 3)))
    save, out = tmp_path / "saved", tmp_path / "report"
    assert evaluate.main(["--task", "sr", "--scale", "2", "--baseline", "bicubic", "--data",
                          str(folder), str(other), "--save", str(save), "--out", str(out)]) == 0
    assert sorted(os.listdir(save / "Tiny")) == ["a.png", "a_png.png", "b.png"]  # a.jpg: a.png
    assert os.listdir(save / "Tiny_2") == ["a.png"]
    assert sorted(json.load(open(out / "results.json"))["folders"]) == ["Tiny", "Tiny_2"]
    for source, saved in ((folder / "a.jpg", save / "Tiny" / "a.png"),
                          (folder / "a.png", save / "Tiny" / "a_png.png"),
                          (other / "a.png", save / "Tiny_2" / "a.png")):
        hr = to_integers(read_image(source).pixels)
        hr = hr[: hr.shape[0] // 2 * 2, : hr.shape[1] // 2 * 2]  # modcrop(x, 2)
        lr = to_integers(imresize(hr / 255.0, 1 / 2).numpy()) / 255.0
        np.testing.assert_array_equal(to_integers(read_image(saved).pixels),
                                      to_integers(imresize(lr, 2).numpy()))


def test_a_non_finite_output_is_an_error_not_a_score(folder, tmp_path, capsys):
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(3, 3, padding="same")
    model = keras.Model(inputs, conv(inputs))
    conv.kernel.assign(np.full(conv.kernel.shape, np.nan, np.float32))
    path = str(tmp_path / "nan.keras")
    saving.save_model(model, path, {"task": "denoise", "sigma": 25, "in_channels": 3,
                                    "input": "same", "scale": 1})
    assert evaluate.main(["--model", path, "--data", str(folder), "--out", str(tmp_path / "r")]) == 1
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 2 and all("NaN" in line for line in lines)
    assert str(folder / "a.png") in lines[0] and str(folder / "b.png") in lines[1]
    assert json.load(open(tmp_path / "r" / "results.json"))["folders"]["Tiny"]["psnr"] is None


@pytest.mark.parametrize("option", ["--save", "--out"])
def test_output_locations_are_checked_before_the_model_runs(folder, tmp_path, monkeypatch,
                                                           capsys, option):
    import pnen_tf.apps.restore

    monkeypatch.setattr(pnen_tf.apps.restore, "load_restorer",
                        lambda *a, **k: pytest.fail("loaded"))
    (tmp_path / "file").write_text("mine")
    assert evaluate.main(["--model", "any.keras", "--data", str(folder),
                          option, str(tmp_path / "file")]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert str(tmp_path / "file") in line and "exists and is not a folder" in line
    assert (tmp_path / "file").read_text() == "mine"


def test_one_bad_file_does_not_stop_the_run_or_the_report(folder, tmp_path, capsys):
    _png_bomb(folder / "bomb.png")
    write_image(folder / "dot.png", np.zeros((1, 1, 3)))
    out = tmp_path / "report"
    assert evaluate.main(["--task", "sr", "--scale", "2", "--baseline", "bicubic",
                          "--data", str(folder), "--out", str(out)]) == 1
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 2
    assert str(folder / "bomb.png") in lines[0] and "too large to decode safely" in lines[0]
    assert str(folder / "dot.png") in lines[1] and "image is 1x1 pixels, too small" in lines[1]
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    assert [r["image"] for r in rows] == ["a.png", "b.png"]


def test_a_wrong_scale_is_refused_before_restoring(folder, tmp_path, monkeypatch, capsys):
    model = _x2_model(tmp_path)
    monkeypatch.setattr(evaluate, "measure", lambda *a: pytest.fail("an image was restored"))
    assert evaluate.main(["--model", model, "--scale", "3", "--data", str(folder)]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "x2 model, --scale 3" in line
