"""The ONNX export: dynamic sizes, recorded facts, enforced onnxruntime check, bad input."""

import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper
from PIL import Image

from export import read_export_info
from export.onnx import (DEFAULT_OPSET, MULTI_TILE, MULTI_TILE_PROBE, PROBE_SIZES, export_onnx, main,
                         onnxruntime_session)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXPECTED_OPSET = {"pnen": DEFAULT_OPSET, "memnet_sr": 17}


def test_onnx_graph_is_dynamic_and_carries_the_facts(model_name, tiny_models, onnx_files):
    path, probes = onnx_files[model_name]
    model = onnx.load(path)
    (graph_input,) = model.graph.input
    dims = graph_input.type.tensor_type.shape.dim
    assert graph_input.name == "images"
    assert [d.HasField("dim_value") for d in dims] == [False, False, False, True]  # batch, H, W
    assert dims[3].dim_value == tiny_models[model_name].channels
    assert {o.domain or "ai.onnx": o.version for o in model.opset_import}["ai.onnx"] == EXPECTED_OPSET[model_name]

    info = read_export_info(path)
    for key, value in tiny_models[model_name].info.items():
        assert info.get(key) == value
    assert info.export["onnx_opset"] == EXPECTED_OPSET[model_name]
    assert all(0 <= probe.error <= 1e-4 for probe in probes)
    assert sorted(os.listdir(os.path.dirname(path))) == sorted(f"{n}.onnx" for n in onnx_files)


def test_the_export_checks_a_photo_size_and_a_multi_tile_size(onnx_files, tiny_models):
    """Every probe the exporter reports was measured; the forced-tile one runs >= 2 query chunks
    and >= 2 key blocks in every attention (strides up to 8) of the converted graph."""
    _, probes = onnx_files["pnen"]
    assert [(p.size, p.tiles) for p in probes] == [(s, None) for s in PROBE_SIZES] + [(MULTI_TILE_PROBE, MULTI_TILE)]
    assert (96, 128) in PROBE_SIZES
    height, width = MULTI_TILE_PROBE
    assert height * width > MULTI_TILE["query_chunk"]
    assert -(-height // 8) * -(-width // 8) > MULTI_TILE["key_block"]


def test_the_export_refuses_the_old_same_padding_bug(tiny_models, tmp_path, monkeypatch):
    """Issue 20 put back: strided key/value convs with Keras' "same" padding, which tf2onnx
    converts to an unclamped SAME_UPPER. The old 21x27 probe passed it; the export must not."""
    from pnen_tf.layers import nonlocal_base

    monkeypatch.setattr(nonlocal_base, "pad_same", lambda x, kernel, stride: x)
    monkeypatch.setattr(nonlocal_base.NonLocalBase, "_conv", lambda self, filters, kernel, stride, name:
                        keras.layers.Conv2D(filters, kernel, strides=stride, padding="same", name=name))
    out = tmp_path / "model.onnx"
    with pytest.raises(ValueError, match=r"differs from Keras by .* on a (96x128|40x37) probe.* was not written"):
        export_onnx(tiny_models["pnen"].path, str(out))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("opset", [99, 7, "latest", -1])
def test_unknown_opset_is_a_clear_error(tiny_models, tmp_path, opset):
    out = tmp_path / "model.onnx"
    with pytest.raises(ValueError, match=f"unknown ONNX opset {opset!r}.*13..18"):
        export_onnx(tiny_models["pnen"].path, str(out), opset=opset)
    assert os.listdir(tmp_path) == []


def test_cli_reports_user_errors_in_one_line(tiny_models, tmp_path, capsys):
    out = str(tmp_path / "model.onnx")
    assert main(["--model", tiny_models["pnen"].path, "--out", out, "--opset", "99"]) == 1
    assert main(["--model", str(tmp_path / "missing.keras"), "--out", out]) == 1
    assert main(["--model", tiny_models["pnen"].path, "--out", str(tmp_path / "model.txt")]) == 1
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 3 and "Traceback" not in "".join(errors)
    assert "unknown ONNX opset '99'" in errors[0]
    assert "missing.keras" in errors[1]
    assert "model.txt" in errors[2]
    assert os.listdir(tmp_path) == []


def test_a_conversion_that_disagrees_with_keras_is_not_written(tiny_models, tmp_path, monkeypatch):
    """A converter returning the identity instead of the model must be caught by the check."""
    def identity_export(model, path, **kwargs):
        channels = model.inputs[0].shape[-1]
        value = helper.make_tensor_value_info
        graph = helper.make_graph(
            [helper.make_node("Identity", ["images"], ["restored"])], "identity",
            [value("images", TensorProto.FLOAT, [None, None, None, channels])],
            [value("restored", TensorProto.FLOAT, [None, None, None, channels])],
        )
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 15)], ir_version=8), path)

    monkeypatch.setattr("keras.Model.export", identity_export)
    out = tmp_path / "model.onnx"
    with pytest.raises(ValueError, match=r"differs from Keras by .* was not written"):
        export_onnx(tiny_models["pnen"].path, str(out))
    assert os.listdir(tmp_path) == []


def test_probe_check_reports_the_measured_error(onnx_files, tiny_models):
    """`max_abs_error` is the number the exporter enforces; check it against a plain computation."""
    from export.onnx import max_abs_error

    path, _ = onnx_files["pnen"]
    images = np.random.default_rng(3).uniform(size=(1, 10, 12, 3)).astype(np.float32)
    expected = np.asarray(tiny_models["pnen"].model(images))
    assert max_abs_error(path, images, expected) <= 1e-4
    assert max_abs_error(path, images, expected + 0.5) == pytest.approx(0.5, abs=1e-4)


def test_module_entry_point_reports_a_bad_opset(tiny_models, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "export.onnx", "--model", tiny_models["pnen"].path,
         "--out", str(tmp_path / "model.onnx"), "--opset", "99"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("error: unknown ONNX opset '99'")
    assert "Traceback" not in result.stderr


def test_docs_onnxruntime_example_works(onnx_files, serving_docs_block, docs_env, tmp_path):
    shutil.copy(onnx_files["pnen"][0], tmp_path / "pnen.onnx")
    pixels = np.random.default_rng(4).integers(0, 256, (11, 14, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "noisy.png")
    code = serving_docs_block("onnxruntime.InferenceSession")
    subprocess.run(["python", "-c", code], cwd=tmp_path, env=docs_env, check=True)
    assert np.asarray(Image.open(tmp_path / "restored.png")).shape == (11, 14, 3)


def test_onnxruntime_session_flushes_denormals_and_keeps_the_output(onnx_files):
    import onnxruntime

    path = onnx_files["pnen"][0]
    session = onnxruntime_session(path)
    entry = session.get_session_options().get_session_config_entry("session.set_denormal_as_zero")
    assert entry == "1"
    plain = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    images = np.random.default_rng(5).uniform(size=(1, 37, 45, 3)).astype(np.float32)
    (flushed,), (kept,) = (s.run(None, {"images": images}) for s in (session, plain))
    np.testing.assert_allclose(flushed, kept, rtol=0, atol=1e-6)
