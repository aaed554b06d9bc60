"""`python -m training.ship`: a run becomes a preset whose card holds measured figures only.

The "run" is a fixed 5x5 box filter saved as a sigma-30 denoiser (`stand_ins`), with a
hand-written log.csv; the presets folder is a temporary one.
"""

import csv
import json
import os

import numpy as np
import pytest
from skimage import data
from stand_ins import BOX, save_filter

from pnen_tf.image_io import write_image
from pnen_tf.models import from_preset, presets
from training import ship

NAME = "denoise-gray-s30"
LOG = [(1, 200, 20.0, 3600.0), (2, 400, 22.5, 1800.0), (3, 600, 21.0, 900.0)]


def _run(root, kernel, name="run", log=LOG, init=None, baseline=18.6):
    run = root / name
    os.makedirs(run)
    save_filter(run / "best.keras", kernel)
    train = root / "Train400"
    for i in range(3):
        write_image(str(train / f"{i}.png"), data.camera()[:40, 40 * i:40 * i + 40, None] / 255)
    (run / "config.json").write_text(json.dumps({"data": str(train), "val": None, "init": init}))
    with open(run / "log.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["epoch", "step", "loss", "lr", "val_psnr", "val_ssim", "baseline_psnr",
                         "baseline_ssim", "seconds"])
        for epoch, step, psnr, seconds in log:
            writer.writerow([epoch, step, 0.01, 1e-3, psnr, 0.7, baseline, 0.3, seconds])
    return str(run)


@pytest.fixture
def setup(tmp_path, monkeypatch):
    folder = tmp_path / "presets"
    folder.mkdir()
    monkeypatch.setattr(presets, "PRESETS_DIR", str(folder))
    smooth = np.linspace(0.2, 0.8, 96)[None, :] * np.ones((80, 1))
    write_image(str(tmp_path / "bench" / "Set12" / "ramp.png"), smooth[..., None])
    return folder, str(tmp_path / "bench")


def test_a_run_ships_with_a_card_of_measured_figures(tmp_path, setup):
    folder, bench = setup
    run = _run(tmp_path, BOX)
    assert ship.main([run, NAME, "--command", "python -m training.fit ...",
                      "--benchmarks", bench]) == 0
    card = json.loads((folder / f"{NAME}.json").read_text())
    assert from_preset(NAME).count_params() == 25 and card["parameters"] == 25
    assert card["steps"] == 400 and card["cpu_hours"] == 1.5  # up to the best epoch, 2
    assert [p["val_psnr"] for p in card["validation_curve"]] == [20.0, 22.5, 21.0]
    assert card["training_data"] == "Train400: 2 images trained on, 1 held out for validation"
    assert "github.com/cszn/DnCNN" in card["training_data_source"]
    (result,), (base,) = card["results"], card["baseline_results"]
    # The noisy baseline at sigma 30 is 20 log10(255 / 30) = 18.59 dB (less what clipping saves).
    assert base["method"] == "noisy" and 18.5 < base["psnr"] < 19.2
    assert result["set"] == "Set12" and result["psnr"] > base["psnr"] + 5
    assert 0 < card["check"]["margin_db"] <= card["check"]["measured_db"] - ship.CHECK_SLACK
    assert presets.read_card(NAME)["status"] == "shipped"


def test_a_model_that_loses_to_its_baseline_is_not_shipped_and_nothing_is_replaced(
        tmp_path, setup, capsys):
    folder, bench = setup
    run = _run(tmp_path, np.pad([[0.5]], 2))  # halves the image: worse than the noisy input
    argv = [run, NAME, "--command", "c", "--benchmarks", bench]
    assert ship.main(argv) == 2
    assert "does not beat its baseline" in capsys.readouterr().err
    assert os.listdir(folder) == []
    (folder / f"{NAME}.keras").write_bytes(b"shipped before")
    assert ship.main(argv) == 2 and "--replace" in capsys.readouterr().err
    assert ship.main([*argv, "--replace"]) == 2
    assert (folder / f"{NAME}.keras").read_bytes() == b"shipped before"
    assert not (folder / f"{NAME}.json").exists()


def test_a_fine_tuned_run_counts_the_run_it_started_from(tmp_path, setup):
    """Phase 2 (--init phase 1's best.keras) ships: the card counts phase 1 up to its best
    epoch (2 of 3), then phase 2 up to its own best, on one axis of epochs and steps."""
    folder, bench = setup
    first = _run(tmp_path, BOX)
    second = _run(tmp_path, BOX, name="run-ft", init=os.path.join(first, "best.keras"),
                  log=[(1, 100, 22.0, 600.0), (2, 200, 23.0, 600.0), (3, 300, 22.8, 600.0)])
    assert ship.lineage(second) == [first, second]
    assert ship.main([second, NAME, "--command", "c", "--benchmarks", bench]) == 0
    card = json.loads((folder / f"{NAME}.json").read_text())
    assert card["steps"] == 400 + 200
    assert card["cpu_hours"] == round((3600 + 1800 + 600 + 600) / 3600, 2)
    curve = card["validation_curve"]
    assert [(p["phase"], p["epoch"], p["step"], p["val_psnr"]) for p in curve] == [
        (1, 1, 200, 20.0), (1, 2, 400, 22.5), (2, 3, 500, 22.0), (2, 4, 600, 23.0),
        (2, 5, 700, 22.8)]


def test_a_run_started_from_a_shipped_preset_continues_its_card(tmp_path, setup, capsys):
    """Fine-tuning `--init NAME` on a machine without the preset's run folders: the new card
    counts the preset's card (curve up to its steps, hours, command), and neither a
    fine-tuning nor a new run that validates no better than the shipped preset replaces it."""
    folder, bench = setup
    assert ship.main([_run(tmp_path, BOX), NAME, "--command", "phase 1",
                      "--benchmarks", bench]) == 0  # best epoch 2: 400 steps, 1.5 h
    worse = _run(tmp_path, BOX, name="worse", init=NAME,
                 log=[(1, 100, 22.0, 600.0), (2, 200, 22.4, 600.0)])
    shipped = (folder / f"{NAME}.json").read_text()
    argv = ["--benchmarks", bench, "--replace", "--command", "phase 2"]
    assert ship.main([worse, NAME, *argv]) == 2
    assert "does not improve on preset" in capsys.readouterr().err
    elsewhere = _run(tmp_path, BOX, name="elsewhere", init=NAME, baseline=19.0,
                     log=[(1, 100, 30.0, 600.0)])  # other validation images: not comparable
    assert ship.main([elsewhere, NAME, *argv]) == 2
    assert "validated on other images" in capsys.readouterr().err
    fresh = _run(tmp_path, BOX, name="fresh", log=[(1, 100, 22.5, 600.0)])  # no --init: ties
    assert ship.main([fresh, NAME, *argv]) == 2
    assert "does not improve on preset" in capsys.readouterr().err
    assert (folder / f"{NAME}.json").read_text() == shipped

    first = json.loads((folder / f"{NAME}.json").read_text())
    first["hardware"] = "another CPU, 2 cores, no GPU"
    (folder / f"{NAME}.json").write_text(json.dumps(first))
    better = _run(tmp_path, BOX, name="better", init=NAME,
                  log=[(1, 100, 22.0, 600.0), (2, 200, 23.0, 1200.0), (3, 300, 22.9, 600.0)])
    assert ship.main([better, NAME, *argv]) == 0
    card = json.loads((folder / f"{NAME}.json").read_text())
    assert card["training_command"] == "phase 1\nphase 2"
    assert card["hardware"] == f"another CPU, 2 cores, no GPU; then {ship._cpu()}"
    assert ship._hardware({"hardware": card["hardware"]}) == card["hardware"]  # same machine again
    assert card["steps"] == 400 + 200
    assert card["cpu_hours"] == round(1.5 + (600 + 1200) / 3600, 2)
    assert [(p["phase"], p["epoch"], p["step"], p["val_psnr"]) for p in card["validation_curve"]] == [
        (1, 1, 200, 20.0), (1, 2, 400, 22.5), (2, 3, 500, 22.0), (2, 4, 600, 23.0),
        (2, 5, 700, 22.9)]
