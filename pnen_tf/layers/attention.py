"""Exact softmax attention whose memory grows linearly with the number of pixels.

Both non-local blocks compute, for every query pixel i, eq. (11) of the paper

    E_hat[i] = sum_j softmax_j(q_i . k_j) v_j          (no 1/sqrt(d) scaling, as the authors' code)

A direct implementation holds the whole query x key matrix: 40 GB at 500x400 for the PNB's
scale-2 branch. Here the queries are processed in chunks and, inside a chunk, the keys in blocks
with an "online" softmax, so only a chunk x block tile or two are alive at a time. Each block's keys
are softmaxed together with a carry key whose logit is the running log-sum-exp of the blocks
before (`_Tiles`): the softmax's last column then weighs the output so far against this block,
and the new log-sum-exp is the carry logit minus that weight's log. Per tile that is one logits
product, one fused softmax and one product with the values: a CPU spends about as long on
passes over the tile as on the products, so each pass saved counts.

The backward pass is a custom gradient that recomputes the tiles from the saved log-sum-exp
instead of storing them (the FlashAttention recipe), in one pass over the tiles, so training
memory is linear too. Loop steps wait for the previous one (`wait_for`), so that a tile or two
are alive at a time, under TensorFlow's parallel loop iterations too.

Written with `keras.ops` only: the same code runs under TensorFlow (also inside `tf.function`,
XLA, SavedModel and tf2onnx) and JAX.
"""

import math
import warnings

import keras
from keras import ops

# Bytes per element of one live tile, as measured in a training step (TensorFlow's allocator
# statistics): the probabilities and dP/dS tiles of the backward pass, the transposed copies its
# products read, all float32, and the allocator's rounding.
_TILE_BYTES_PER_ELEMENT = 32
_NEG_LARGE = -1e30
# Below this a carry weight's log loses precision (float32 subnormals start at 1.2e-38).
_SMALLEST_CARRY_WEIGHT = 1e-30
# Keys whose largest logit starts a chunk's carry (`_forward`).
_CARRY_SAMPLE = 64
# Keys per block: with its carry key a tile has a multiple of 16 columns, at most 2,048 (a
# logits product with 2,001 columns ran 11% slower than with 2,000 or 2,016 here).
_MAX_KEY_BLOCK = 2047
_COLUMN_ALIGNMENT = 16
_MIN_QUERY_CHUNK = 16
# The dtypes fused attention kernels take.
_FLASH_DTYPES = ("bfloat16", "float16")


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
        key_block = _MAX_KEY_BLOCK if num_keys is None else _balanced(num_keys, _MAX_KEY_BLOCK)
        key_block = -(-(key_block + 1) // _COLUMN_ALIGNMENT) * _COLUMN_ALIGNMENT - 1
    if query_chunk is None:
        query_chunk = max(_MIN_QUERY_CHUNK, int(budget // (batch * key_block)))
        if num_queries is not None:
            query_chunk = _balanced(num_queries, query_chunk)
    return False, int(query_chunk), int(key_block)


def _balanced(length, limit):
    """The smallest tile size that covers `length` in as few tiles of at most `limit` as
    possible: 9,216 rows with a limit of 3,640 give three tiles of 3,072, not 3,640 with the
    last one half padding (wasted work, and a copy to drop the padded rows)."""
    count = -(-length // limit)
    return -(-length // count)


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
    """Query chunks (gathered one at a time) and key/value blocks, each with a carry key.

    Keys and queries are extended so that the logits product does the masking and merging
    work that would otherwise be passes over the tile:
    - a bias row under the keys, 0 for real keys and -1e30 for padding, meets a column of ones
      in the query rows: padded keys get a logit of -1e30;
    - every block gets one more key, the carry key (zero key and value, a 1 in a last row),
      which meets the last entry of the query rows: its logit is whatever the query rows carry
      there, exactly (the running log-sum-exp in the forward pass, -1e30 in the backward).
    """

    def __init__(self, query, key, value, query_chunk, key_block, matmul_dtype):
        self.query = query
        self.num_queries = ops.shape(query)[1]
        self.num_keys = ops.shape(key)[1]
        # A chunk planned for sizes unknown until now (a dynamic-size graph) may exceed the
        # queries: it would only add repeated rows, 26 GB of them for a large memory budget.
        self.query_chunk = (min(query_chunk, self.num_queries) if isinstance(self.num_queries, int)
                            else ops.minimum(query_chunk, self.num_queries))
        self.key_block = key_block
        self.matmul_dtype = matmul_dtype
        self.num_chunks = (self.num_queries + self.query_chunk - 1) // self.query_chunk
        self.keys = _with_zero_row(_split(_pad_to_multiple(key, key_block), key_block))
        self.values = _with_zero_row(_split(_pad_to_multiple(value, key_block), key_block))
        # Per key of a block (the carry key last): its bias and its carry-logit coefficient.
        num_blocks, batch = ops.shape(self.keys)[0], ops.shape(self.keys)[1]
        index = ops.reshape(ops.arange(key_block + 1), (1, 1, -1, 1))
        block_start = ops.reshape(ops.arange(num_blocks) * key_block, (-1, 1, 1, 1))
        padded = (index < key_block) & (block_start + index >= self.num_keys)
        column = (num_blocks, batch, key_block + 1, 1)
        bias = ops.broadcast_to(ops.where(padded, _NEG_LARGE, 0.0), column)
        is_carry = ops.broadcast_to(ops.cast(index == key_block, "float32"), column)
        # Transposed once here (keys are the small, strided side) rather than per tile.
        self.keys_t = ops.transpose(ops.concatenate([self.keys, bias, is_carry], axis=3), (0, 1, 3, 2))

    @property
    def num_blocks(self):
        return ops.shape(self.keys)[0]

    def rows(self, x, c):
        """Rows of query chunk `c` of `x` (`[B, num_queries, ...]`), the last row repeated past
        the end. Gathered per chunk, so no padded or transposed copy of a whole map is made."""
        position = c * self.query_chunk + ops.arange(self.query_chunk)
        return ops.take(x, ops.minimum(position, self.num_queries - 1), axis=1)

    def query_rows(self, q, carry_logit):
        """Rows `q` of a chunk extended for `logits`: a column of ones and `carry_logit`."""
        return ops.concatenate([q, ops.ones_like(q[..., :1]), carry_logit], axis=-1)

    def row_mask(self, c):
        """`[1, query_chunk, 1]`: 1 for rows of chunk `c` inside the map, 0 for repeated ones."""
        position = c * self.query_chunk + ops.arange(self.query_chunk)
        return ops.reshape(ops.cast(position < self.num_queries, "float32"), (1, -1, 1))

    def matmul(self, a, b, dtype=None):
        """a @ b in `dtype` (default the matmul dtype), result in float32."""
        dtype = dtype or self.matmul_dtype
        return ops.cast(ops.matmul(ops.cast(a, dtype), ops.cast(b, dtype)), "float32")

    def block_t(self, j):
        """Key block `j` with its bias row, carry key and carry indicator, transposed."""
        return ops.take(self.keys_t, j, axis=0)

    def logits(self, q_rows, block_t):
        """Logits of `query_rows` against a key block (`block_t`) and its carry key (the last
        column).

        Always float32: an error e in a logit is a relative error e in its weight, and a bf16
        product keeps 8 significant bits (a logit of 30 is off by up to 0.0625). The other
        products see probabilities and gradients, whose rounding errors average out over keys.
        """
        return self.matmul(q_rows, block_t, "float32")


def _with_zero_row(blocks):
    """`[nb, B, block, c]` -> `[nb, B, block + 1, c]`: the carry key's row, zero."""
    shape = ops.shape(blocks)
    return ops.concatenate([blocks, ops.zeros((shape[0], shape[1], 1, shape[3]), blocks.dtype)], axis=2)


def wait_for(x, carry):
    """`x`, made to wait for `carry` (a tensor or a tuple of them): adds 0 * an element of each,
    exactly zero (`x` may be an index). One element suffices (an operation hands over its whole
    output at once) and costs no pass over a carry as large as a tile (the backward pass
    carries all of dQ).

    TensorFlow runs independent operations side by side, and up to ten iterations of a while
    loop at once when their inputs are ready: where a step's tiles depend only on its loop
    index (the backward pass), ten tiles (and ten gathered key blocks) would be alive together.
    Deriving each step's index from every output of the previous step keeps one alive (JAX runs
    loops in turn anyway). The forward pass's tiles depend on the running log-sum-exp already;
    its index waits for that alone.
    """
    x = ops.convert_to_tensor(x)
    carries = carry if isinstance(carry, (tuple, list)) else (carry,)
    firsts = [ops.reshape(c, (-1,))[0] for c in carries]
    # Non-finite elements (NaN inputs) are replaced, or 0 * NaN would make a garbage index.
    zero = 0.0 * sum(ops.where(ops.isfinite(f), f, 0.0) for f in firsts)
    return x + ops.cast(zero, x.dtype)


def _sequential_map(fn, xs, like):
    """`fn` over the leading axis of `xs`, strictly in turn; `like`: zeros shaped as one output.

    `ops.scan` with unroll=1 (under TensorFlow a while loop with parallel_iterations=1), unlike
    `ops.map`, which lets TensorFlow run ten elements at once.
    """
    return ops.scan(lambda previous, x: (fn(x),) * 2, like, xs)[1]


def _forward(tiles, sequential):
    """Online softmax over key blocks for every query chunk: output and log-sum-exp, stacked
    per chunk (`[num_chunks, B, query_chunk, n]` and `[..., 1]`).

    `sequential`: run the chunks strictly in turn (a tile or two alive; for training). Otherwise
    `ops.map`, which tf2onnx converts (it cannot convert a scan's TensorArray) and under which
    TensorFlow may run a few chunks at once (1.17x faster than in turn, measured here: the
    chunks fill each other's gaps between small operations).
    """
    batch, chunk = ops.shape(tiles.query)[0], tiles.query_chunk
    width = ops.shape(tiles.values)[-1]

    def one_chunk(c):
        q = tiles.rows(tiles.query, c)

        def step(j, carry):
            running_lse, acc, pseudo_share = carry
            # Every tile-sized tensor of a step depends on the running log-sum-exp of the last
            # one: tied to it alone, only the next block's gathers run ahead, and the next
            # logits product may start while this step's product with the values finishes.
            # (Tied to every carry, the steps ran 5-10% slower here.)
            j = wait_for(j, running_lse)
            # The carry key's logit is the running log-sum-exp of the blocks so far, so one
            # softmax over the tile weighs this block's keys against everything before it: its
            # last column is the weight of the output so far, exp(running - new log-sum-exp).
            rows, block_t = tiles.query_rows(q, running_lse), tiles.block_t(j)
            logits = tiles.logits(rows, block_t)
            p = ops.softmax(logits, axis=-1)
            carry_weight = p[..., -1:]
            acc = acc * carry_weight + tiles.matmul(p, ops.take(tiles.values, j, axis=0))
            # Where a carry weight is too small for its log (a block outweighing everything
            # before it by e^69), the tile's log-sum-exp is taken directly, from its logits made
            # again: handing the conditional the tile's logits and probabilities made every
            # step 18% slower here (TensorFlow), whether or not that branch ran; its gathered
            # key block, inside the branch, kept tf2onnx from inferring the loop's shapes.
            new_lse = ops.cond(
                ops.min(carry_weight) >= _SMALLEST_CARRY_WEIGHT,
                lambda: running_lse - ops.log(carry_weight),
                lambda: ops.logsumexp(tiles.logits(rows, block_t), axis=-1, keepdims=True),
            )
            return new_lse, acc, pseudo_share * carry_weight

        # The carry starts as the mass of one pseudo-key whose logit z is a real logit of this
        # query (the largest over a few keys), and whose value is zero: then its share of the
        # final mass is at most 1/2, so removing it below is well-conditioned, and the first
        # block's carry weight is rarely too small for its log. The share is carried as the
        # product of the carry weights: exp(z - lse) would put lse's rounding, ulp(|lse|) / 2,
        # into every output of a row with a dominant key (and make 1 - share 0 at |z| >= 2^24).
        sample = tiles.block_t(0)[..., : min(tiles.key_block, _CARRY_SAMPLE)]
        z = ops.max(tiles.matmul(tiles.query_rows(q, ops.zeros_like(q[..., :1])), sample, "float32"),
                    axis=-1, keepdims=True)
        init = (z, ops.zeros((batch, chunk, width), "float32"), ops.ones_like(z))
        running_lse, acc, pseudo_share = ops.fori_loop(0, tiles.num_blocks, step, init)
        rest = 1.0 - pseudo_share
        return acc / rest, running_lse + ops.log(rest)

    chunks = ops.arange(tiles.num_chunks)
    if sequential:
        like = (ops.zeros((batch, chunk, width), "float32"), ops.zeros((batch, chunk, 1), "float32"))
        return _sequential_map(one_chunk, chunks, like)
    return ops.map(one_chunk, chunks)


def _backward(tiles, d_out, out, lse):
    """Gradients of the tiled attention, recomputing each probability tile from `lse`.

    With P = exp(S - lse), dS = P * (dO V^T - rowsum(dO * O)): dQ = dS K, dK = dS^T Q, dV = P^T dO.
    One pass over the tiles, key blocks outside and query chunks inside, each step waiting for
    the previous one (one tile alive, five tile products): a block's dK and dV are carried over
    the chunks, and each chunk's share of dQ is added into its slot of the carried dQ.
    """
    values_t = ops.transpose(tiles.values, (0, 1, 3, 2))

    def block_step(j, carry):
        d_q, d_keys, d_values = carry
        j = wait_for(j, carry)
        key, block_t = ops.take(tiles.keys, j, axis=0), tiles.block_t(j)
        value_t = ops.take(values_t, j, axis=0)

        def chunk_step(c, carry):
            d_q, d_k, d_v = carry
            c = wait_for(c, carry)
            c_q, c_do = tiles.rows(tiles.query, c), tiles.rows(d_out, c) * tiles.row_mask(c)
            # A carry logit of -1e30: the carry key gets probability 0 and no gradient.
            c_q_rows = tiles.query_rows(c_q, ops.full_like(c_q[..., :1], _NEG_LARGE))
            c_delta = ops.sum(c_do * tiles.rows(out, c), axis=-1, keepdims=True)
            p = ops.exp(tiles.logits(c_q_rows, block_t) - ops.take(lse, c, axis=0))
            d_s = p * (tiles.matmul(c_do, value_t) - c_delta)
            d_k = d_k + tiles.matmul(ops.transpose(d_s, (0, 2, 1)), c_q)
            d_v = d_v + tiles.matmul(ops.transpose(p, (0, 2, 1)), c_do)
            d_q_chunk = ops.take(d_q, c, axis=0) + tiles.matmul(d_s, key)
            return ops.scatter_update(d_q, ops.reshape(c, (1, 1)), d_q_chunk[None]), d_k, d_v

        zeros = (ops.zeros_like(d_keys[0]), ops.zeros_like(d_values[0]))
        d_q, d_k, d_v = ops.fori_loop(0, tiles.num_chunks, chunk_step, (d_q,) + zeros)
        index = ops.reshape(j, (1, 1))
        return (d_q, ops.scatter_update(d_keys, index, d_k[None]),
                ops.scatter_update(d_values, index, d_v[None]))

    batch, depth = ops.shape(tiles.query)[0], ops.shape(tiles.query)[2]
    init = (ops.zeros((tiles.num_chunks, batch, tiles.query_chunk, depth), "float32"),
            ops.zeros_like(tiles.keys, "float32"), ops.zeros_like(tiles.values, "float32"))
    d_q, d_k, d_v = ops.fori_loop(0, tiles.num_blocks, block_step, init)
    return (
        _merge(d_q, tiles.num_queries),
        _merge(d_k[:, :, :-1], tiles.num_keys),  # without the carry keys' rows
        _merge(d_v[:, :, :-1], tiles.num_keys),
    )


def tiled_attention(query, key, value, query_chunk, key_block, matmul_dtype="float32",
                    sequential=False):
    """softmax(q k^T) v, exactly, holding one `query_chunk x key_block` tile at a time.

    Args:
        query: `[batch, num_queries, d]`; key: `[batch, num_keys, d]`;
            value: `[batch, num_keys, n]`. Sizes may be dynamic.
        query_chunk, key_block: tile sizes (Python ints).
        matmul_dtype: dtype of the products with probabilities and gradients ("bfloat16"
            trades accuracy for speed on AMX/tensor cores); the logits and the softmax
            statistics are always float32.
        sequential: forward query chunks strictly in turn, a tile or two alive (use it when
            training). The default lets TensorFlow overlap a few chunks and exports to ONNX.

    Returns:
        `[batch, num_queries, n]` float32.
    """

    @ops.custom_gradient
    def attend(q, k, v):
        tiles = _Tiles(q, k, v, query_chunk, key_block, matmul_dtype)
        out, lse = _forward(tiles, sequential)
        out = _merge(out, tiles.num_queries)

        def grad(*args, upstream=None):
            d_out = upstream if upstream is not None else args[0]
            return _backward(tiles, ops.cast(d_out, "float32"), out, lse)

        return out, grad

    return attend(ops.cast(query, "float32"), ops.cast(key, "float32"), ops.cast(value, "float32"))


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


def _flash_or_none(query, key, value, matmul_dtype):
    """`fused_attention` with the fused kernel, or None (with a warning) where it cannot run."""
    if matmul_dtype not in _FLASH_DTYPES:
        warnings.warn(f"flash_attention needs 16-bit products (attention_dtype='bfloat16' or a "
                      f"mixed precision policy), not {matmul_dtype}: using the tiled/direct "
                      f"attention", stacklevel=3)
        return None
    cast = lambda x: ops.cast(x, matmul_dtype)  # noqa: E731
    try:
        return fused_attention(cast(query), cast(key), cast(value))
    except (ImportError, NotImplementedError, RuntimeError, ValueError) as error:
        # Keras' own availability check: no cuDNN, an older GPU, TensorFlow, too wide a head.
        warnings.warn(f"flash_attention is not available here ({error}): using the tiled/direct "
                      f"attention", stacklevel=3)
        return None


def nonlocal_attention(
    query_map, key_map, value_map, memory_budget_mb=64, query_chunk=None, key_block=None,
    attention_dtype=None, sequential=False, flash_attention=False,
):
    """Eq. (11) on NHWC feature maps: every query pixel attends to every key pixel.

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
    out = _flash_or_none(query, key, value, matmul_dtype) if flash_attention else None
    if out is None:
        out = (_direct_in_dtype(query, key, value, matmul_dtype) if direct
               else tiled_attention(query, key, value, chunk, block, matmul_dtype, sequential))
    out = ops.cast(out, dtype)
    return ops.reshape(out, (q_shape[0], q_shape[1], q_shape[2], ops.shape(value)[2]))


def _direct_in_dtype(query, key, value, matmul_dtype):
    """The direct formula; logits in float32 as in `_Tiles.logits`."""
    f32 = lambda x: ops.cast(x, "float32")  # noqa: E731
    weights = ops.softmax(ops.matmul(f32(query), ops.transpose(f32(key), (0, 2, 1))), axis=-1)
    return f32(ops.matmul(ops.cast(weights, matmul_dtype), ops.cast(value, matmul_dtype)))


def _static(dim):
    return dim if isinstance(dim, int) else None


def _static_product(dims):
    dims = [_static(d) for d in dims]
    return None if any(d is None for d in dims) else math.prod(dims)
