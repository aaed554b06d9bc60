"""Restoring images: input conventions, channel adaptation, model facts, the CLI and bad files."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from pnen_tf import saving
from pnen_tf.apps import cli, restore
from pnen_tf.image_io import read_image, to_integers, write_image
from pnen_tf.apps.imresize import imresize
from pnen_tf.metrics import rgb_to_ycbcr
from pnen_tf.models import build
from pnen_tf.apps.restore import Restorer, RestoreError, load_restorer

RDN_X2 = {"model": "rdn", "task": "sr", "scale": 2, "in_channels": 3, "input": "lr"}
GRAY = {"in_channels": 1, "scale": 1, "input": "same"}
RGB = {"in_channels": 3, "scale": 1, "input": "same"}


@pytest.fixture(scope="module")
def rdn_x2(tmp_path_factory):
    model = build("rdn", scale=2, in_channels=3, channels=8, num_blocks=2, num_layers=2, growth=8)
    path = str(tmp_path_factory.mktemp("models") / "rdn_x2.keras")
    saving.save_model(model, path, RDN_X2)
    return path, model


def _identity(info):
    return Restorer(lambda x: x, info, notify=lambda message: None)


def test_same_size_model_on_matching_channels_is_applied_directly():
    r = Restorer(lambda x: 1 - x, RGB)
    x = np.random.default_rng(0).random((5, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(r.restore(x), 1 - x)


def test_upsampled_model_gets_the_bicubic_image():
    r = _identity({"in_channels": 3, "scale": 3, "input": "upsampled"})
    x = np.random.default_rng(1).random((5, 6, 3)).astype(np.float32)
    np.testing.assert_allclose(r.restore(x), imresize(x, 3).numpy(), atol=1e-6)


def test_gray_model_restores_y_and_keeps_chroma():
    seen = []
    r = Restorer(lambda x: seen.append(x) or x + 0.1, GRAY, notify=seen.append)
    x = np.random.default_rng(2).random((6, 5, 3)).astype(np.float32) * 0.5 + 0.2
    out = r.restore(x)
    np.testing.assert_allclose(seen[1], rgb_to_ycbcr(x)[None, ..., :1], atol=1e-6)
    ycbcr = rgb_to_ycbcr(out)
    np.testing.assert_allclose(ycbcr[..., 0], rgb_to_ycbcr(x)[..., 0] + 0.1, atol=1e-5)
    np.testing.assert_allclose(ycbcr[..., 1:], rgb_to_ycbcr(x)[..., 1:], atol=1e-5)
    assert "gray model on RGB" in seen[0]


def test_rgb_model_on_gray_image_returns_luma():
    r = _identity(RGB)
    x = np.random.default_rng(3).random((4, 4, 1)).astype(np.float32)
    np.testing.assert_allclose(r.restore(x), x, atol=1e-6)


def test_wrong_model_output_and_tiny_images_are_reported():
    with pytest.raises(RestoreError, match="expected"):
        Restorer(lambda x: x[:, :-1], GRAY).restore(
            np.zeros((4, 4, 1), np.float32))
    with pytest.raises(RestoreError, match="1x1 pixels"):
        _identity(GRAY).restore(np.zeros((1, 1, 1), np.float32))


def test_keras_file_facts_are_read(rdn_x2):
    r = load_restorer(rdn_x2[0])
    assert (r.in_channels, r.scale, r.input) == (3, 2, "lr")
    with pytest.raises(ValueError, match="x2 model, --scale 3"):
        load_restorer(rdn_x2[0], scale=3)


def test_facts_are_inferred_for_a_plain_keras_file(tmp_path, rdn_x2):
    path = str(tmp_path / "plain.keras")
    rdn_x2[1].save(path)
    notes = []
    r = load_restorer(path, notify=notes.append)
    assert (r.in_channels, r.scale, r.input) == (3, 2, "lr")
    assert any("inferred" in n for n in notes)


def test_saved_model_directory_with_info_asset(tmp_path):
    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, keras.layers.Rescaling(0.5)(inputs))
    module = tf.Module()
    module.f = tf.function(lambda images: {"output_0": model(images)},
                           input_signature=[tf.TensorSpec([None, None, None, 1], tf.float32)])
    path = str(tmp_path / "saved")
    tf.saved_model.save(module, path, signatures={"serving_default": module.f})
    # The asset as every export so far wrote it (`ModelInfo.write`).
    with open(os.path.join(path, "assets", "pnen_tf.json"), "w") as f:
        json.dump({"task": "denoise", "scale": 1, "in_channels": 1, "input": "same"}, f)
    r = load_restorer(path)
    assert r.info.task == "denoise"
    np.testing.assert_allclose(r.restore(np.ones((3, 4, 1), np.float32)), 0.5)


def test_cli_restores_any_mode_and_reports_bad_files(tmp_path, rdn_x2, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    rng = np.random.default_rng(4)
    write_image(src / "rgb.png", rng.random((10, 12, 3)))
    write_image(src / "rgba16.png", rng.random((9, 7, 3)), rng.random((9, 7, 1)), 16)
    write_image(src / "gray.png", rng.random((8, 6, 1)))
    write_image(src / "tiny.png", rng.random((1, 1, 3)))
    (src / "empty.png").write_bytes(b"")
    (src / "text.png").write_text("hello")
    (src / "trunc.png").write_bytes((src / "rgb.png").read_bytes()[:60])
    missing = str(tmp_path / "missing.png")
    status = cli.main(["restore", str(src), missing, "-o", str(out), "--model", rdn_x2[0],
                       "--compare"])
    err = capsys.readouterr().err
    assert status == 1
    for name, problem in [("empty.png", "empty file"), ("text.png", "not an image"),
                          ("trunc.png", "truncated"), ("tiny.png", "1x1 pixels"),
                          ("missing.png", "no such file")]:
        assert any(name in line and problem in line for line in err.splitlines()), (name, err)
    assert "restored 3 of 8 files" in err and "5 failed" in err
    rgba = read_image(out / "rgba16.png")
    assert (rgba.bit_depth, rgba.pixels.shape, rgba.alpha.shape) == (16, (18, 14, 3), (18, 14, 1))
    assert read_image(out / "gray.png").pixels.shape == (16, 12, 1)
    assert read_image(out / "rgb_compare.png").pixels.shape == (20, 48, 3)
    expected = rdn_x2[1](read_image(src / "rgb.png").pixels[None])[0]
    np.testing.assert_array_equal(to_integers(read_image(out / "rgb.png").pixels),
                                  to_integers(expected))


def test_glob_input_and_module_entry_point(tmp_path, rdn_x2):
    write_image(tmp_path / "a.png", np.zeros((4, 4, 3)))
    write_image(tmp_path / "b.jpg", np.zeros((4, 4, 3)))
    status = restore.main([str(tmp_path / "*.png"), "-o", str(tmp_path / "o"),
                           "--model", rdn_x2[0]])
    assert status == 0 and os.listdir(tmp_path / "o") == ["a.png"]


def test_cli_usage_and_bad_model(tmp_path, capsys):
    assert cli.main([]) == 2 and "restore" in capsys.readouterr().out
    assert cli.main(["frobnicate"]) == 2 and "unknown command" in capsys.readouterr().err
    assert cli.main(["restore", "--help"]) == 0 and "--compare" in capsys.readouterr().out
    assert cli.main(["restore", "x.png", "-o", str(tmp_path), "--model", "nope.keras"]) == 2
    assert "nope.keras" in capsys.readouterr().err
    (tmp_path / "empty_dir").mkdir()
    assert cli.main(["restore", "x.png", "-o", str(tmp_path), "--model",
                     str(tmp_path / "empty_dir")]) == 2
    err = capsys.readouterr().err
    assert "cannot load model" in err and "empty_dir" in err


def test_a_staged_restore_resumes_after_an_interruption(tmp_path, rdn_x2, monkeypatch):
    from pnen_tf import staged

    pixels = np.random.default_rng(5).random((10, 12, 3))
    write_image(tmp_path / "in.png", pixels)
    args = ["restore", str(tmp_path / "in.png"), "-o", str(tmp_path / "out"), "--model",
            rdn_x2[0], "--staged-dir", str(tmp_path / "stages")]
    compute, computed = staged.StagedForward._compute, []

    def interrupted_at_the_fourth_stage(self, key, *args):
        computed.append(key)
        if len(computed) == 4:
            raise KeyboardInterrupt  # Ctrl-C, or the machine going away
        return compute(self, key, *args)

    monkeypatch.setattr(staged.StagedForward, "_compute", interrupted_at_the_fourth_stage)
    with pytest.raises(KeyboardInterrupt):
        cli.main(args)
    assert not (tmp_path / "out").exists()
    computed.clear()
    monkeypatch.setattr(staged.StagedForward, "_compute",
                        lambda self, *a: computed.append(a[0]) or compute(self, *a))
    assert cli.main(args) == 0
    stages = staged.StagedForward(rdn_x2[1], str(tmp_path / "unused")).stage_keys()
    assert computed == stages[3:]  # the three stages done are not redone
    expected = rdn_x2[1](read_image(tmp_path / "in.png").pixels[None])[0]
    np.testing.assert_array_equal(to_integers(read_image(tmp_path / "out" / "in.png").pixels),
                                  to_integers(expected))
    # Another model, the same folder of stages: a run of its own beside the first.
    other = build("rdn", scale=2, in_channels=3, channels=8, num_blocks=1, num_layers=2, growth=8)
    saving.save_model(other, str(tmp_path / "other.keras"), RDN_X2)
    args[args.index(rdn_x2[0])] = str(tmp_path / "other.keras")
    assert cli.main(args) == 0
    assert len(os.listdir(tmp_path / "stages")) == 2
    expected = other(read_image(tmp_path / "in.png").pixels[None])[0]
    np.testing.assert_array_equal(to_integers(read_image(tmp_path / "out" / "in.png").pixels),
                                  to_integers(expected))
    with pytest.raises(ValueError, match="stage by stage"):
        load_restorer(str(tmp_path), staged_dir=str(tmp_path / "stages"))


# --- Bad input never costs the user a file (issue 15) ---------------------------------------

DENOISE_RGB = {"task": "denoise", "scale": 1, "in_channels": 3, "input": "same"}


def _conv_model(path, kernel=None):
    """A tiny same-size RGB model saved with its facts; `kernel` overrides the 3x3 weights."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(3, 3, padding="same")
    model = keras.Model(inputs, conv(inputs))
    if kernel is not None:
        conv.kernel.assign(np.full(conv.kernel.shape, kernel, np.float32))
    saving.save_model(model, str(path), DENOISE_RGB)
    return model


@pytest.fixture(scope="module")
def conv(tmp_path_factory):
    path = tmp_path_factory.mktemp("conv") / "conv.keras"
    return str(path), _conv_model(path)


def _expected(model, path):
    return to_integers(np.asarray(model(read_image(path).pixels[None]))[0])


def _no_model_may_run(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded although the run should have been refused")

    monkeypatch.setattr(restore, "load_restorer", refuse)


def _error_lines(err):
    return [line for line in err.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("output", ["same", "dot", "link"])
def test_a_run_never_writes_over_its_inputs(tmp_path, conv, monkeypatch, capsys, output):
    src = tmp_path / "photos"
    write_image(src / "x.png", np.random.default_rng(0).random((6, 7, 3)))
    before = (src / "x.png").read_bytes()
    (tmp_path / "link").symlink_to(src)
    out = {"same": str(src), "dot": f"{src}/./", "link": str(tmp_path / "link")}[output]
    _no_model_may_run(monkeypatch)
    assert cli.main(["restore", str(src), "-o", out, "--model", conv[0]]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert "would overwrite the input" in line and str(src / "x.png") in line
    assert (src / "x.png").read_bytes() == before and os.listdir(src) == ["x.png"]


def test_outputs_get_names_unique_within_the_run(tmp_path, conv, capsys):
    rng = np.random.default_rng(1)
    inputs = [tmp_path / "dup" / "x.jpg", tmp_path / "dup" / "x.png", tmp_path / "dup2" / "x.png",
              tmp_path / "dup2" / "x_compare.png"]
    for path in inputs:
        write_image(path, rng.random((6, 8, 3)))
    out = tmp_path / "out"
    assert cli.main(["restore", *map(str, inputs), "-o", str(out), "--model", conv[0],
                     "--compare"]) == 0
    assert "restored 4 of 4 files" in capsys.readouterr().err
    names = ["x", "x_png", "x_png_2", "x_compare_png"]
    assert sorted(os.listdir(out)) == sorted(n + s + ".png" for n in names for s in ("", "_compare"))
    for name, path in zip(names, inputs):  # each output is its own input's restoration
        np.testing.assert_array_equal(to_integers(read_image(out / f"{name}.png").pixels),
                                      _expected(conv[1], path))


def test_a_non_finite_output_is_an_error_and_nothing_is_written(tmp_path, capsys):
    nan_model = tmp_path / "nan.keras"
    _conv_model(nan_model, kernel=np.nan)
    write_image(tmp_path / "in" / "x.png", np.full((6, 6, 3), 0.5))
    out = tmp_path / "out"
    assert cli.main(["restore", str(tmp_path / "in"), "-o", str(out), "--model",
                     str(nan_model)]) == 1
    (line,) = _error_lines(capsys.readouterr().err)
    assert str(tmp_path / "in" / "x.png") in line and "NaN" in line
    assert not out.exists()
    with pytest.raises(RestoreError, match="3 NaN or infinite"):
        Restorer(lambda x: np.where(x > 0.5, np.inf, x), GRAY) \
            .restore(np.array([[[0.1], [0.9]], [[0.9], [0.9]]], np.float32))


@pytest.mark.parametrize("output,problem", [
    ("file", "exists and is not a folder"),
    ("/proc/pnen-tf-restore", "cannot write here"),
    ("under_file", "cannot write here"),
])
def test_the_output_folder_is_checked_before_the_model_runs(tmp_path, conv, monkeypatch, capsys,
                                                            output, problem):
    write_image(tmp_path / "x.png", np.zeros((4, 4, 3)))
    (tmp_path / "file").write_text("mine")
    out = {"file": tmp_path / "file", "under_file": tmp_path / "file" / "out"}.get(output, output)
    _no_model_may_run(monkeypatch)
    assert cli.main(["restore", str(tmp_path / "x.png"), "-o", str(out), "--model", conv[0]]) == 2
    (line,) = _error_lines(capsys.readouterr().err)
    assert str(out) in line and problem in line
    assert (tmp_path / "file").read_text() == "mine"


def test_a_failed_write_is_reported_as_a_write_error(tmp_path, conv, monkeypatch, capsys):
    import errno

    write_image(tmp_path / "in" / "x.png", np.zeros((4, 4, 3)))

    def disk_full(path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(restore.image_io, "write_image", disk_full)
    assert cli.main(["restore", str(tmp_path / "in"), "-o", str(tmp_path / "out"),
                     "--model", conv[0]]) == 1
    (line,) = _error_lines(capsys.readouterr().err)
    assert "cannot write" in line and "No space left" in line and "model failed" not in line


def test_empty_folders_and_animations_are_reported_not_skipped(tmp_path, conv, capsys):
    from PIL import Image

    (tmp_path / "empty").mkdir()
    assert cli.main(["restore", str(tmp_path / "empty"), "-o", str(tmp_path / "out"),
                     "--model", conv[0]]) == 1
    (line,) = _error_lines(capsys.readouterr().err)
    assert str(tmp_path / "empty") in line and "without images" in line

    src = tmp_path / "src"
    write_image(src / "still.png", np.random.default_rng(2).random((5, 6, 3)))
    frames = [Image.new("RGB", (6, 5), colour) for colour in ("red", "blue")]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:])
    assert cli.main(["restore", str(src), "-o", str(tmp_path / "out"), "--model", conv[0]]) == 1
    err = capsys.readouterr().err
    (line,) = _error_lines(err)
    assert str(src / "anim.gif") in line and "2 frames" in line
    assert "restored 1 of 2 files" in err and os.listdir(tmp_path / "out") == ["still.png"]
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "out" / "still.png").stat().st_mode & 0o777 == 0o666 & ~mask
