"""How the exporters read a `.keras` file: the served output and the facts they record."""

import numpy as np
import keras
import pytest

from export._model import load
from pnen_tf.models import build
from pnen_tf.saving import save_model


def test_multi_output_model_serves_the_fused_restoration(tmp_path):
    """A multi-supervised PNEN returns [Y, Y_1, ..., Y_M] (eq. 5); serving must give Y."""
    keras.utils.set_random_seed(0)
    model = build("pnen", channels=8, num_groups=2, multi_output=True)
    path = str(tmp_path / "pnen.keras")
    save_model(model, path, {"model": "pnen", "task": "smooth", "scale": 1, "in_channels": 3,
                             "input": "same"})
    served, info = load(path)
    images = np.random.default_rng(0).uniform(size=(1, 9, 10, 3)).astype(np.float32)
    outputs = [np.asarray(y) for y in model(images)]
    assert len(outputs) == 3 and len(served.outputs) == 1
    np.testing.assert_allclose(np.asarray(served(images)), outputs[0], atol=1e-6)
    assert np.max(np.abs(outputs[0] - outputs[1])) > 1e-3  # Y really differs from Y_1
    assert info.model == "pnen"


def test_plain_keras_file_gets_facts_from_the_model(tmp_path):
    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 3, padding="same")(inputs))
    path = str(tmp_path / "plain.keras")
    model.save(path)
    _, info = load(path)
    assert (info.in_channels, info.scale, info.input) == (1, 1, "same")
    assert info.export["source"] == "plain.keras"


@pytest.mark.parametrize("facts, message", [
    ({"in_channels": 3}, "in_channels=3 but the model takes 1"),
    ({"input": "sideways"}, "unknown input convention 'sideways'"),
])
def test_contradictory_facts_are_refused(tmp_path, facts, message):
    inputs = keras.Input((None, None, 1))
    model = keras.Model(inputs, keras.layers.Conv2D(1, 3, padding="same")(inputs))
    path = str(tmp_path / "odd.keras")
    save_model(model, path, facts)
    with pytest.raises(ValueError, match=message):
        load(path)
