"""PNEN for edge-preserving smoothing, Section III-A and Fig. 1."""

import keras
from keras import layers

from pnen_tf.layers import DilatedResidualBlock, WeightedSum
from pnen_tf.models.common import image_input, make_nonlocal


def build_pnen(in_channels, channels=64, num_groups=3, nonlocal_block=None,
               nonlocal_variant=None, nonlocal_options=None, multi_output=False,
               synchronized_bn=False, identity_start=False):
    """PNEN: entry conv, M groups of DRB -> PNB (eq. 2), one exit net per group (eq. 3),
    Y_m = X + R_m and the learned fusion Y = sum_m w_m Y_m (eq. 4).

    With `multi_output=True` the model returns [Y, Y_1, ..., Y_M] for the multi-supervised loss
    of eq. (5); otherwise Y alone. Each exit net is conv-ReLU-conv-ReLU-conv (three convolutions,
    Section III-A). At the paper's width (64) the model has ~1.89M parameters.

    With `identity_start=True` the last convolution of every exit net and of every non-local
    block's branch start at zero, so R_m = 0 and every Y_m = Y = X before training: the network
    starts at the identity, which smoothing targets are close to, instead of at random
    residuals it must first unlearn (docs/models.md, "How the smoothing recipe was found").
    """
    image = image_input(in_channels)
    features = layers.Conv2D(channels, 3, padding="same", name="entry")(image)
    estimates = []
    for m in range(1, num_groups + 1):
        features = DilatedResidualBlock(synchronized_bn=synchronized_bn, name=f"drb_{m}")(features)
        if nonlocal_block is not None:
            block = make_nonlocal(nonlocal_block, nonlocal_variant, nonlocal_options,
                                  f"{nonlocal_block}_{m}")
            features = block(features)
            if identity_start:
                block.start_as_identity()
        residual = layers.Conv2D(channels, 3, padding="same", activation="relu", name=f"exit_{m}_a")(features)
        residual = layers.Conv2D(channels, 3, padding="same", activation="relu", name=f"exit_{m}_b")(residual)
        last = layers.Conv2D(in_channels, 3, padding="same", name=f"exit_{m}_c")
        residual = last(residual)
        if identity_start:
            # Zeroed after the random draw, not with a zeros initializer: every other layer
            # then gets the same weights as without the option (same seed).
            for weight in last.weights:
                weight.assign(keras.ops.zeros_like(weight))
        estimates.append(layers.Add(name=f"estimate_{m}")([image, residual]))
    output = WeightedSum(name="fusion")(estimates) if len(estimates) > 1 else estimates[0]
    outputs = [output] + estimates if multi_output else output
    return keras.Model(image, outputs, name="pnen")
