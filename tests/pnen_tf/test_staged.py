"""`StagedForward`: the model's output stage by stage, and an interrupted run goes on."""

import json
import os

import keras
import numpy as np
import pytest

from pnen_tf import models
from pnen_tf.staged import StagedError, StagedForward


def _image(channels, seed=0, size=(23, 19)):
    return np.random.default_rng(seed).random((1, *size, channels)).astype("float32")


def _tiny(name="pnen", **options):
    keras.utils.set_random_seed(0)
    if name == "rdn":
        options.update(scale=2, num_blocks=2, num_layers=2, growth=4, nonlocal_block="pnb")
    return models.build(name, channels=8, **options)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("name, options", [
    ("pnen", {}),
    ("pnen", {"nonlocal_variant": "paper", "multi_output": True}),  # shared query, 4 outputs
    ("pnen", {"nonlocal_block": "nlb", "num_groups": 2}),  # one branch: a single stage
    ("rdn", {}),  # concatenations, a global residual, sub-pixel upsampling
])
def test_staged_output_equals_the_models(tmp_path, name, options):
    model = _tiny(name, **options)
    x = _image(model.inputs[0].shape[-1])
    expected = model.predict_on_batch(x)
    got = StagedForward(model, str(tmp_path / "run"))(x)
    for g, e in zip(*(v if isinstance(v, list) else [v] for v in (got, expected))):
        np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-6)


def test_a_pyramid_block_runs_branch_by_branch_and_an_exit_net_right_after(tmp_path):
    model = _tiny(num_groups=1)
    staged = StagedForward(model, str(tmp_path / "run"))
    # Three scales: two partial sums, then the block's output.
    assert staged.stage_keys() == [
        "000-entry", "001-drb_1", "002-pnb_1.branch0", "002-pnb_1.branch1", "002-pnb_1",
        "003-exit_1_a", "004-exit_1_b", "005-exit_1_c", "006-estimate_1"]


def test_a_run_killed_while_saving_resumes_where_it_stopped(tmp_path, monkeypatch):
    model = _tiny()
    x = _image(3)
    expected = model.predict_on_batch(x)
    run = str(tmp_path / "run")
    save, first = StagedForward._save, []

    def killed_while_saving_a_partial_sum(self, path, array):
        if path.endswith("pnb_2.branch0.npy"):
            # What a SIGKILL inside write_atomically leaves behind: its temporary file.
            with open(os.path.join(self.directory, ".tmp-killed.npy"), "wb") as f:
                f.write(b"\x93NUMPY")
            raise Interrupt
        save(self, path, array)

    monkeypatch.setattr(StagedForward, "_save", killed_while_saving_a_partial_sum)
    with pytest.raises(Interrupt):
        StagedForward(model, run, on_stage=lambda key, seconds: first.append(key))(x)
    monkeypatch.setattr(StagedForward, "_save", save)
    # Only the results still needed are on disk: the block's input and the first group's
    # estimate (for the fusion; its exit net ran before the trunk went on); the image is in
    # memory. The callback heard of every stage recorded as done.
    with open(os.path.join(run, "progress.json")) as f:
        assert list(json.load(f)["done"]) == first
    assert sorted(os.listdir(run)) == [".tmp-killed.npy", "006-estimate_1.0.npy",
                                       "007-drb_2.0.npy", "progress.json"]

    # As if a run had stopped after a stage and before removing an input no longer needed.
    np.save(os.path.join(run, "001-drb_1.0.npy"), np.zeros(1))
    second = []
    got = StagedForward(model, run, on_stage=lambda key, seconds: second.append(key))(x)
    assert first + second == StagedForward(model, run).stage_keys()  # nothing redone or skipped
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert sorted(os.listdir(run)) == ["019-fusion.0.npy", "progress.json"]
    # Done: a third call reads the output back and computes nothing.
    third = []
    np.testing.assert_array_equal(StagedForward(model, run, on_stage=lambda k, s: third.append(k))(x), got)
    assert third == []


def test_a_partial_sum_left_behind_by_a_stopped_run_is_removed(tmp_path):
    # Stopped after a block's second branch was recorded and before the first partial sum (a
    # feature map: 1 GB for PNEN at 2048x2048) was removed.
    model = _tiny(num_groups=1)
    x = _image(3)
    run = str(tmp_path / "run")

    def stopped_after_the_second_branch(key, seconds):
        if key.endswith("pnb_1.branch1"):
            raise Interrupt

    with pytest.raises(Interrupt):
        StagedForward(model, run, on_stage=stopped_after_the_second_branch)(x)
    assert "002-pnb_1.branch0.npy" in os.listdir(run)
    got = StagedForward(model, run)(x)
    np.testing.assert_allclose(got, model.predict_on_batch(x), rtol=1e-6, atol=1e-6)
    assert sorted(os.listdir(run)) == ["006-estimate_1.0.npy", "progress.json"]


def test_a_run_killed_in_its_first_stage_resumes(tmp_path, monkeypatch):
    model = _tiny(num_groups=1)
    x = _image(3)
    run = str(tmp_path / "run")
    mark_done = StagedForward._mark_done

    def killed_before_recording_it(self, key):
        raise Interrupt

    monkeypatch.setattr(StagedForward, "_mark_done", killed_before_recording_it)
    with pytest.raises(Interrupt):
        StagedForward(model, run)(x)
    monkeypatch.setattr(StagedForward, "_mark_done", mark_done)
    assert "000-entry.0.npy" in os.listdir(run)  # saved, not recorded: the directory is the run's
    np.testing.assert_allclose(StagedForward(model, run)(x), model.predict_on_batch(x),
                               rtol=1e-6, atol=1e-6)


def test_shared_layers_and_integer_outputs_and_no_new_nodes_on_the_model(tmp_path):
    inputs = keras.Input((None, None, 3))
    conv = keras.layers.Conv2D(3, 3, padding="same")
    features = conv(keras.layers.ReLU()(conv(inputs)))  # one layer at two nodes
    model = keras.Model(inputs, [features, keras.ops.argmax(features, axis=-1)])
    nodes = len(conv._inbound_nodes)
    x = _image(3)
    expected = model.predict_on_batch(x)
    got = StagedForward(model, str(tmp_path / "run"))(x)
    np.testing.assert_allclose(got[0], expected[0], rtol=1e-6, atol=1e-6)
    assert got[1].dtype == np.asarray(expected[1]).dtype  # an integer map stays integer
    np.testing.assert_array_equal(got[1], expected[1])
    assert len(conv._inbound_nodes) == nodes  # the stages' models did not call it symbolically


def test_bfloat16_results_are_kept_exactly(tmp_path):
    import ml_dtypes

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = _tiny(num_groups=1)
        x = _image(3)
        expected = np.asarray(model.predict_on_batch(x)).astype("float32")
        got = StagedForward(model, str(tmp_path / "run"))(x)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    # Stored as float32, every value still a bfloat16 one: nothing rounded on the way to disk.
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got.astype(ml_dtypes.bfloat16).astype(np.float32), got)
    # The whole graph fuses a layer's last convolution with the next addition and rounds once,
    # the stages round between layers: a bfloat16 step or two apart.
    np.testing.assert_allclose(got, expected, rtol=2**-6, atol=2**-8)


def test_another_model_setting_or_input_or_a_foreign_directory_is_refused(tmp_path):
    model = _tiny(num_groups=1)
    run = str(tmp_path / "run")
    StagedForward(model, run)(_image(3))
    refused = "another model, setting or input"
    with pytest.raises(StagedError, match=refused):
        StagedForward(model, run)(_image(3, seed=1))
    retrained = _tiny(num_groups=1)  # the same stages, other weights
    retrained.set_weights([w + 1 for w in model.get_weights()])
    with pytest.raises(StagedError, match=refused):
        StagedForward(retrained, run)(_image(3))
    in_bf16 = _tiny(num_groups=1, nonlocal_options={"attention_dtype": "bfloat16"})
    in_bf16.set_weights(model.get_weights())  # the same weights, another setting
    with pytest.raises(StagedError, match=refused):
        StagedForward(in_bf16, run)(_image(3))
    with pytest.raises(StagedError, match=refused):
        StagedForward(_tiny(num_groups=2), run)(_image(3))
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "photo.png").write_bytes(b"")
    with pytest.raises(StagedError, match="not empty"):
        StagedForward(model, str(tmp_path / "other"))(_image(3))
    with pytest.raises(StagedError, match="1 inputs, got 2"):
        StagedForward(model, run)([_image(3), _image(3)])


def test_a_second_process_or_an_unreadable_progress_file_is_refused(tmp_path):
    import fcntl

    model = _tiny(num_groups=1)
    run = tmp_path / "run"
    StagedForward(model, str(run))(_image(3))
    held = os.open(run, os.O_RDONLY)  # as another process running on the directory holds it
    fcntl.flock(held, fcntl.LOCK_EX)
    try:
        with pytest.raises(StagedError, match="in use by another staged run"):
            StagedForward(model, str(run))(_image(3))
    finally:
        os.close(held)
    (run / "progress.json").write_text("")  # what a power loss before a flush could leave
    with pytest.raises(StagedError, match="cannot be read"):
        StagedForward(model, str(run))(_image(3))


def test_a_subclassed_model_is_refused(tmp_path):
    class Plain(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(StagedError, match="functional"):
        StagedForward(Plain(), str(tmp_path))
