"""The paper's models: parameter counts of Tables I/IV/V, shapes, round trips, gradients."""

import keras
import numpy as np
import pytest

from pnen_tf import models
from pnen_tf.model_info import ModelInfo
from pnen_tf.saving import load_model, save_model

# (name, options, expected parameters, tolerance): counts that follow from the authors' code.
PAPER_COUNTS = [
    ("rdn", {}, 22_009_793, 0.001),
    ("rdn", {"nonlocal_block": "pnb"}, 22_379_329, 0.001),
    ("rdn", {"nonlocal_block": "nlb"}, 22_133_057, 0.001),
    ("rdn", {"deeper": True}, 23_374_337, 0.001),
    ("rdn", {"scale": 3}, 22_308_035, 0.001),
    ("rdn", {"scale": 3, "nonlocal_block": "pnb"}, 22_677_571, 0.001),
    ("memnet", {}, 677_000, 0.05),  # trainable: convolutions plus batch-norm scales/offsets
    ("memnet", {"nonlocal_block": "pnb"}, 1_047_700, 0.05),
    ("pnen", {}, 1_890_000, 0.03),
]


@pytest.mark.parametrize("name,options,expected,tolerance", PAPER_COUNTS)
def test_parameter_counts_match_the_paper(name, options, expected, tolerance):
    # Trainable parameters: batch norms' moving statistics are not parameters of the paper.
    count = sum(int(np.prod(w.shape)) for w in models.build(name, **options).trainable_weights)
    assert abs(count - expected) <= tolerance * expected, f"{name} {options}: {count:,}"


def test_memnet_convolution_weights_are_677k():
    model = models.build("memnet")
    kernels = sum(int(np.prod(w.shape)) for w in model.weights if w.path.endswith("kernel"))
    assert kernels == 676_992


TINY = {
    "pnen": dict(channels=8, num_groups=2, nonlocal_options={"scales": (2, 4)}),
    "memnet": dict(channels=8, num_memory_blocks=2, num_recursions=2, nonlocal_block="pnb",
                   nonlocal_before=(2,)),
    "rdn": dict(channels=8, num_blocks=3, num_layers=2, growth=4, nonlocal_block="nlb",
                nonlocal_after=(2,)),
}


def _image(channels, height=13, width=10, batch=2):
    return np.random.default_rng(0).random((batch, height, width, channels)).astype("float32")


@pytest.mark.parametrize("name,scale,channels,expected_hw", [
    ("pnen", 1, 3, (13, 10)), ("memnet", 3, 1, (13, 10)), ("rdn", 1, 1, (13, 10)),
    ("rdn", 2, 3, (26, 20)), ("rdn", 3, 3, (39, 30)), ("rdn", 4, 3, (52, 40)),
])
def test_output_shapes_and_keras_round_trip(tmp_path, name, scale, channels, expected_hw):
    model = models.build(name, scale=scale, **TINY[name])
    x = _image(channels)
    out = model.predict_on_batch(x)
    assert out.shape == (2, *expected_hw, channels)
    path = str(tmp_path / "model.keras")
    info = {"model": name, "scale": scale, "input": models.input_convention(name, scale)}
    save_model(model, path, info)
    assert ModelInfo.read(path).to_dict() == info
    np.testing.assert_array_equal(load_model(path).predict_on_batch(x), out)


@pytest.mark.parametrize("name", ["pnen", "memnet"])
def test_multi_output_exposes_every_estimate_and_the_fusion(name):
    model = models.build(name, multi_output=True, **TINY[name])
    outputs = model.predict_on_batch(_image(model.inputs[0].shape[-1]))
    assert len(outputs) == 3
    weights = model.get_layer("fusion").fusion_weights.numpy()
    np.testing.assert_allclose(outputs[0], weights[0] * outputs[1] + weights[1] * outputs[2],
                               rtol=1e-5, atol=1e-5)
    inference = models.single_output(model)
    np.testing.assert_array_equal(inference.predict_on_batch(_image(3 if name == "pnen" else 1)),
                                  model.predict_on_batch(_image(3 if name == "pnen" else 1))[0])


@pytest.mark.parametrize("name", ["pnen", "memnet", "rdn"])
def test_gradients_reach_every_trainable_weight(name):
    model = models.build(name, **TINY[name])
    x = _image(model.inputs[0].shape[-1])
    import tensorflow as tf

    with tf.GradientTape() as tape:
        loss = tf.reduce_mean(tf.square(model(x, training=True) - 0.5))
    grads = tape.gradient(loss, model.trainable_weights)
    # Key biases are cancelled by the softmax (see the layer tests): they alone get zero.
    for weight, grad in zip(model.trainable_weights, grads):
        if "key_" in weight.path and weight.path.endswith("bias"):
            continue
        assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0, weight.path


def test_nonlocal_blocks_sit_where_the_paper_puts_them():
    rdn = models.build("rdn", nonlocal_block="pnb", channels=8, growth=4, num_layers=1)
    names = [layer.name for layer in rdn.layers]
    assert names.index("pnb_5") == names.index("rdb_5") + 1
    assert names.index("pnb_10") == names.index("rdb_10") + 1
    memnet = models.build("memnet", nonlocal_block="nlb", channels=8, num_recursions=1)
    names = [layer.name for layer in memnet.layers]
    assert names.index("nlb_1") < names.index("memory_1")
    assert names.index("memory_5") < names.index("nlb_6") < names.index("memory_6")
    assert [l.name for l in models.build("pnen", channels=8).layers if l.name.startswith("pnb")] == \
        ["pnb_1", "pnb_2", "pnb_3"]


def test_default_positions_fit_small_networks():
    small_rdn = models.build("rdn", nonlocal_block="pnb", channels=8, num_blocks=2, num_layers=1)
    assert [l.name for l in small_rdn.layers if l.name.startswith("pnb")] == ["pnb_1"]
    small_memnet = models.build("memnet", nonlocal_block="pnb", channels=8, num_memory_blocks=1,
                                num_recursions=1)
    assert [l.name for l in small_memnet.layers if l.name.startswith("pnb")] == ["pnb_1"]


def test_untrained_memnet_starts_near_its_input():
    model = models.build("memnet", channels=8, num_memory_blocks=2, num_recursions=2)
    x = _image(1)
    assert np.abs(model.predict_on_batch(x) - x).max() < 0.05


def test_identity_start_pnen_returns_its_input_and_keeps_the_other_weights():
    """Every Y_m = X + 0 before training, and only the last convolutions of the exits and of
    the PNB branches differ from a build without the option under the same seed."""
    options = dict(channels=8, num_groups=2, multi_output=True)
    keras.utils.set_random_seed(3)
    plain = models.build("pnen", **options)
    keras.utils.set_random_seed(3)
    start = models.build("pnen", identity_start=True, **options)
    x = _image(3)
    for output in start.predict_on_batch(x):
        np.testing.assert_allclose(output, x, atol=1e-6)
    assert np.abs(plain.predict_on_batch(x)[0] - x).max() > 1e-3
    zeroed = {f"{layer}/{kind}" for layer in ("exit_1_c", "exit_2_c", "pnb_1/output",
                                              "pnb_2/output") for kind in ("kernel", "bias")}
    assert zeroed <= {weight.path for weight in start.weights}
    for a, b in zip(plain.weights, start.weights):
        if a.path in zeroed:
            assert not np.asarray(b).any() and (a.path.endswith("bias") or np.asarray(a).any())
        else:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ValueError, match="identity_start"):
        models.build("memnet", channels=8, num_memory_blocks=1, num_recursions=1,
                     identity_start=True)


def test_paper_variant_and_scale_subsets_reach_the_blocks():
    model = models.build("pnen", channels=8, num_groups=1, nonlocal_variant="paper",
                         nonlocal_options={"scales": (4,)})
    block = model.get_layer("pnb_1")
    assert block.variant == "paper" and block.scales == (4,)


def test_bad_options_give_clear_errors():
    with pytest.raises(ValueError, match="unknown model 'edsr'"):
        models.build("edsr")
    with pytest.raises(ValueError, match="nonlocal_block"):
        models.build("rdn", nonlocal_block="ccnet")
    with pytest.raises(ValueError, match="scale"):
        models.build("rdn", scale=5)
    with pytest.raises(ValueError, match="in_channels"):
        models.build("pnen", in_channels=4)
    with pytest.raises(ValueError, match="pnen"):
        models.build("pnen", num_blocks=3)
    with pytest.raises(ValueError, match=r"nonlocal_after=\(5,\).*2"):
        models.build("rdn", nonlocal_block="pnb", num_blocks=2, nonlocal_after=(5,))
    model = models.build("rdn", **TINY["rdn"])
    with pytest.raises(ValueError, match="expected axis -1"):
        model(np.zeros((1, 8, 8, 3), "float32"))


def test_input_convention():
    assert models.input_convention("rdn", 3) == "lr"
    assert models.input_convention("memnet", 3) == "upsampled"
    assert models.input_convention("pnen", 1) == "same"
    with pytest.raises(ValueError, match="pnen: scale must be 1, got 3"):
        models.input_convention("pnen", 3)


def test_saving_is_atomic_and_rejects_bad_paths(tmp_path):
    model = models.build("rdn", **TINY["rdn"])
    with pytest.raises(ValueError, match="must end in '.keras'"):
        save_model(model, str(tmp_path / "model.h5"))
    with pytest.raises(FileNotFoundError, match="no model file"):
        load_model(str(tmp_path / "missing.keras"))
    (tmp_path / "fake.keras").write_text("not a zip")
    with pytest.raises(ValueError, match="not a .keras model file"):
        ModelInfo.read(str(tmp_path / "fake.keras"))
    target = tmp_path / "keep.keras"
    save_model(model, str(target), {"v": 1})

    class Exploding(keras.Model):
        def save(self, *args, **kwargs):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_model(Exploding(), str(target), {"v": 2})
    assert ModelInfo.read(str(target)).to_dict() == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fake.keras", "keep.keras"]
