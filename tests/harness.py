"""The shared layer test (keras-hub's `run_layer_test` habit): build, call, config, save, train."""

import inspect
import os

import keras
import numpy as np


def run_layer_test(layer_cls, init_kwargs, inputs, tmp_path, expected_shape=None, no_gradient=()):
    """Check a layer end to end and return it.

    - output shape (and `compute_output_shape`) for the given inputs;
    - `get_config` holds every constructor argument, and `from_config` rebuilds an equal layer;
    - a `.keras` round trip (safe_mode) of a model around it gives identical outputs;
    - one training step changes every trainable weight (gradients reach them all), except the
      weights whose path contains one of `no_gradient`, which must provably stay unchanged.
    """
    layer = layer_cls(**init_kwargs)
    output = layer(inputs)
    expected_shape = expected_shape or _first(inputs).shape
    assert tuple(output.shape) == tuple(expected_shape)
    assert tuple(layer.compute_output_shape(_shapes(inputs))) == tuple(expected_shape)

    config = layer.get_config()
    for name in inspect.signature(layer_cls.__init__).parameters:
        if name not in ("self", "kwargs"):
            assert name in config, f"get_config() lacks constructor argument {name!r}"
    clone = layer_cls.from_config(config)
    clone(inputs)
    clone.set_weights(layer.get_weights())
    np.testing.assert_allclose(np.asarray(clone(inputs)), np.asarray(output), rtol=1e-5, atol=1e-6)

    model = _wrap(layer_cls, init_kwargs, inputs)
    reference = np.asarray(model.predict_on_batch(inputs))
    path = os.path.join(tmp_path, "layer.keras")
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_array_equal(np.asarray(loaded.predict_on_batch(inputs)), reference)

    _assert_one_step_changes_every_weight(model, inputs, no_gradient)
    return layer


def _wrap(layer_cls, init_kwargs, inputs):
    symbolic = [keras.Input(shape=(None, None, x.shape[-1])) for x in _as_list(inputs)]
    layer_input = symbolic if isinstance(inputs, list) else symbolic[0]
    return keras.Model(symbolic, layer_cls(**init_kwargs)(layer_input))


def _assert_one_step_changes_every_weight(model, inputs, no_gradient):
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    target = np.random.default_rng(1).normal(size=model.predict_on_batch(inputs).shape)
    model.train_on_batch(inputs, target.astype("float32"))
    for weight, old in zip(model.trainable_weights, before):
        changed = not np.allclose(keras.ops.convert_to_numpy(weight), old, rtol=1e-6, atol=1e-7)
        expected = not any(pattern in weight.path for pattern in no_gradient)
        assert changed == expected, f"{weight.path}: changed={changed}, expected {expected}"


def _as_list(x):
    return x if isinstance(x, list) else [x]


def _first(x):
    return _as_list(x)[-1]


def _shapes(inputs):
    return [tuple(x.shape) for x in inputs] if isinstance(inputs, list) else tuple(inputs.shape)
