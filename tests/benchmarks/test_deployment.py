"""The deployment comparison: each runtime's process loads, times and saves its output;
errors are against Keras; onnxruntime's profile is summed per operator type."""

import argparse
import json
import os

import keras
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from benchmarks import deployment
from pnen_tf.saving import save_model


@pytest.fixture(scope="module")
def doubling(tmp_path_factory):
    """A Keras model and an ONNX file that both double their image."""
    directory = tmp_path_factory.mktemp("deployment")
    inputs = keras.Input((None, None, 3), name="images")
    model = keras.Model(inputs, keras.layers.Rescaling(2.0)(inputs))
    keras_path = str(directory / "double.keras")
    save_model(model, keras_path, {"in_channels": 3})
    graph = helper.make_graph(
        [helper.make_node("Mul", ["images", "two"], ["restored"])], "double",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [None, None, None, 3])],
        [helper.make_tensor_value_info("restored", TensorProto.FLOAT, [None, None, None, 3])],
        [helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])])
    onnx_path = str(directory / "double.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), onnx_path)
    image = np.random.default_rng(0).random((1, 5, 7, 3)).astype(np.float32)
    image_path = str(directory / "image.npy")
    np.save(image_path, image)
    return {"keras": keras_path, "onnx": onnx_path, "image": image_path, "dir": str(directory),
            "openvino_ir": None, "expected": 2 * image}


@pytest.mark.parametrize("runtime", ["keras", "onnxruntime", "openvino"])
def test_a_runtime_process_times_its_calls_and_saves_its_output(runtime, doubling, tmp_path,
                                                                monkeypatch):
    if runtime == "openvino":
        pytest.importorskip("openvino", reason="OpenVINO is in the bench extra only: pip install .[bench]")
    monkeypatch.setenv("KERAS_BACKEND", os.environ.get("KERAS_BACKEND", "tensorflow"))
    output = str(tmp_path / "out.npy")
    payload = {**doubling, "runtime": runtime, "round": 0, "repeats": 2, "output": output,
               "profile": runtime == "onnxruntime"}
    result = deployment.child(payload)
    np.testing.assert_allclose(np.load(output), doubling["expected"], rtol=1e-6)
    assert len(result["seconds"]) == 2 and result["load_seconds"] > 0 and result["peak_gb"] > 0
    if runtime == "onnxruntime":
        assert [op for op, *_ in result["profile"]] == ["Mul"]


def test_profile_shares_leave_out_the_loops_that_contain_other_nodes(tmp_path):
    def node(op, microseconds):
        return {"cat": "Node", "name": f"{op}_1_kernel_time", "dur": microseconds,
                "args": {"op_name": op}}

    trace = [node("Loop", 9e6), node("MatMul", 3e6), node("Softmax", 1e6), node("MatMul", 2e6),
             {"cat": "Session", "name": "model_run", "dur": 9.5e6}]
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(trace))
    assert deployment.profile_by_op(str(path)) == [
        ["Loop", 9.0, 1, None], ["MatMul", 5.0, 2, 5 / 6], ["Softmax", 1.0, 1, 1 / 6]]


def test_runtimes_alternate_and_errors_are_against_keras():
    args = argparse.Namespace(rounds=2, runtimes=["keras", "onnxruntime", "openvino"], repeats=1,
                              profile=False)
    runs = deployment.plan(args)
    assert [r["runtime"] for r in runs] == ["keras", "onnxruntime", "openvino",
                                            "onnxruntime", "openvino", "keras"]
    timed = {"version": "v", "load_seconds": 1.0, "first_seconds": 3.0, "seconds": [2.0],
             "peak_gb": 1.0, "base_gb": 0.25}
    results = [{**runs[0], **timed}, {**runs[1], **timed}, {**runs[2], "error": "Loop-15"}]
    outputs = {0: np.zeros((1, 2, 2, 3)), 1: np.full((1, 2, 2, 3), 1e-4)}
    rows = {row["runtime"]: row for row in deployment.summary(results, outputs)}
    assert rows["keras"]["vs_keras"] == 0 and rows["onnxruntime"]["vs_keras"] == pytest.approx(1e-4)
    assert rows["onnxruntime"]["added_gb"] == 0.75 and rows["onnxruntime"]["seconds"] == [2.0]
    assert rows["openvino"]["notes"] == "Loop-15" and rows["openvino"]["seconds"] == []
