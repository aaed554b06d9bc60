"""RDN (Zhang et al., TPAMI 2020) with optional non-local blocks, as the authors' code builds it."""

import keras
from keras import layers

from pnen_tf.layers import PixelShuffle, ResidualDenseBlock
from pnen_tf.models.common import check_positions, image_input, make_nonlocal

# "One PNB before every five residual dense blocks": after blocks 5 and 10 (PNEN_Denoise).
PAPER_NONLOCAL_AFTER = (5, 10)
# "Deeper" RDN: one more dense block (23.38M parameters = RDN + one block). It is inserted in
# the chain after block 8 and its output takes that block's place in the global fusion, the way
# the non-local blocks are inserted, which keeps the fusion at 16 x 64 channels as the count says.
DEEPER_AFTER = 8


def build_rdn(in_channels, scale=1, channels=64, num_blocks=16, num_layers=8, growth=None,
              nonlocal_block=None, nonlocal_variant=None, nonlocal_options=None,
              nonlocal_after=None, deeper=False):
    """RDN with D=num_blocks dense blocks of C=num_layers layers, growth G, G0=channels.

    Shallow features F_-1 = conv(x), F_0 = conv(F_-1); dense blocks; global feature fusion
    (1x1 over the concatenation of every block's output, then 3x3) plus F_-1. Denoising
    (scale 1) ends as the authors' code does: 3x3 conv + ReLU, 1x1 conv, plus the input.
    Super-resolution takes the low-resolution image and ends in a sub-pixel upsampler
    (conv to G0 r^2 channels + pixel shuffle; x4 as two x2 stages) and a 3x3 conv.

    The authors' code concatenates block 4 twice and drops block 3 in the global fusion; this
    builder fuses blocks 1..D as the RDN paper describes (same parameter count).
    `nonlocal_after=None` takes the paper's positions (5, 10) that precede the last block, or
    the middle block of a network too small for them.
    """
    if nonlocal_after is None:
        nonlocal_after = tuple(d for d in PAPER_NONLOCAL_AFTER if d < num_blocks) or (
            max(1, num_blocks // 2),)
    check_positions("nonlocal_after", nonlocal_after, num_blocks, nonlocal_block)
    growth = growth or channels
    image = image_input(in_channels)
    shallow = layers.Conv2D(channels, 3, padding="same", name="sfe_1")(image)
    features = layers.Conv2D(channels, 3, padding="same", name="sfe_2")(shallow)
    block_outputs = []
    for d in range(1, num_blocks + 1):
        features = ResidualDenseBlock(growth, num_layers, name=f"rdb_{d}")(features)
        if deeper and d == DEEPER_AFTER:
            features = ResidualDenseBlock(growth, num_layers, name="rdb_deeper")(features)
        if nonlocal_block is not None and d in nonlocal_after:
            features = make_nonlocal(nonlocal_block, nonlocal_variant, nonlocal_options,
                                     f"{nonlocal_block}_{d}")(features)
        block_outputs.append(features)
    fused = layers.Concatenate(name="gff_concat")(block_outputs) if num_blocks > 1 else block_outputs[0]
    fused = layers.Conv2D(channels, 1, name="gff_1x1")(fused)
    fused = layers.Conv2D(channels, 3, padding="same", name="gff_3x3")(fused)
    features = layers.Add(name="global_residual")([shallow, fused])
    if scale == 1:
        tail = layers.Conv2D(channels, 3, padding="same", activation="relu", name="tail_3x3")(features)
        tail = layers.Conv2D(in_channels, 1, name="tail_1x1")(tail)
        output = layers.Add(name="output")([image, tail])
    else:
        output = layers.Conv2D(in_channels, 3, padding="same", name="output")(
            _upsample(features, scale, channels))
    return keras.Model(image, output, name="rdn")


def _upsample(features, scale, channels):
    for stage, factor in enumerate((2, 2) if scale == 4 else (scale,)):
        features = layers.Conv2D(channels * factor * factor, 3, padding="same", name=f"upsample_{stage}")(features)
        features = PixelShuffle(factor, name=f"pixel_shuffle_{stage}")(features)
    return features
