"""`python -m training.fit` end to end: outputs, resume after kill -9, user errors."""

import csv
import json
import logging
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import pnen_tf
from pnen_tf import image_io, saving
from pnen_tf.model_info import ModelInfo
from training import fit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--channels", "8", "--num-memory-blocks", "1", "--num-recursions", "1",
        "--nonlocal", "none", "--patch", "24", "--batch", "2", "--steps-per-epoch", "3"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, count in (("train", 3), ("val", 1)):
        os.makedirs(root / split)
        for i in range(count):
            ramp = np.linspace(0, 1, 40)[None, :, None] * np.ones((36, 40, 3))
            image = np.clip(ramp + rng.normal(0, 0.05, ramp.shape), 0, 1).astype(np.float32)
            image_io.write_image(str(root / split / f"{i}.png"), image)
    return str(root / "train"), str(root / "val")


def _rows(out):
    with open(os.path.join(out, "log.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_sr_run_writes_models_config_logs(folders, tmp_path, capsys):
    out = str(tmp_path / "run")
    argv = ["--task", "sr", "--scale", "3", "--data", folders[0], "--val", folders[1],
            "--epochs", "2", "--out", out, *TINY]
    assert fit.main(argv) == 0
    printed = capsys.readouterr().out
    assert "final validation PSNR" in printed and "baseline" in printed
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["model"] == "memnet" and config["input"] == "upsampled"
    assert config["preset"] == "paper" and config["channels"] == 8
    info = ModelInfo.read(os.path.join(out, "best.keras"))
    assert (info.model, info.task, info.scale, info.in_channels, info.input) == \
        ("memnet", "sr", 3, 1, "upsampled")
    assert info.options["channels"] == 8 and info.pnen_tf_version == pnen_tf.__version__
    model = saving.load_model(os.path.join(out, "last.keras"))
    assert len(model.outputs) == 1  # the inference model, not the eq. (5) training model
    rows = _rows(out)
    assert [int(r["epoch"]) for r in rows] == [1, 2] and int(rows[-1]["step"]) == 6
    assert float(rows[0]["baseline_psnr"]) > 0 and np.isfinite(float(rows[-1]["loss"]))
    assert os.listdir(os.path.join(out, "tensorboard"))
    # Rerunning into the same folder without --resume would silently mix two runs.
    assert fit.main(argv) == 2
    assert "--resume" in capsys.readouterr().err


def test_blind_denoising_validates_per_sigma_and_saves_a_blind_model(folders, tmp_path,
                                                                    capsys):
    out = str(tmp_path / "run")
    assert fit.main(["--task", "denoise", "--sigma-range", "0", "55", "--val-sigmas", "15", "50",
                     "--data", folders[0], "--val", folders[1], "--epochs", "1", "--out", out,
                     *TINY]) == 0
    line = next(l for l in capsys.readouterr().out.splitlines() if l.startswith("epoch 1:"))
    per_sigma = [float(part.split(": ")[1].split()[0]) for part in line.split("; ")[1:]]
    assert "; sigma 15: " in line and "; sigma 50: " in line and len(per_sigma) == 2
    row, = _rows(out)
    # The mean over the sigmas is the score (and picks best.keras); noisier is harder.
    assert float(row["val_psnr"]) == pytest.approx(np.mean(per_sigma), abs=2e-3)
    assert per_sigma[0] > per_sigma[1]
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["sigma"] is None and config["sigma_range"] == [0.0, 55.0]
    assert config["val_sigmas"] == [15.0, 50.0]
    info = ModelInfo.read(os.path.join(out, "best.keras"))
    assert info.sigma is None and info.get("sigma_range") == [0.0, 55.0]
    assert ModelInfo.read(_fixed_sigma_model(folders, tmp_path)).get("sigma_range") is None


def _fixed_sigma_model(folders, tmp_path):
    out = str(tmp_path / "fixed")
    assert fit.main(["--task", "denoise", "--sigma", "25", "--data", folders[0], "--val",
                     folders[1], "--epochs", "1", "--out", out, *TINY]) == 0
    return os.path.join(out, "best.keras")


def test_several_folders_and_smoothing_targets_with_progress(folders, tmp_path, caplog):
    second = tmp_path / "second"
    second.mkdir()
    for i in range(2):
        image_io.write_image(str(second / f"b{i}.png"), np.full((30, 32, 3), 0.2 * (i + 1)))
    out, cache = str(tmp_path / "run"), str(tmp_path / "cache")
    with caplog.at_level(logging.INFO, logger="training"):
        assert fit.main(["--task", "smooth", "--filter", "l0", "--model", "pnen",
                         "--num-groups", "1", "--data", folders[0], str(second),
                         "--target-cache", cache, "--epochs", "1", "--out", out, *TINY]) == 0
    messages = [r.getMessage() for r in caplog.records]
    # The last 1/20 (at least one image) of each folder is held out for validation.
    assert "validating on 2 image(s) held out from --data: 2.png, b1.png" in messages
    assert any("computing 3 l0 smoothing target(s) (0 cached)" in m for m in messages)
    assert "l0 targets: 3/3 computed" in " ".join(messages)
    assert len(os.listdir(os.path.join(cache, os.listdir(cache)[0]))) == 5
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["data"] == [folders[0], str(second)] and config["val"] is None


def test_resume_after_kill_continues_steps_and_schedule(folders, tmp_path):
    out = str(tmp_path / "run")
    argv = ["--task", "denoise", "--sigma", "30", "--data", folders[0], "--val", folders[1],
            "--out", out, "--lr-patience", "1", *TINY]
    env = dict(os.environ, PYTHONPATH=ROOT)
    process = subprocess.Popen([sys.executable, "-m", "training.fit", *argv, "--epochs", "500"],
                               cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 150
        while time.time() < deadline and not (
                os.path.isdir(os.path.join(out, "checkpoints"))
                and len(os.listdir(os.path.join(out, "checkpoints"))) >= 2):
            time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    checkpoints = sorted(n for n in os.listdir(os.path.join(out, "checkpoints"))
                         if n.startswith("ckpt-"))
    assert checkpoints, "no checkpoint written before the kill"
    done = max(int(n.split("-")[1]) for n in checkpoints)
    state = json.load(open(os.path.join(out, "checkpoints", f"ckpt-{done}", "state.json")))
    assert state["epoch"] == done
    assert fit.main([*argv, "--epochs", str(done + 2), "--resume"]) == 0
    rows = _rows(out)
    assert [int(r["epoch"]) for r in rows] == list(range(1, done + 3))
    assert [int(r["step"]) for r in rows] == [3 * e for e in range(1, done + 3)]
    lrs = [float(r["lr"]) for r in rows]
    assert all(b <= a for a, b in zip(lrs, lrs[1:]))  # the schedule never restarts


def test_resume_refuses_a_different_configuration(folders, tmp_path, capsys):
    out = str(tmp_path / "run")
    base = ["--task", "sr", "--data", folders[0], "--val", folders[1], "--out", out,
            "--epochs", "1", *TINY]
    assert fit.main(base) == 0
    assert fit.main([*base, "--resume", "--scale", "2", "--patch", "24"]) == 2
    assert "scale: 3 -> 2" in capsys.readouterr().err


def test_user_errors_are_one_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert fit.main(["--task", "sr", "--data", str(empty), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "no images found" in err and str(empty) in err and "Traceback" not in err
    assert fit.main(["--task", "sr", "--scale", "3", "--patch", "32"]) == 2
    assert "multiple of --scale" in capsys.readouterr().err
    assert fit.main(["--task", "denoise", "--model", "pnen"]) == 2


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit):
        fit.main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--task", "--model", "--nonlocal", "--deeper", "--scale", "--sigma", "--filter",
                 "--data", "--val", "--patch", "--batch", "--epochs", "--steps-per-epoch", "--lr",
                 "--out", "--resume", "--strategy", "--precision", "--jit", "--seed",
                 "--channels", "--ema", "--export-saved-model", "--preset", "--sigma-range",
                 "--val-sigmas"):
        assert flag in text


def test_init_starts_from_a_model_file_and_refuses_another_architecture(folders, tmp_path,
                                                                        capsys):
    first = str(tmp_path / "x3")
    common = ["--data", folders[0], "--val", folders[1], "--epochs", "1", *TINY]
    assert fit.main(["--task", "sr", "--scale", "3", "--out", first, *common]) == 0
    source = saving.load_model(os.path.join(first, "best.keras"))
    # Fine-tuning the x3 model into x2 with lr 0: the x2 run's weights are the x3 model's
    # (batch norm's moving statistics still move: they are not trained by the optimizer).
    second = str(tmp_path / "x2")
    assert fit.main(["--task", "sr", "--scale", "2", "--out", second, "--lr", "0",
                     "--init", os.path.join(first, "best.keras"), *common]) == 0
    tuned = saving.load_model(os.path.join(second, "last.keras"))
    assert len(source.trainable_weights) > 2
    for a, b in zip(source.trainable_weights, tuned.trainable_weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert json.load(open(os.path.join(second, "config.json")))["init"].endswith("best.keras")
    capsys.readouterr()
    wider = [*common, "--channels", "12"]
    assert fit.main(["--task", "sr", "--scale", "2", "--out", str(tmp_path / "w"),
                     "--init", os.path.join(first, "best.keras"), *wider]) == 2
    err = capsys.readouterr().err
    assert "--init" in err and "architecture differs" in err and "Traceback" not in err
    assert fit.main(["--task", "sr", "--out", str(tmp_path / "m"),
                     "--init", str(tmp_path / "missing.keras"), *common]) == 2
    assert "missing.keras" in capsys.readouterr().err
