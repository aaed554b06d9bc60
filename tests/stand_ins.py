"""Restoration models that need no training, saved with a trained model's facts.

A fixed 5x5 box filter is a real denoiser of smooth images: it beats the noisy input by
several dB, which is what the tools that ship and show presets must see.
"""

import keras
import numpy as np

from pnen_tf import saving

BOX = np.full((5, 5), 1 / 25)
DENOISER_FACTS = {"model": "box", "task": "denoise", "scale": 1, "sigma": 30.0, "filter": None,
                  "in_channels": 1, "input": "same", "options": {"size": 5}}


def save_filter(path, kernel=BOX, facts=DENOISER_FACTS):
    """Save a one-convolution gray model with this fixed `kernel` to `path`, with `facts`."""
    inputs = keras.Input((None, None, 1))
    conv = keras.layers.Conv2D(1, kernel.shape[0], padding="same", use_bias=False)
    model = keras.Model(inputs, conv(inputs))
    conv.set_weights([np.asarray(kernel, "float32")[:, :, None, None]])
    saving.save_model(model, str(path), facts)
    return model
