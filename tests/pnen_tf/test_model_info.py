"""`ModelInfo`: one record of a model's facts, read from and written into every artifact."""

import doctest
import json
import os
import zipfile

import keras
import numpy as np
import pytest

import pnen_tf.model_info
from pnen_tf.model_info import ModelInfo
from pnen_tf.saving import save_model

# What `training.fit` has written into best.keras since the first version (sigma and filter
# recorded as null), with a task's own fact.
FIT_FACTS = {"model": "memnet", "task": "denoise", "scale": 1, "in_channels": 1,
             "input": "same", "sigma": None, "filter": None, "sigma_range": [0.0, 55.0],
             "options": {"channels": 32, "nonlocal_block": "pnb"}, "pnen_tf_version": "0.1.0"}


def _conv_model(channels=1):
    inputs = keras.Input((None, None, channels))
    return keras.Model(inputs, keras.layers.Conv2D(channels, 3, padding="same")(inputs))


def test_fields_and_extra_facts_round_trip():
    info = ModelInfo.from_dict(FIT_FACTS)
    assert (info.model, info.task, info.scale, info.in_channels, info.input) == \
        ("memnet", "denoise", 1, 1, "same")
    assert info.extra == {"sigma_range": [0.0, 55.0]} and info.get("sigma_range") == [0.0, 55.0]
    assert info.get("sigma") is None and info.get("quality", 30) == 30
    recorded = {k: v for k, v in FIT_FACTS.items() if v is not None}
    assert info.to_dict() == recorded and ModelInfo.from_dict(info.to_dict()) == info
    assert json.loads(info.to_json()) == recorded
    assert info.updated(preset="denoise-gray-blind", sigma_range=None).to_dict() == \
        {**{k: v for k, v in recorded.items() if k != "sigma_range"},
         "preset": "denoise-gray-blind"}
    assert ModelInfo.of(None) == ModelInfo() and ModelInfo.of(info) is info
    with pytest.raises(ValueError, match="JSON object"):
        ModelInfo.from_dict([1, 2])


def test_files_of_earlier_versions_and_of_plain_keras_are_read(tmp_path):
    model = _conv_model()
    plain = str(tmp_path / "plain.keras")
    model.save(plain)
    assert ModelInfo.read(plain) == ModelInfo()
    # A .keras file as `pnen_tf.saving` wrote it before `ModelInfo`: the member by hand.
    old = str(tmp_path / "old.keras")
    model.save(old)
    with zipfile.ZipFile(old, "a") as archive:
        archive.writestr("pnen_tf.json", json.dumps(FIT_FACTS, indent=2, sort_keys=True))
    assert ModelInfo.read(old) == ModelInfo.from_dict(FIT_FACTS)
    # A SavedModel folder as export wrote it; a folder without the asset records nothing.
    saved = tmp_path / "saved" / "1"
    (saved / "assets").mkdir(parents=True)
    (saved / "assets" / "pnen_tf.json").write_text(json.dumps({**FIT_FACTS, "export": {
        "source": "best.keras", "pnen_tf_version": "0.1.0", "keras_version": "3.15.1"}}))
    assert ModelInfo.read(str(saved)).export["source"] == "best.keras"
    assert ModelInfo.read(str(tmp_path)) == ModelInfo()


def test_the_one_writer_and_reader_agree_on_every_artifact(tmp_path):
    onnx = pytest.importorskip("onnx")
    info = ModelInfo.from_dict({**FIT_FACTS, "export": {"onnx_opset": 17}})
    keras_path = str(tmp_path / "m.keras")
    save_model(_conv_model(), keras_path, info)
    folder = tmp_path / "saved"
    folder.mkdir()
    info.write(str(folder))
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx_path = str(tmp_path / "m.onnx")
    onnx.save(onnx.helper.make_model(graph), onnx_path)
    assert ModelInfo.read(onnx_path) == ModelInfo()
    info.write(onnx_path)
    for path in (keras_path, str(folder), onnx_path):
        assert ModelInfo.read(path) == info, path
    assert os.path.isfile(folder / "assets" / pnen_tf.model_info.SAVED_MODEL_ASSET)
    with pytest.raises(FileNotFoundError, match="no ONNX file"):
        ModelInfo.read(str(tmp_path / "missing.onnx"))


def _never_called(x):
    raise AssertionError("probed a model whose input convention is recorded")


def test_completed_keeps_recorded_facts_and_infers_the_others():
    info, notes = ModelInfo(in_channels=1, input="same").completed(1, _never_called)
    assert (info.in_channels, info.scale, info.input) == (1, 1, "same") and notes == []
    info, notes = ModelInfo().completed(3, lambda x: np.repeat(np.repeat(x, 2, 1), 2, 2),
                                        source="plain.keras")
    assert (info.in_channels, info.scale, info.input) == (3, 2, "lr")
    assert notes == ["plain.keras records no model facts: in_channels=3 from its input",
                     "plain.keras: input convention 'lr', scale 2 inferred from a probe"]
    info, _ = ModelInfo().completed(1, lambda x: x, scale=3)
    assert (info.scale, info.input) == (3, "upsampled")
    assert ModelInfo().completed(1, lambda x: x)[0].input == "same"
    with pytest.raises(ValueError, match="in_channels=3 but the model takes 1"):
        ModelInfo(in_channels=3).completed(1, _never_called)
    with pytest.raises(ValueError, match="unknown input convention 'sideways'"):
        ModelInfo(input="sideways").completed(1, _never_called)


def test_docstring_example_runs():
    result = doctest.testmod(pnen_tf.model_info)
    assert result.attempted > 0 and result.failed == 0
