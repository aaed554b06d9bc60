"""Eq. (11) tile by tile, forward and backward, exactly and in memory linear in the pixels.

The queries are processed in chunks and, inside a chunk, the keys in blocks with an "online"
softmax, so only a chunk x block tile or two are alive at a time. Each block's keys are
softmaxed together with a carry key whose logit is the running log-sum-exp of the blocks before
(`Tiles`): the softmax's last column then weighs the output so far against this block, and the
new log-sum-exp is the carry logit minus that weight's log. Per tile that is one logits
product, one fused softmax and one product with the values: a CPU spends about as long on
passes over the tile as on the products, so each pass saved counts.

The backward pass is a custom gradient that recomputes the tiles from the saved log-sum-exp
instead of storing them (the FlashAttention recipe), in one pass over the tiles, so training
memory is linear too. Loop steps wait for the previous one (the forward pass's through the
running log-sum-exp, the backward pass's through `wait_for`), so that a tile or two are alive at
a time, under TensorFlow's parallel loop iterations too. Key and value blocks are sliced, not
gathered: a slice along the leading axis is a view under TensorFlow, a gather a copy.
"""

from keras import ops

from pnen_tf.layers.attention.sequencing import sequential_map, wait_for
from pnen_tf.layers.attention.tiles import NEG_LARGE, Tiles, merge

# Below this a carry weight's log loses precision (float32 subnormals start at 1.2e-38).
_SMALLEST_CARRY_WEIGHT = 1e-30
# Keys whose largest logit starts a chunk's carry (`_forward`).
_CARRY_SAMPLE = 64


def _forward(tiles, sequential):
    """Online softmax over key blocks for every query chunk: output and log-sum-exp, stacked
    per chunk (`[num_chunks, B, query_chunk, n]` and `[..., 1]`).

    `sequential`: run the chunks strictly in turn (a tile or two alive; for training). Otherwise
    `ops.map`, which tf2onnx converts (it cannot convert a scan's TensorArray) and under which
    TensorFlow may run a few chunks at once, which is faster: the chunks fill each other's gaps
    between small operations (BENCHMARKS.md, section 2).
    """
    batch, chunk = ops.shape(tiles.query)[0], tiles.query_chunk
    width = ops.shape(tiles.values)[-1]

    def one_chunk(c):
        q = tiles.rows(tiles.query, c)

        def step(j, carry):
            running_lse, acc, pseudo_share = carry
            # Every tile-sized tensor of a step depends on the running log-sum-exp of the last
            # one, so steps need no `wait_for`: only the next blocks' slices (views, not
            # copies) run ahead, and the next logits product may start while this step's
            # product with the values finishes.
            # The carry key's logit is the running log-sum-exp of the blocks so far, so one
            # softmax over the tile weighs this block's keys against everything before it: its
            # last column is the weight of the output so far, exp(running - new log-sum-exp).
            rows, block_t = tiles.query_rows(q, running_lse), tiles.block_t(j)
            logits = tiles.logits(rows, block_t)
            p = ops.softmax(logits, axis=-1)
            carry_weight = p[..., -1:]
            acc = acc * carry_weight + tiles.matmul(p, tiles.values[j])
            # Where a carry weight is too small for its log (a block outweighing everything
            # before it by e^69), the tile's log-sum-exp is taken directly, from its logits made
            # again: a conditional handed the tile's logits and probabilities slows every step
            # under TensorFlow, whether or not that branch runs (BENCHMARKS.md, section 2); a key
            # block taken inside the branch kept tf2onnx from inferring the loop's shapes.
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
        return sequential_map(one_chunk, chunks, like)
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
        key, block_t = tiles.keys[j], tiles.block_t(j)
        value_t = values_t[j]

        def chunk_step(c, carry):
            d_q, d_k, d_v = carry
            c = wait_for(c, carry)
            c_q, c_do = tiles.rows(tiles.query, c), tiles.rows(d_out, c) * tiles.row_mask(c)
            # A carry logit of -1e30: the carry key gets probability 0 and no gradient.
            c_q_rows = tiles.query_rows(c_q, ops.full_like(c_q[..., :1], NEG_LARGE))
            c_delta = ops.sum(c_do * tiles.rows(out, c), axis=-1, keepdims=True)
            p = ops.exp(tiles.logits(c_q_rows, block_t) - lse[c])
            d_s = p * (tiles.matmul(c_do, value_t) - c_delta)
            d_k = d_k + tiles.matmul(ops.transpose(d_s, (0, 2, 1)), c_q)
            d_v = d_v + tiles.matmul(ops.transpose(p, (0, 2, 1)), c_do)
            d_q_chunk = d_q[c] + tiles.matmul(d_s, key)
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
        merge(d_q, tiles.num_queries),
        merge(d_k[:, :, :-1], tiles.num_keys),  # without the carry keys' rows
        merge(d_v[:, :, :-1], tiles.num_keys),
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

    Example: nine queries in chunks of 4 against seven keys in blocks of 3, and eq. (11)'s
    direct formula.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> q, k, v = (rng.normal(size=(1, n, 4)).astype("float32") for n in (9, 7, 7))
    >>> weights = np.exp(q @ k.transpose(0, 2, 1))
    >>> direct = weights / weights.sum(axis=-1, keepdims=True) @ v
    >>> bool(np.allclose(tiled_attention(q, k, v, query_chunk=4, key_block=3), direct, atol=1e-5))
    True
    """

    @ops.custom_gradient
    def attend(q, k, v):
        tiles = Tiles(q, k, v, query_chunk, key_block, matmul_dtype)
        out, lse = _forward(tiles, sequential)
        out = merge(out, tiles.num_queries)

        def grad(*args, upstream=None):
            d_out = upstream if upstream is not None else args[0]
            return _backward(tiles, ops.cast(d_out, "float32"), out, lse)

        return out, grad

    return attend(ops.cast(query, "float32"), ops.cast(key, "float32"), ops.cast(value, "float32"))
