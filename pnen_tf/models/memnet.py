"""MemNet (Tai et al., ICCV 2017) with optional non-local blocks, Section V."""

import keras
from keras import layers

from pnen_tf.layers import MemoryBlock, WeightedSum
from pnen_tf.layers.memory_block import batch_norm, bn_relu_conv
from pnen_tf.models.common import check_positions, image_input, make_nonlocal

# "One PNB ahead of every five memory blocks": before blocks 1 and 6 of M6R6.
PAPER_NONLOCAL_BEFORE = (1, 6)
# "Deeper" MemNet: the paper gives 1056k parameters but not the layout; nine memory blocks
# (1070k convolution weights, +1.3%) is the closest stack of MemNet's own blocks.
DEEPER_MEMORY_BLOCKS = 9


def build_memnet(in_channels, channels=64, num_memory_blocks=6, num_recursions=6,
                 nonlocal_block=None, nonlocal_variant=None, nonlocal_options=None,
                 nonlocal_before=None, deeper=False, multi_output=False,
                 synchronized_bn=False):
    """MemNet M{num_memory_blocks}R{num_recursions}.

    FENet (a conv) -> memory blocks, each gating its recursive unit's short-term memories with
    all earlier blocks' outputs -> the ReconNet (BN-ReLU-Conv, the conv shared by every block,
    a batch norm per block since their outputs' statistics differ) turns every block's output
    into a residual, y_m = x + Recon(B_m), fused by learned weights (MemNet's multi-supervision,
    like eq. 4-5). The input of super-resolution is the bicubic-upsampled image; the shared
    reconstruction conv starts near zero, so the untrained network starts near its input.
    A non-local block placed before block b replaces B_{b-1} (in the chain and in the memories);
    `nonlocal_before=None` takes the paper's positions (1, 6) that the network has.
    At 64 channels M6R6 has 676,992 convolution weights; +2 PNB 1,045,632.
    """
    if deeper:
        num_memory_blocks = DEEPER_MEMORY_BLOCKS
    if nonlocal_before is None:
        nonlocal_before = tuple(b for b in PAPER_NONLOCAL_BEFORE if b <= num_memory_blocks)
    check_positions("nonlocal_before", nonlocal_before, num_memory_blocks, nonlocal_block)
    image = image_input(in_channels)
    recon = layers.Conv2D(in_channels, 3, padding="same", name="recon_conv",
                          kernel_initializer=keras.initializers.RandomNormal(stddev=1e-3))
    memories = [layers.Conv2D(channels, 3, padding="same", use_bias=False, name="fenet")(image)]
    estimates = []
    for b in range(1, num_memory_blocks + 1):
        if nonlocal_block is not None and b in nonlocal_before:
            memories[-1] = make_nonlocal(nonlocal_block, nonlocal_variant, nonlocal_options,
                                         f"{nonlocal_block}_{b}")(memories[-1])
        block = MemoryBlock(num_recursions, synchronized_bn=synchronized_bn, name=f"memory_{b}")
        memories.append(block(list(memories)))
        residual = bn_relu_conv(batch_norm(f"recon_bn_{b}", synchronized_bn), recon, memories[-1])
        estimates.append(layers.Add(name=f"estimate_{b}")([image, residual]))
    output = WeightedSum(name="fusion")(estimates)
    outputs = [output] + estimates if multi_output else output
    return keras.Model(image, outputs, name="memnet")
