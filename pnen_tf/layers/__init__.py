"""Keras 3 layers of PNEN, written with `keras.ops` only (TensorFlow and JAX backends).

Importing this module registers every layer for `.keras` (de)serialisation under `pnen_tf>`.
"""

from pnen_tf.layers.asymmetric_pyramid import AsymmetricPyramidNonLocalBlock
from pnen_tf.layers.attention import fused_attention, nonlocal_attention, plan_tiles, tiled_attention
from pnen_tf.layers.dilated_residual import DilatedResidualBlock
from pnen_tf.layers.fusion import PixelShuffle, WeightedSum
from pnen_tf.layers.memory_block import MemoryBlock
from pnen_tf.layers.non_local import NonLocalBlock
from pnen_tf.layers.pyramid_non_local import PyramidNonLocalBlock
from pnen_tf.layers.residual_dense import ResidualDenseBlock

__all__ = [
    "AsymmetricPyramidNonLocalBlock",
    "DilatedResidualBlock",
    "MemoryBlock",
    "NonLocalBlock",
    "PixelShuffle",
    "PyramidNonLocalBlock",
    "ResidualDenseBlock",
    "WeightedSum",
    "fused_attention",
    "nonlocal_attention",
    "plan_tiles",
    "tiled_attention",
]
