"""Flag resolution: several --data folders, and resuming runs saved before."""

import shlex

import pytest

from training.config import check_resumable, parser, resolve

# /work/runs/denoise-s50.sh, the denoise-gray-s50 preset candidate, as started on 2026-12-02,
# and the config.json it saved: the run is resumed with these flags and --resume, so every
# flag added since must resolve to what this file holds (or to None, a key it lacks).
S50_FLAGS = ("--task denoise --sigma 50 --data ../shared/datasets/train/Train400 --model memnet "
             "--channels 32 --num-memory-blocks 4 --num-recursions 3 --patch 64 --batch 16 "
             "--lr 1e-3 --min-lr 1e-5 --epochs 60 --steps-per-epoch 200 "
             "--out /work/runs/denoise-s50")
S50_CONFIG = {
    "batch": 16, "channels": 32, "data": "../shared/datasets/train/Train400", "deeper": False,
    "ema": 0.0, "epochs": 60, "export_saved_model": None,
    "family_options": {"num_memory_blocks": 4, "num_recursions": 3}, "filter": None,
    "growth": None, "in_channels": 1, "input": "same", "jit": False, "loss": "mse",
    "lr": 0.001, "lr_patience": 3, "min_lr": 1e-05, "model": "memnet",
    "nonlocal_block": "pnb", "nonlocal_variant": None, "num_blocks": None, "num_groups": None,
    "num_layers": None, "num_memory_blocks": 4, "num_recursions": 3,
    "out": "/work/runs/denoise-s50", "patch": 64, "precision": "float32", "preset": "paper",
    "resume": False, "scale": 1, "seed": 0, "sigma": 50.0, "steps_per_epoch": 200,
    "strategy": "auto", "target_cache": None, "task": "denoise", "val": None, "val_crop": 0,
}


def _resolve(flags):
    return resolve(parser().parse_args(shlex.split(flags) if isinstance(flags, str) else flags))


def test_a_run_saved_before_resumes_with_its_flags():
    config = _resolve(S50_FLAGS + " --resume")
    check_resumable(S50_CONFIG, config)  # raises on any difference
    assert type(config["data"]) is str and config["sigma"] == 50.0
    assert all(config[key] is None for key in set(config) - set(S50_CONFIG))  # keys added since
    with pytest.raises(ValueError, match="sigma: 50.0 -> 30.0"):
        check_resumable(S50_CONFIG, _resolve(S50_FLAGS.replace("--sigma 50 ", "") + " --resume"))


def test_data_takes_several_folders_and_keeps_one_a_string():
    assert _resolve("--task sr --data a")["data"] == "a"
    config = _resolve("--task sr --data a b/c --val v w")
    assert config["data"] == ["a", "b/c"] and config["val"] == ["v", "w"]
    assert config["preset"] == "paper"
    quick = _resolve("--task sr")
    assert quick["data"] is None and quick["val"] is None and quick["preset"] == "quick"
