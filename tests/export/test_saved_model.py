"""The TF Serving SavedModel: layout, recorded facts, signatures, bytes round trip, bad input."""

import os
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tensorflow as tf

import pnen_tf
from pnen_tf.model_info import ModelInfo
from export import read_export_info
from export.saved_model import export_saved_model, main
from pnen_tf.apps.imresize import imresize

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_tf_serving_layout_and_facts(model_name, tiny_models, saved_models):
    base = saved_models[model_name]
    assert os.listdir(base) == ["1"]  # no temporary directory left beside the version
    assert os.path.isfile(os.path.join(base, "1", "saved_model.pb"))
    assert os.path.isdir(os.path.join(base, "1", "variables"))
    info = read_export_info(base)
    assert info == read_export_info(os.path.join(base, "1"))
    for key, value in tiny_models[model_name].info.items():
        assert info.get(key) == value
    assert info.export["pnen_tf_version"] == pnen_tf.__version__
    assert info.export["source"] == f"{model_name}.keras"


def test_read_export_info_picks_the_newest_version(tmp_path):
    for version, task in ((2, "old"), (10, "new")):  # numeric, not lexical, order
        assets = tmp_path / str(version) / "assets"
        assets.mkdir(parents=True)
        (tmp_path / str(version) / "saved_model.pb").write_bytes(b"")
        (assets / "pnen_tf.json").write_text(f'{{"task": "{task}"}}')
    assert read_export_info(str(tmp_path)).task == "new"
    with pytest.raises(FileNotFoundError, match="no SavedModel"):
        read_export_info(str(tmp_path / "2" / "assets"))


def test_saved_model_cli_shows_both_signatures_with_dynamic_sizes(saved_models):
    result = subprocess.run(
        [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli", "show",
         "--dir", os.path.join(saved_models["pnen"], "1"), "--all"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    signatures = _signature_blocks(result.stdout)
    assert "shape: (-1, -1, -1, 3)" in signatures["serving_default"]["images"]
    assert "DT_FLOAT" in signatures["serving_default"]["images"]
    assert "shape: (-1, -1, -1, 3)" in signatures["serving_default"]["restored"]
    for tensor in ("image_bytes", "png_bytes"):  # [batch] or scalar: any rank
        assert "DT_STRING" in signatures["restore_image"][tensor]
        assert "shape: unknown_rank" in signatures["restore_image"][tensor]


def _signature_blocks(text):
    """{signature: {tensor: its tensor_info lines}} from `saved_model_cli show --all`."""
    signatures, signature, tensor = {}, None, None
    for line in text.splitlines():
        if line.startswith("signature_def['"):
            signature = line.split("'")[1]
            signatures[signature] = {}
        elif signature and ("inputs['" in line or "outputs['" in line):
            tensor = line.split("'")[1]
            signatures[signature][tensor] = ""
        elif signature and tensor and line.startswith("        "):
            signatures[signature][tensor] += line
    return signatures


def test_bytes_signature_round_trips_png(model_name, tiny_models, loaded_signatures):
    tiny = tiny_models[model_name]
    rng = np.random.default_rng(2)
    pixels = [rng.integers(0, 256, (h, w, tiny.channels), dtype=np.uint8) for h, w in ((13, 19), (16, 11))]
    pngs = [tf.io.encode_png(p).numpy() for p in pixels]
    restore = loaded_signatures[model_name]["restore_image"]

    batch = restore(image_bytes=tf.constant(pngs))["png_bytes"]  # sizes differ within the batch
    single = restore(image_bytes=tf.constant(pngs[0]))["png_bytes"]
    assert batch.shape == (2,) and single.shape == ()
    batch = batch.numpy()
    assert single.numpy() == batch[0]
    for png, original in zip(batch, pixels):
        decoded = tf.io.decode_png(png).numpy()
        expected = _expected_pixels(tiny, original)
        assert decoded.shape == expected.shape
        assert np.max(np.abs(decoded.astype(int) - expected.astype(int))) <= 1  # rounding ties


def _expected_pixels(tiny, pixels):
    """What the bytes signature should return, from the Keras model in memory."""
    images = pixels[np.newaxis].astype(np.float32) / 255.0
    if tiny.info["input"] == "upsampled":
        images = imresize(images, scale=tiny.info["scale"])
    restored = np.asarray(tiny.model(images))[0]
    return np.round(np.clip(restored, 0.0, 1.0) * 255.0).astype(np.uint8)


def test_bytes_signature_accepts_jpeg(loaded_signatures):
    jpeg = tf.io.encode_jpeg(np.full((9, 14, 3), 128, np.uint8)).numpy()
    png = loaded_signatures["pnen"]["restore_image"](image_bytes=tf.constant([jpeg]))["png_bytes"][0]
    assert tf.io.decode_png(png).shape == (9, 14, 3)


def test_cli_refuses_an_existing_version_unless_forced(tiny_models, tmp_path, capsys):
    base = str(tmp_path / "pnen")
    args = ["--model", tiny_models["pnen"].path, "--out", base, "--version", "3"]
    assert main(args) == 0
    graph = os.path.join(base, "3", "saved_model.pb")
    first = os.stat(graph).st_ino

    assert main(args) == 1
    error = capsys.readouterr().err
    assert os.path.join(base, "3") in error and "--force" in error and "Traceback" not in error
    assert os.stat(graph).st_ino == first

    assert main(args + ["--force"]) == 0
    assert os.stat(graph).st_ino != first
    assert os.listdir(base) == ["3"]  # neither the staging nor the replaced version is left


@pytest.mark.parametrize("content, error", [
    (None, FileNotFoundError),  # no file at all
    (b"not a model", ValueError),  # not a zip
    ("zip", ValueError),  # a zip that is not a Keras model
])
def test_not_a_model_is_a_clear_error_and_writes_nothing(tmp_path, content, error):
    path = tmp_path / "model.keras"
    if content == "zip":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("readme.txt", "hello")
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(error, match="model.keras"):
        export_saved_model(str(path), str(tmp_path / "out"), 1)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("version", [0, -1, "x", 1.5, True])
def test_version_must_be_a_positive_integer(tiny_models, tmp_path, version):
    with pytest.raises(ValueError, match="positive integer"):
        export_saved_model(tiny_models["pnen"].path, str(tmp_path / "out"), version)


def test_failure_while_writing_leaves_nothing_behind(tiny_models, tmp_path, monkeypatch):
    class FailingArchive:
        def write_out(self, directory, **kwargs):
            with open(os.path.join(directory, "saved_model.pb"), "wb") as file:
                file.write(b"half")
            raise OSError("disk full")

    monkeypatch.setattr("export.saved_model._archive", lambda model, info: FailingArchive())
    base = tmp_path / "pnen"
    with pytest.raises(OSError, match="disk full"):
        export_saved_model(tiny_models["pnen"].path, str(base), 1)
    assert os.listdir(base) == []


def test_docs_model_and_info_examples_work(saved_models, onnx_files, serving_docs_block, docs_env, tmp_path):
    env = docs_env
    subprocess.run(["sh", "-ec", serving_docs_block("save_model(build")], cwd=tmp_path, env=env, check=True)
    assert ModelInfo.read(str(tmp_path / "pnen.keras")).input == "same"

    shutil.copytree(saved_models["pnen"], tmp_path / "models" / "pnen")
    shutil.copy(onnx_files["pnen"][0], tmp_path / "pnen.onnx")
    code = serving_docs_block("read_export_info(") + "\nprint(read_export_info('pnen.onnx').model)"
    result = subprocess.run(["python", "-c", code], cwd=tmp_path, env=env, check=True,
                            capture_output=True, text=True)
    assert result.stdout.split() == ["pnen"]


def test_a_non_finite_output_fails_the_bytes_request_instead_of_a_black_png(tmp_path):
    import keras

    from pnen_tf.saving import save_model

    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(3, 3, padding="same")
    model = keras.Model(inputs, conv(inputs))
    conv.kernel.assign(np.full(conv.kernel.shape, np.nan, np.float32))
    save_model(model, str(tmp_path / "nan.keras"), {"task": "denoise", "scale": 1,
                                                    "in_channels": 3, "input": "same"})
    export_saved_model(str(tmp_path / "nan.keras"), str(tmp_path / "nan"), 1)
    restore = tf.saved_model.load(str(tmp_path / "nan" / "1")).signatures["restore_image"]
    png = tf.io.encode_png(np.full((6, 7, 3), 128, np.uint8)).numpy()
    with pytest.raises(tf.errors.InvalidArgumentError, match="NaN or infinite"):
        restore(image_bytes=tf.constant([png]))
