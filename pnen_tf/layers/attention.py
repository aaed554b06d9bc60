"""Exact softmax attention whose memory grows linearly with the number of pixels.

Both non-local blocks compute, for every query pixel i, eq. (11) of the paper

    E_hat[i] = sum_j softmax_j(q_i . k_j) v_j          (no 1/sqrt(d) scaling, as the authors' code)

A direct implementation holds the whole query x key matrix: 40 GB at 500x400 for the PNB's
scale-2 branch. Here the queries are processed in chunks and, inside a chunk, the keys in blocks
with a running maximum / running sum ("online") softmax, so only one chunk x block tile is alive
at a time. The backward pass is a custom gradient that recomputes those tiles from the saved
log-sum-exp instead of storing them (the FlashAttention recipe), so training memory is linear too.

Written with `keras.ops` only: the same code runs under TensorFlow (also inside `tf.function`,
XLA, SavedModel and tf2onnx) and JAX.
"""

import math

import keras
from keras import ops

# Bytes per element of one live tile: the logits, their exponentials and the products that the
# backward pass keeps side by side, all float32.
_TILE_BYTES_PER_ELEMENT = 16
_NEG_LARGE = -1e30
_MAX_KEY_BLOCK = 4096
_MIN_QUERY_CHUNK = 16


def plan_tiles(batch, num_queries, num_keys, memory_budget_mb, query_chunk=None, key_block=None):
    """Choose `(direct, query_chunk, key_block)` for one attention call.

    Static sizes may be `None` (unknown until run time, e.g. a SavedModel with dynamic height
    and width): then the tiled path is taken, which is exact for every size. The direct path
    is kept for small static problems where one matrix fits the budget, because it is faster.
    """
    budget = memory_budget_mb * 2**20 / _TILE_BYTES_PER_ELEMENT
    batch = batch or 1
    sizes_known = num_queries is not None and num_keys is not None
    forced = query_chunk is not None or key_block is not None
    if sizes_known and not forced and batch * num_queries * num_keys <= budget:
        return True, None, None
    if key_block is None:
        key_block = _MAX_KEY_BLOCK if num_keys is None else min(num_keys, _MAX_KEY_BLOCK)
    if query_chunk is None:
        query_chunk = max(_MIN_QUERY_CHUNK, int(budget // (batch * key_block)))
        if num_queries is not None:
            query_chunk = min(query_chunk, num_queries)
    return False, int(query_chunk), int(key_block)


def _pad_to_multiple(x, size):
    length = ops.shape(x)[1]
    # Written as (size - n % size) % size, not (-n) % size: tf2onnx mis-converts the modulo of a
    # negative integer and the exported model would silently read the wrong rows.
    pad = (size - length % size) % size
    return ops.pad(x, [[0, 0], [0, pad], [0, 0]])


def _split(x, size):
    """[B, N, C] -> [N / size, B, size, C] (N already a multiple of `size`)."""
    shape = ops.shape(x)
    x = ops.reshape(x, (shape[0], shape[1] // size, size, shape[2]))
    return ops.transpose(x, (1, 0, 2, 3))


def _merge(x, length):
    """Inverse of `_split`, dropping the padded rows beyond `length`."""
    shape = ops.shape(x)
    x = ops.transpose(x, (1, 0, 2, 3))
    x = ops.reshape(x, (shape[1], shape[0] * shape[2], shape[3]))
    return x[:, :length]


class _Tiles:
    """Queries, keys and values cut into tiles, with a bias that masks the padded keys."""

    def __init__(self, query, key, value, query_chunk, key_block, matmul_dtype):
        self.num_queries = ops.shape(query)[1]
        self.num_keys = ops.shape(key)[1]
        self.query_chunk = query_chunk
        self.key_block = key_block
        self.matmul_dtype = matmul_dtype
        self.queries = _split(_pad_to_multiple(query, query_chunk), query_chunk)
        self.keys = _split(_pad_to_multiple(key, key_block), key_block)
        self.values = _split(_pad_to_multiple(value, key_block), key_block)
        num_padded_keys = ops.shape(self.keys)[0] * key_block
        position = ops.reshape(ops.arange(num_padded_keys), (-1, 1, key_block))
        self.key_bias = ops.where(position < self.num_keys, 0.0, _NEG_LARGE)

    @property
    def num_blocks(self):
        return ops.shape(self.keys)[0]

    def matmul(self, a, b):
        """a @ b in the matmul dtype, result in float32 (softmax statistics stay float32)."""
        product = ops.matmul(ops.cast(a, self.matmul_dtype), ops.cast(b, self.matmul_dtype))
        return ops.cast(product, "float32")

    def logits(self, q, j):
        """Logits of query chunk `q` against key block `j`, padded keys pushed to -inf."""
        k = ops.take(self.keys, j, axis=0)
        return self.matmul(q, ops.transpose(k, (0, 2, 1))) + ops.take(self.key_bias, j, axis=0)


def _after(x, carry):
    """`x`, made to wait for `carry`, exactly (adds 0 * a finite value of the carry).

    TensorFlow runs up to ten iterations of a while loop at once when their inputs are ready;
    a tile depends only on the loop counter, so ten tiles would be alive together. Tying the
    tile's input to the previous iteration's result keeps one alive (JAX loops are sequential).
    """
    return x + 0.0 * ops.min(carry)


def _sequential_map(fn, xs, like):
    """`fn` over the leading axis of `xs`, one element at a time; `like`: zeros shaped as an output.

    `ops.scan` with unroll=1 runs its iterations strictly in turn on every backend (`ops.map`
    lets TensorFlow run ten at once, with ten tiles in memory).
    """

    def step(previous, x):
        y = fn(x, previous)
        return y, y

    return ops.scan(step, like, xs)[1]


def _forward(tiles):
    """Online softmax over key blocks for every query chunk: output and log-sum-exp."""
    batch, chunk = ops.shape(tiles.queries)[1:3]

    def one_chunk(q):
        def step(j, carry):
            running_max, running_sum, acc = carry
            logits = tiles.logits(_after(q, running_max), j)
            new_max = ops.maximum(running_max, ops.max(logits, axis=-1, keepdims=True))
            p = ops.exp(logits - new_max)
            rescale = ops.exp(running_max - new_max)
            running_sum = running_sum * rescale + ops.sum(p, axis=-1, keepdims=True)
            acc = acc * rescale + tiles.matmul(p, ops.take(tiles.values, j, axis=0))
            return new_max, running_sum, acc

        init = (
            ops.full((batch, chunk, 1), _NEG_LARGE, "float32"),
            ops.zeros((batch, chunk, 1), "float32"),
            ops.zeros((batch, chunk, ops.shape(tiles.values)[-1]), "float32"),
        )
        running_max, running_sum, acc = ops.fori_loop(0, tiles.num_blocks, step, init)
        return acc / running_sum, running_max + ops.log(running_sum)

    # `ops.map`, not `_sequential_map`: tf2onnx converts a map but not a scan's carried
    # TensorArray, and only the forward pass is exported. Under TensorFlow a few chunks may then
    # run at once (the key blocks inside a chunk stay in turn); the backward pass is sequential.
    return ops.map(one_chunk, tiles.queries)


def _backward(tiles, d_out, out, lse):
    """Gradients of the tiled attention, recomputing each probability tile from `lse`.

    With P = exp(S - lse), dS = P * (dO V^T - rowsum(dO * O)): dQ = dS K, dK = dS^T Q, dV = P^T dO.
    dQ is accumulated per query chunk over key blocks, dK/dV per key block over query chunks, so
    no accumulator ever spans the whole matrix.
    """
    d_out = _split(_pad_to_multiple(d_out, tiles.query_chunk), tiles.query_chunk)
    delta = ops.sum(d_out * out, axis=-1, keepdims=True)
    num_chunks = ops.shape(tiles.queries)[0]

    def probabilities_and_dlogits(c_q, c_do, c_lse, c_delta, j):
        p = ops.exp(tiles.logits(c_q, j) - c_lse)
        d_p = tiles.matmul(c_do, ops.transpose(ops.take(tiles.values, j, axis=0), (0, 2, 1)))
        return p, p * (d_p - c_delta)

    def query_chunk_grad(chunk, previous):
        c_q, c_do, c_lse, c_delta = chunk
        c_q = _after(c_q, previous)

        def step(j, d_q):
            _, d_s = probabilities_and_dlogits(_after(c_q, d_q), c_do, c_lse, c_delta, j)
            return d_q + tiles.matmul(d_s, ops.take(tiles.keys, j, axis=0))

        return ops.fori_loop(0, tiles.num_blocks, step, ops.zeros_like(c_q, "float32"))

    def key_block_grad(j, previous):
        def step(c, carry):
            d_k, d_v = carry
            c_q = _after(ops.take(tiles.queries, c, axis=0), d_k)
            c_do = ops.take(d_out, c, axis=0)
            c_lse, c_delta = ops.take(lse, c, axis=0), ops.take(delta, c, axis=0)
            p, d_s = probabilities_and_dlogits(c_q, c_do, c_lse, c_delta, j)
            d_k = d_k + tiles.matmul(ops.transpose(d_s, (0, 2, 1)), c_q)
            d_v = d_v + tiles.matmul(ops.transpose(p, (0, 2, 1)), c_do)
            return d_k, d_v

        init = tuple(ops.zeros_like(p, "float32") + 0.0 * ops.min(p) for p in previous)
        return ops.fori_loop(0, num_chunks, step, init)

    d_q = _sequential_map(query_chunk_grad, (tiles.queries, d_out, lse, delta),
                          ops.zeros_like(tiles.queries[0], "float32"))
    block_like = (ops.zeros_like(tiles.keys[0], "float32"), ops.zeros_like(tiles.values[0], "float32"))
    d_k, d_v = _sequential_map(key_block_grad, ops.arange(tiles.num_blocks), block_like)
    return (
        _merge(d_q, tiles.num_queries),
        _merge(d_k, tiles.num_keys),
        _merge(d_v, tiles.num_keys),
    )


def tiled_attention(query, key, value, query_chunk, key_block, matmul_dtype="float32"):
    """softmax(q k^T) v, exactly, holding one `query_chunk x key_block` tile at a time.

    Args:
        query: `[batch, num_queries, d]`; key: `[batch, num_keys, d]`;
            value: `[batch, num_keys, n]`. Sizes may be dynamic.
        query_chunk, key_block: tile sizes (Python ints).
        matmul_dtype: dtype of the matrix products ("bfloat16" trades accuracy for speed on
            AMX/tensor cores); softmax statistics are always float32.

    Returns:
        `[batch, num_queries, n]` float32.
    """

    @ops.custom_gradient
    def attend(q, k, v):
        tiles = _Tiles(q, k, v, query_chunk, key_block, matmul_dtype)
        out, lse = _forward(tiles)

        def grad(*args, upstream=None):
            d_out = upstream if upstream is not None else args[0]
            return _backward(tiles, ops.cast(d_out, "float32"), out, lse)

        return _merge(out, tiles.num_queries), grad

    return attend(ops.cast(query, "float32"), ops.cast(key, "float32"), ops.cast(value, "float32"))


def nonlocal_attention(
    query_map, key_map, value_map, memory_budget_mb=64, query_chunk=None, key_block=None,
    attention_dtype=None,
):
    """Eq. (11) on NHWC feature maps: every query pixel attends to every key pixel.

    Args:
        query_map: `[B, H, W, d]`; key_map: `[B, h, w, d]`; value_map: `[B, h, w, n]`
            (h, w may be smaller than H, W: the pyramid's strided keys).
        memory_budget_mb: size of the largest attention tile; picks direct vs tiled path and
            the tile sizes (see `plan_tiles`).
        query_chunk, key_block: force the tiled path with these tile sizes.
        attention_dtype: None (matmuls in the input's dtype) or "bfloat16".

    Returns:
        `[B, H, W, n]` in the dtype of `query_map`.
    """
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
    if direct:
        out = _direct_in_dtype(query, key, value, matmul_dtype)
    else:
        out = tiled_attention(query, key, value, chunk, block, matmul_dtype)
    out = ops.cast(out, dtype)
    return ops.reshape(out, (q_shape[0], q_shape[1], q_shape[2], ops.shape(value)[2]))


def _direct_in_dtype(query, key, value, matmul_dtype):
    cast = lambda x: ops.cast(x, matmul_dtype)  # noqa: E731
    logits = ops.cast(ops.matmul(cast(query), ops.transpose(cast(key), (0, 2, 1))), "float32")
    weights = ops.softmax(logits, axis=-1)
    return ops.cast(ops.matmul(cast(weights), cast(value)), "float32")


def _static(dim):
    return dim if isinstance(dim, int) else None


def _static_product(dims):
    dims = [_static(d) for d in dims]
    return None if any(d is None for d in dims) else math.prod(dims)
