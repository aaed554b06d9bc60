"""Keras, the reloaded SavedModel and onnxruntime give the same restoration.

Sizes: SMALL (21x27, not a multiple of the pyramid strides) runs the direct attention in
Keras, LARGE (36x44) the memory-linear tiled one; the exported graphs have dynamic sizes and
always tile, so every comparison also checks tiled against direct or tiled against tiled.
"""

import numpy as np
import tensorflow as tf

from export.onnx import onnxruntime_session
from pnen_tf.layers import plan_tiles

ATOL = 1e-4


def _images(tiny, size):
    return np.random.default_rng(1).uniform(size=(2, *size, tiny.channels)).astype(np.float32)


def test_keras_savedmodel_and_onnxruntime_agree(
    model_name, parity_size, tiny_models, loaded_signatures, onnx_files
):
    tiny = tiny_models[model_name]
    images = _images(tiny, parity_size)
    expected = np.asarray(tiny.model(images))
    served = loaded_signatures[model_name]["serving_default"](images=tf.constant(images))["restored"]
    session = onnxruntime_session(onnx_files[model_name][0])
    (converted,) = session.run(None, {"images": images})

    assert expected.shape == served.shape == converted.shape == images.shape
    saved_error = np.max(np.abs(served.numpy() - expected))
    onnx_error = np.max(np.abs(converted - expected))
    print(f"{model_name} {parity_size}: |SavedModel - Keras| {saved_error:.2e}, "
          f"|onnxruntime - Keras| {onnx_error:.2e}")
    assert saved_error <= ATOL
    assert onnx_error <= ATOL


def test_sizes_cover_both_attention_paths(attention_budget_mb):
    """The premise above: with the tiny models' budget Keras tiles LARGE, not SMALL.

    The largest attention in both models is the stride-2 branch: H*W queries, ceil(H/2)*ceil(W/2) keys.
    """
    def direct(height, width):
        keys = -(-height // 2) * -(-width // 2)
        return plan_tiles(2, height * width, keys, attention_budget_mb)[0]

    assert direct(21, 27)
    assert not direct(36, 44)
