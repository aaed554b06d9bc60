"""Eq. (11) on feature maps: the direct formula, the tiles or the fused kernel, whichever fits."""

import contextlib
import math

import keras
from keras import ops

from pnen_tf.layers.attention.fused import flash_or_none
from pnen_tf.layers.attention.planner import plan_tiles
from pnen_tf.layers.attention.tiled import tiled_attention

_interceptor = None


def nonlocal_attention(
    query_map, key_map, value_map, memory_budget_mb=64, query_chunk=None, key_block=None,
    attention_dtype=None, sequential=False, flash_attention=False,
):
    """Eq. (11) on NHWC feature maps: every query pixel attends to every key pixel.

    E_hat[i] = sum_j softmax_j(q_i . k_j) v_j, without 1/sqrt(d) scaling (as the authors' code):
    by the direct formula where one matrix fits `memory_budget_mb`, else tile by tile
    (`tiled_attention`), or by the backend's fused kernel (`flash_attention`).

    Args:
        query_map: `[B, H, W, d]`; key_map: `[B, h, w, d]`; value_map: `[B, h, w, n]`
            (h, w may be smaller than H, W: the pyramid's strided keys).
        memory_budget_mb: memory for one attention tile with the buffers that accompany it in
            a training step; picks direct vs tiled path and the tile sizes (`plan_tiles`).
        query_chunk, key_block: force the tiled path with these tile sizes.
        attention_dtype: None (products in the input's dtype) or "bfloat16" for the products
            with probabilities and gradients; logits are float32 either way.
        sequential: see `tiled_attention`.
        flash_attention: use the backend's fused attention kernel where there is one and the
            products are 16-bit (`fused_attention`; a GPU under JAX), else the paths above
            with a warning. Its logits come from 16-bit queries and keys, unlike the tiled
            path's float32 logits.

    Returns:
        `[B, H, W, n]` in the dtype of `query_map`.

    Example:

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> q, k = rng.normal(size=(1, 6, 5, 4)), rng.normal(size=(1, 3, 3, 4))
    >>> v = rng.normal(size=(1, 3, 3, 2))
    >>> q, k, v = (x.astype("float32") for x in (q, k, v))
    >>> direct = nonlocal_attention(q, k, v)  # 30 x 9 logits fit the budget
    >>> tiled = nonlocal_attention(q, k, v, query_chunk=8, key_block=4)  # 4 chunks x 3 blocks
    >>> tuple(tiled.shape), bool(np.allclose(tiled, direct, atol=1e-6))
    ((1, 6, 5, 2), True)
    """
    options = dict(memory_budget_mb=memory_budget_mb, query_chunk=query_chunk,
                   key_block=key_block, attention_dtype=attention_dtype, sequential=sequential,
                   flash_attention=flash_attention)
    if _interceptor is not None:
        return _interceptor(_attention, query_map, key_map, value_map, **options)
    return _attention(query_map, key_map, value_map, **options)


@contextlib.contextmanager
def intercept_attention(fn):
    """While inside, `nonlocal_attention` (every non-local block's eq. (11)) returns
    `fn(attend, query_map, key_map, value_map, **options)` instead, where `attend(query_map,
    key_map, value_map, **options)` is the attention itself: for tools that count the attention
    (`benchmarks.measure.count_macs`) or put another in its place
    (`benchmarks.attention_baselines`). It acts when a block is called or traced, not on a
    graph traced before; an inner `intercept_attention` replaces an outer one until it exits.

    Example:

    >>> import numpy as np
    >>> from pnen_tf.layers import PyramidNonLocalBlock
    >>> key_sizes = []
    >>> def record(attend, query_map, key_map, value_map, **options):
    ...     key_sizes.append(tuple(key_map.shape[1:3]))
    ...     return attend(query_map, key_map, value_map, **options)
    >>> with intercept_attention(record):
    ...     _ = PyramidNonLocalBlock(scales=(2, 4))(np.zeros((1, 8, 8, 8), "float32"))
    >>> key_sizes  # the keys at strides 2 and 4
    [(4, 4), (2, 2)]
    """
    global _interceptor
    previous, _interceptor = _interceptor, fn
    try:
        yield
    finally:
        _interceptor = previous


def _attention(query_map, key_map, value_map, memory_budget_mb, query_chunk, key_block,
               attention_dtype, sequential, flash_attention):
    q_shape, k_shape = ops.shape(query_map), ops.shape(key_map)
    dtype = keras.backend.standardize_dtype(query_map.dtype)
    query = ops.reshape(query_map, (q_shape[0], -1, q_shape[3]))
    key = ops.reshape(key_map, (k_shape[0], -1, k_shape[3]))
    value = ops.reshape(value_map, (k_shape[0], -1, ops.shape(value_map)[3]))
    direct, chunk, block = plan_tiles(
        _static(q_shape[0]), _static_product(q_shape[1:3]), _static_product(k_shape[1:3]),
        memory_budget_mb, query_chunk, key_block,
    )
    matmul_dtype = attention_dtype or (dtype if "float" in dtype else "float32")
    out = flash_or_none(query, key, value, matmul_dtype) if flash_attention else None
    if out is None:
        out = (_direct_in_dtype(query, key, value, matmul_dtype) if direct
               else tiled_attention(query, key, value, chunk, block, matmul_dtype, sequential))
    out = ops.cast(out, dtype)
    return ops.reshape(out, (q_shape[0], q_shape[1], q_shape[2], ops.shape(value)[2]))


def _direct_in_dtype(query, key, value, matmul_dtype):
    """The direct formula; logits in float32 as in `Tiles.logits`."""
    f32 = lambda x: ops.cast(x, "float32")  # noqa: E731
    weights = ops.softmax(ops.matmul(f32(query), ops.transpose(f32(key), (0, 2, 1))), axis=-1)
    return f32(ops.matmul(ops.cast(weights, matmul_dtype), ops.cast(value, matmul_dtype)))


def _static(dim):
    return dim if isinstance(dim, int) else None


def _static_product(dims):
    dims = [_static(d) for d in dims]
    return None if any(d is None for d in dims) else math.prod(dims)
