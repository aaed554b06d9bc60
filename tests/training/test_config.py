"""Flag resolution: several --data folders, blind denoising, and resuming runs saved before."""

import shlex

import pytest

from training.config import check_resumable, parser, resolve
from training.tasks.denoise import BLIND_VAL_SIGMAS

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


def test_blind_denoising_resolves_a_range_and_validation_sigmas():
    config = _resolve("--task denoise --sigma-range 0 55")
    assert config["sigma"] is None and config["sigma_range"] == [0.0, 55.0]
    assert config["val_sigmas"] == list(BLIND_VAL_SIGMAS) == [15.0, 25.0, 50.0]
    assert config["out"].endswith("denoise-memnet-blind")
    assert _resolve("--task denoise --sigma-range 5 75 --val-sigmas 10 70")["val_sigmas"] == \
        [10.0, 70.0]
    fixed = _resolve("--task denoise")
    assert fixed["sigma"] == 30.0 and fixed["sigma_range"] is None and fixed["val_sigmas"] is None
    assert fixed["out"].endswith("denoise-memnet-s30")
    sr = _resolve("--task sr --sigma-range 0 55")  # like --sigma: not the task's flag
    assert sr["sigma"] is None and sr["sigma_range"] is None and sr["out"].endswith("-x3")


@pytest.mark.parametrize("flags,message", [
    ("--task denoise --sigma-range 55 0", "LOW < HIGH"),
    ("--task denoise --sigma-range -5 10", "LOW < HIGH"),
    ("--task denoise --sigma 25 --val-sigmas 15", "blind denoising"),
    ("--task denoise --sigma-range 0 55 --val-sigmas -1", ">= 0"),
])
def test_bad_noise_flags_are_refused(flags, message):
    with pytest.raises(ValueError, match=message):
        _resolve(flags)


def test_sigma_and_sigma_range_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        _resolve("--task denoise --sigma 25 --sigma-range 0 55")
    assert "not allowed with" in capsys.readouterr().err


def test_nonlocal_scales_reach_the_pnb_and_need_it():
    """Table II's single-scale rows: `--nonlocal-scales 4` builds PNBs with the one stride."""
    from pnen_tf.layers import PyramidNonLocalBlock
    from pnen_tf.models import build
    from training.config import build_options

    config = _resolve("--task smooth --channels 8 --num-groups 1 --nonlocal pnb --nonlocal-scales 4")
    model = build(config["model"], **build_options(config))
    (block,) = [layer for layer in model.layers if isinstance(layer, PyramidNonLocalBlock)]
    assert block.scales == (4,)
    assert "nonlocal_options" not in build_options(_resolve("--task smooth --nonlocal pnb"))
    for flags in ("--task smooth --nonlocal nlb --nonlocal-scales 2",
                  "--task smooth --nonlocal pnb --nonlocal-scales 0 2"):
        with pytest.raises(ValueError, match="--nonlocal-scales"):
            _resolve(flags)


def test_identity_start_reaches_the_pnen_builder_only():
    from training.config import build_options

    config = _resolve("--task smooth --channels 8 --num-groups 1 --identity-start")
    assert build_options(config)["identity_start"] is True
    assert "identity_start" not in build_options(_resolve("--task smooth"))
    with pytest.raises(ValueError, match="PNEN option"):
        _resolve("--task denoise --identity-start")
    with pytest.raises(ValueError, match="use one"):
        _resolve("--task smooth --identity-start --init smooth-l0.keras")
