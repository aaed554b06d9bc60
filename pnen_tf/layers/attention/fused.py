"""Eq. (11) by the backend's fused attention kernel (`keras.ops.dot_product_attention`)."""

import warnings

from keras import ops

# The dtypes fused attention kernels take.
_FLASH_DTYPES = ("bfloat16", "float16")


def fused_attention(query, key, value, flash_attention=True):
    """softmax(q k^T) v by `keras.ops.dot_product_attention`, as one attention head with scale 1
    (no 1/sqrt(d), as in `tiled_attention`).

    With `flash_attention=True` this is the backend's fused kernel, which holds no query x key
    matrix (under JAX: cuDNN's flash attention on NVIDIA GPUs from Ampere on, bf16/fp16 inputs;
    Splash attention on TPUs); where Keras' check finds none it raises while tracing. Caveat:
    if the check passes and the cuDNN call itself then fails, Keras only logs it and runs the
    plain formula, whole matrix included; a failure while XLA compiles comes after tracing.
    Queries, keys and values are zero-padded to one width, a multiple of 8: the kernel
    wants a single head width (the official PNB has 32-wide keys and 64-wide values), and zero
    columns change no logit and add only output columns, dropped here.

    Args:
        query: `[batch, num_queries, d]`; key: `[batch, num_keys, d]`;
            value: `[batch, num_keys, n]` (static d and n).
        flash_attention: passed to `keras.ops.dot_product_attention`; False is the plain
            formula, which does hold the whole matrix.

    Returns:
        `[batch, num_queries, n]` in the inputs' dtype.
    """
    width = value.shape[-1]
    common = -(-max(query.shape[-1], width) // 8) * 8

    def one_head(x):
        return ops.pad(x, [[0, 0], [0, 0], [0, common - x.shape[-1]]])[:, :, None, :]

    out = ops.dot_product_attention(one_head(query), one_head(key), one_head(value), scale=1.0,
                                    flash_attention=flash_attention)
    return out[:, :, 0, :width]


def flash_or_none(query, key, value, matmul_dtype):
    """`fused_attention` with the fused kernel, or None (with a warning, which names the caller
    of `nonlocal_attention`) where it cannot run."""
    if matmul_dtype not in _FLASH_DTYPES:
        warnings.warn(f"flash_attention needs 16-bit products (attention_dtype='bfloat16' or a "
                      f"mixed precision policy), not {matmul_dtype}: using the tiled/direct "
                      f"attention", stacklevel=4)
        return None
    cast = lambda x: ops.cast(x, matmul_dtype)  # noqa: E731
    try:
        return fused_attention(cast(query), cast(key), cast(value))
    except (ImportError, NotImplementedError, RuntimeError, ValueError) as error:
        # Keras' own availability check: no cuDNN, an older GPU, TensorFlow, too wide a head.
        warnings.warn(f"flash_attention is not available here ({error}): using the tiled/direct "
                      f"attention", stacklevel=4)
        return None
