"""Exact softmax attention whose memory grows linearly with the number of pixels.

Both non-local blocks compute, for every query pixel i, eq. (11) of the paper

    E_hat[i] = sum_j softmax_j(q_i . k_j) v_j          (no 1/sqrt(d) scaling, as the authors' code)

A direct implementation holds the whole query x key matrix: 40 GB at 500x400 for the PNB's
scale-2 branch. One module per job:

- `dispatch`: `nonlocal_attention`, eq. (11) on feature maps by whichever path fits, and
  `intercept_attention`, for tools that count or replace it;
- `planner`: `plan_tiles`, the direct formula or tiles, and their sizes;
- `tiles`: the query chunks and key blocks with their carry keys;
- `tiled`: `tiled_attention`, the online-softmax forward and its recomputing custom gradient;
- `fused`: `fused_attention`, the backend's fused kernel (cuDNN's flash attention under JAX);
- `sequencing`: `wait_for`, which makes TensorFlow run steps in turn.

Written with `keras.ops` only: the same code runs under TensorFlow (also inside `tf.function`,
XLA, SavedModel and tf2onnx) and JAX.
"""

from pnen_tf.layers.attention.dispatch import intercept_attention, nonlocal_attention
from pnen_tf.layers.attention.fused import fused_attention
from pnen_tf.layers.attention.planner import plan_tiles
from pnen_tf.layers.attention.sequencing import wait_for
from pnen_tf.layers.attention.tiled import tiled_attention

__all__ = [
    "fused_attention",
    "intercept_attention",
    "nonlocal_attention",
    "plan_tiles",
    "tiled_attention",
    "wait_for",
]
