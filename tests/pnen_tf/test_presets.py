"""Presets: trained models by name wherever a model file is accepted (issue 16).

The machinery runs on a tiny untrained MemNet dropped into a temporary presets folder as
`denoise-gray-s30`; the shipped presets are checked as issue 16 asks (load, facts, an odd-size
restore, their baseline beaten on the built-in check image by the margin of their card), each
skipped until its weights are in the package.
"""

import json
import os
import shutil

import numpy as np
import pytest
from skimage import data

import pnen_tf
from pnen_tf import saving
from pnen_tf.apps import cli
from pnen_tf.image_io import read_image, write_image
from pnen_tf.model_info import ModelInfo
from pnen_tf.models import build, from_preset, list_presets, presets
from training import presets as check
from pnen_tf.apps.restore import load_restorer

NAME = "denoise-gray-s30"
FACTS = {"model": "memnet", "task": "denoise", "scale": 1, "sigma": 30.0, "filter": None,
         "in_channels": 1, "input": "same", "options": {"channels": 4}}
CARD = {"architecture": "MemNet M1R1, 4 channels, no non-local block (a test model)",
        "parameters": 1234, "training_data": "none", "training_data_source": "none",
        "training_command": "none", "steps": 0, "cpu_hours": 0.0,
        "results": [{"set": "Set12", "psnr": 20.5, "ssim": 0.5}], "check": {"margin_db": 0.0}}
MAX_SHIPPED_MB = 60  # issue 16: all presets together


def _tiny_memnet():
    return build("memnet", channels=4, num_memory_blocks=1, num_recursions=1,
                 nonlocal_block=None)


@pytest.fixture(scope="module")
def dropped_in(tmp_path_factory):
    """A presets folder holding one preset, as its trainer drops it in: weights and card."""
    folder = tmp_path_factory.mktemp("presets")
    model = _tiny_memnet()
    saving.save_model(model, str(folder / f"{NAME}.keras"), FACTS)
    (folder / f"{NAME}.json").write_text(json.dumps(CARD))
    return folder, model


@pytest.fixture
def shipped(dropped_in, monkeypatch):
    folder, model = dropped_in
    monkeypatch.setattr(presets, "PRESETS_DIR", str(folder))
    return model


@pytest.fixture
def gray_photo(tmp_path):
    path = tmp_path / "photos" / "camera.png"
    write_image(path, data.camera()[:37, :45, None] / 255.0)
    return str(path)


def test_a_dropped_in_preset_loads_by_name_with_its_facts(shipped):
    model = from_preset(NAME)
    assert len(model.outputs) == 1
    assert model.pnen_tf_info == ModelInfo.from_dict({**FACTS, "preset": NAME})
    x = np.random.default_rng(0).random((1, 19, 23, 1)).astype("float32")
    np.testing.assert_allclose(model.predict_on_batch(x), shipped.predict_on_batch(x), atol=1e-6)


def test_list_presets_shows_shipped_and_untrained_presets_with_their_cards(shipped):
    cards = list_presets()
    assert list(cards) == list(presets.PRESETS) and len(cards) == 9
    card = cards[NAME]
    assert card["status"] == "shipped" and card["weights"] == f"{NAME}.keras"
    assert {k: card[k] for k in CARD} == CARD
    assert card["model"] == "memnet" and card["targets"] == [{"set": "Set12", "psnr": 29.1}]
    assert cards["sr-x3"]["status"] == "not trained yet" and "parameters" not in cards["sr-x3"]


def test_presets_command_prints_the_table(shipped, capsys):
    assert cli.main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:4] == ["name", "task", "status", "params"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert list(rows) == list(presets.PRESETS)
    assert "shipped" in rows[NAME] and "Set12 20.50 dB (target >= 29.1)" in rows[NAME]
    assert "not trained yet" in rows["sr-x3"] and "Set5 pending (target >= 33.1)" in rows["sr-x3"]
    assert "sigma 15/25/50 pending (target >= 32.37/29.97/26.72)" in rows["denoise-gray-blind"]


@pytest.mark.parametrize("load", [from_preset, saving.load_model, ModelInfo.read,
                                  load_restorer])
def test_an_untrained_preset_is_not_shipped_and_nothing_is_downloaded(shipped, load):
    with pytest.raises(FileNotFoundError, match=r"^preset 'sr-x3' is not trained yet: not "
                                                r"shipped in pnen-tf [\d.]+ \(see `pnen-tf "
                                                r"presets`\)$"):
        load("sr-x3")


def test_restore_names_an_untrained_or_unknown_model_in_one_line(shipped, gray_photo, tmp_path,
                                                                 capsys):
    out = str(tmp_path / "out")
    assert cli.main(["restore", gray_photo, "--model", "smooth-sd", "-o", out]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: cannot load model: preset 'smooth-sd' is not trained yet: not shipped in "
        f"pnen-tf {pnen_tf.__version__} (see `pnen-tf presets`)")
    assert cli.main(["restore", gray_photo, "--model", "sr-x5", "-o", out]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "error: cannot load model: sr-x5: no such model file or SavedModel directory "
        "(nor a preset: see `pnen-tf presets`)")
    with pytest.raises(FileNotFoundError, match=r"^no model file at 'sr-x5' \(nor a preset"):
        ModelInfo.read("sr-x5")


def test_an_existing_file_wins_over_a_preset_name(shipped, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    saving.save_model(_tiny_memnet(), "mine.keras", {"task": "mine"})
    os.rename("mine.keras", NAME)
    assert ModelInfo.read(NAME) == ModelInfo(task="mine")
    assert ModelInfo.read(f"./{NAME}") == ModelInfo(task="mine")
    os.remove(NAME)
    assert ModelInfo.read(NAME) == ModelInfo.from_dict(FACTS)


def test_restore_cli_takes_a_preset_name(shipped, gray_photo, tmp_path):
    out = tmp_path / "restored"
    assert cli.main(["restore", gray_photo, "--model", NAME, "-o", str(out)]) == 0
    restored = read_image(str(out / "camera.png")).pixels
    assert restored.shape == (37, 45, 1)


def test_evaluate_takes_a_preset_name(shipped, gray_photo, tmp_path):
    from training import evaluate

    out = tmp_path / "report"
    folder = os.path.dirname(gray_photo)
    assert evaluate.main(["--model", NAME, "--data", folder, "--out", str(out)]) == 0
    report = json.loads((out / "results.json").read_text())
    assert report["config"]["model"] == NAME and report["config"]["sigma"] == 30.0
    assert np.isfinite(report["folders"]["photos"]["psnr"])


def test_the_exporters_take_a_preset_name(shipped):
    from export import _model

    model, info = _model.load(NAME)
    assert len(model.outputs) == 1 and info.sigma == 30.0
    assert info.export["source"] == NAME


def test_the_check_measures_the_model_and_its_baseline_on_the_builtin_image(shipped, capsys):
    model_psnr, noisy_psnr = check.measure_check(NAME)
    # The noisy input at sigma 30, clipped and rounded as evaluate does: near 20 log10(255/30).
    assert 18.3 < noisy_psnr < 19.3 and np.isfinite(model_psnr)
    assert cli.main(["presets", "--check", NAME]) == 0
    assert f"margin {model_psnr - noisy_psnr:.2f} dB" in capsys.readouterr().out


def test_weights_that_are_not_the_presets_are_refused(dropped_in, tmp_path, monkeypatch):
    monkeypatch.setattr(presets, "PRESETS_DIR", str(tmp_path))
    shutil.copy(dropped_in[0] / f"{NAME}.keras", tmp_path / "denoise-gray-s50.keras")
    with pytest.raises(ValueError, match=r"sigma=30.0.*not those of preset 'denoise-gray-s50'"):
        from_preset("denoise-gray-s50")


def test_a_card_that_contradicts_the_table_is_refused(dropped_in, tmp_path, monkeypatch):
    monkeypatch.setattr(presets, "PRESETS_DIR", str(tmp_path))
    shutil.copy(dropped_in[0] / f"{NAME}.keras", tmp_path)
    (tmp_path / f"{NAME}.json").write_text(json.dumps({**CARD, "task": "sr"}))
    with pytest.raises(ValueError, match="task differ from the preset table"):
        list_presets()


def test_the_shipped_presets_fit_the_wheel():
    folder = presets.PRESETS_DIR
    shipped = [name for name in os.listdir(folder) if name.endswith((".keras", ".json"))]
    assert {os.path.splitext(name)[0] for name in shipped} <= set(presets.PRESETS)
    size = sum(os.path.getsize(os.path.join(folder, name)) for name in shipped)
    assert size <= MAX_SHIPPED_MB * 2**20


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_a_shipped_preset_restores_and_beats_its_baseline(name):
    if not presets.is_shipped(name):
        pytest.skip(f"{name}: not trained yet")
    card = presets.read_card(name)
    assert not [field for field in presets.CARD_FIELDS if field not in card]
    model = from_preset(name)
    row = presets.PRESETS[name]
    assert all(model.pnen_tf_info.get(k) == row[k] for k in presets.IDENTITY
               if row[k] is not None)
    assert len(model.outputs) == 1
    _, image = check.check_image(row)
    odd = image[:37, :45].reshape(37, 45, -1) / 255.0
    restored = load_restorer(name).restore(odd.astype("float32"))
    assert restored.shape == (37 * row["scale"], 45 * row["scale"], odd.shape[-1])
    assert np.isfinite(restored).all()
    model_psnr, baseline_psnr = check.measure_check(name)
    assert model_psnr - baseline_psnr >= card["check"]["margin_db"]
