"""The tiled (memory-linear) attention equals the direct formula, forward and backward."""

import keras
import numpy as np
import pytest
import reference
import tensorflow as tf

from pnen_tf.layers.attention import (fused_attention, intercept_attention, nonlocal_attention,
                                      plan_tiles, tiled_attention)

RNG = np.random.default_rng(3)


def _problem(batch=2, num_queries=37, num_keys=23, depth=5, width=7):
    return (RNG.normal(size=(batch, num_queries, depth)).astype("float32"),
            RNG.normal(size=(batch, num_keys, depth)).astype("float32"),
            RNG.normal(size=(batch, num_keys, width)).astype("float32"))


def _direct(q, k, v):
    return tf.nn.softmax(q @ tf.transpose(k, (0, 2, 1))) @ v


@pytest.mark.parametrize("chunk,block", [(8, 5), (37, 23), (1, 1), (64, 64)])
def test_forward_equals_the_direct_formula(chunk, block):
    q, k, v = _problem()
    out = np.asarray(tiled_attention(q, k, v, chunk, block))
    expected = reference.softmax_attention(*(a.astype(np.float64) for a in (q, k, v)))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def _gradients(fn, q, k, v, upstream):
    q, k, v = map(tf.constant, (q, k, v))
    with tf.GradientTape() as tape:
        tape.watch([q, k, v])
        loss = tf.reduce_sum(fn(q, k, v) * upstream)
    return tape.gradient(loss, [q, k, v])


def test_gradients_equal_the_direct_formula():
    q, k, v = _problem()
    upstream = RNG.normal(size=(2, 37, 7)).astype("float32")
    tiled = _gradients(lambda a, b, c: tiled_attention(a, b, c, 8, 5), q, k, v, upstream)
    direct = _gradients(_direct, q, k, v, upstream)
    for got, want in zip(tiled, direct):
        assert np.abs(got - want).max() <= 1e-4 * np.abs(want).max()


def test_inside_tf_function_with_dynamic_shapes_and_under_xla():
    q, k, v = _problem()
    spec = [tf.TensorSpec([None, None, 5])] * 2 + [tf.TensorSpec([None, None, 7])]
    expected = _direct(q, k, v).numpy()
    graph = tf.function(lambda a, b, c: tiled_attention(a, b, c, 8, 5), input_signature=spec)
    np.testing.assert_allclose(graph(q, k, v).numpy(), expected, rtol=1e-5, atol=1e-6)
    xla = tf.function(lambda a, b, c: tiled_attention(a, b, c, 8, 5), jit_compile=True)
    np.testing.assert_allclose(xla(q, k, v).numpy(), expected, rtol=1e-5, atol=1e-6)


def test_a_chunk_larger_than_the_queries_is_cut_to_them():
    """A dynamic-size graph plans its chunk without knowing the queries (a 200 GB budget gave
    3.2M rows for an 18,240-pixel image and allocated 26 GB): the chunk must shrink to the
    queries at run time. A billion-row chunk of 7-wide rows would need 28 GB per tile."""
    from pnen_tf.layers.attention.tiles import Tiles

    q, k, v = _problem()
    spec = [tf.TensorSpec([None, None, 5])] * 2 + [tf.TensorSpec([None, None, 7])]
    chunk = tf.function(lambda a, b, c: Tiles(a, b, c, 10**9, 5, "float32").query_chunk,
                        input_signature=spec)
    assert int(chunk(q, k, v)) == q.shape[1]
    graph = tf.function(lambda a, b, c: tiled_attention(a, b, c, 10**9, 5), input_signature=spec)
    np.testing.assert_allclose(graph(q, k, v).numpy(), _direct(q, k, v).numpy(), rtol=1e-5, atol=1e-6)


def test_bfloat16_matmuls_stay_close():
    q, k, v = _problem()
    out = np.asarray(tiled_attention(q * 0.3, k * 0.3, v, 8, 5, matmul_dtype="bfloat16"))
    expected = reference.softmax_attention(q * 0.3, k * 0.3, v)
    assert np.abs(out - expected).max() < 0.05


def test_tile_plan_keeps_small_problems_direct_and_bounds_large_ones():
    assert plan_tiles(1, 48 * 48, 24 * 24, memory_budget_mb=256)[0] is True
    # Batch 8 at 96x96 (the paper's training step) would hold 0.7 GB per scale-2 matrix: tiled.
    assert plan_tiles(8, 96 * 96, 48 * 48, memory_budget_mb=256)[0] is False
    direct, chunk, block = plan_tiles(1, 500 * 400, 250 * 200, memory_budget_mb=256)
    # 50,000 keys in 25 blocks of about 2,000 rather than 24 full blocks and one of 848; with
    # the carry key a tile has 2,016 columns, a multiple of 16.
    assert not direct and block == 2015
    assert chunk * block * 32 <= 256 * 2**20
    # Tiles are balanced: the padding of the last chunk is less than one row per chunk.
    num_chunks = -(-500 * 400 // chunk)
    assert 0 <= num_chunks * chunk - 500 * 400 < num_chunks
    # Unknown sizes (a SavedModel with dynamic height/width) take the exact tiled path.
    assert plan_tiles(None, None, None, memory_budget_mb=256)[0] is False


def test_nonlocal_attention_keeps_the_mixed_precision_dtype():
    q = keras.ops.cast(RNG.normal(size=(1, 3, 4, 2)), "bfloat16")
    v = keras.ops.cast(RNG.normal(size=(1, 2, 2, 6)), "bfloat16")
    out = nonlocal_attention(q, q[:, :2, :2], v, query_chunk=4, key_block=3)
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    assert tuple(out.shape) == (1, 3, 4, 6)


def test_a_nan_query_spoils_only_its_own_row():
    # The loops order their steps through the carried values; a NaN there must not turn into a
    # garbage tile index (an error, or other rows read from the wrong tiles).
    q, k, v = _problem()
    q[0, 3] = np.nan
    out = np.asarray(tiled_attention(q, k, v, 8, 5))
    expected = reference.softmax_attention(*(a.astype(np.float64) for a in (q, k, v)))
    assert np.isnan(out[0, 3]).all()
    mask = np.ones(out.shape[:2], bool)
    mask[0, 3] = False
    np.testing.assert_allclose(out[mask], expected[mask], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("sequential", [False, True])
def test_peaked_rows_equal_the_direct_formula(sequential):
    # Integer logits (exact in float32 in any summation order) laid out so that both ways of
    # taking a tile's log-sum-exp run: the first 64 keys of block 0 (the carry's starting
    # sample) sit ~120 below the block's other keys, and keys 150-155 outweigh blocks 0 and 1
    # together by ~e^120: carry weights that underflow float32 (below e^-104).
    rng = np.random.default_rng(7)
    q = rng.integers(-2, 3, size=(2, 37, 8)).astype("float32")
    k = rng.integers(-2, 3, size=(2, 230, 8)).astype("float32")
    q[..., 0] = 10
    k[:, :64, 0], k[:, 64:, 0], k[:, 150:156, 0] = -12, 0, 12
    v = rng.normal(size=(2, 230, 7)).astype("float32")
    upstream = rng.normal(size=(2, 37, 7)).astype("float32")
    fn = lambda a, b, c: tiled_attention(a, b, c, 8, 100, sequential=sequential)  # noqa: E731
    expected = reference.softmax_attention(*(a.astype(np.float64) for a in (q, k, v)))
    np.testing.assert_allclose(np.asarray(fn(q, k, v)), expected, rtol=1e-5, atol=1e-6)
    # The backward pass reads this forward's log-sum-exp. Near one-hot rows have near-zero dQ
    # and dK, whose rounding (dO V^T - rowsum(dO * O) cancels) is judged on dV's scale.
    got, want = _gradients(fn, q, k, v, upstream), _gradients(_direct, q, k, v, upstream)
    scale = np.abs(want[2]).max()
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("squared_norm", [3e2, 1e5, 2e7])
def test_self_attention_with_dominant_keys_is_exact_at_any_logit_size(squared_norm):
    # q = k without 1/sqrt(d) scaling: each query's own key dominates with a logit of
    # |q|^2. The result must not carry the rounding of a log-sum-exp of that size
    # (ulp(|lse|) / 2, 1e-5 already at 300), nor break where lse + log 2 rounds to lse (2^24).
    rng = np.random.default_rng(0)
    x = rng.normal(size=(1, 40, 4))
    x = (x * np.sqrt(squared_norm) / np.linalg.norm(x, axis=-1, keepdims=True)).astype("float32")
    v = rng.normal(size=(1, 40, 3)).astype("float32")
    expected = reference.softmax_attention(x.astype(np.float64), x.astype(np.float64), v)
    out = np.asarray(tiled_attention(x, x, v, 8, 16))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    upstream = rng.normal(size=(1, 40, 3)).astype("float32")
    gradients = _gradients(lambda a, b, c: tiled_attention(a, b, c, 8, 16), x, x, v, upstream)
    assert all(np.isfinite(g.numpy()).all() for g in gradients)


@pytest.mark.parametrize("depth,width", [(5, 12), (16, 8)])
def test_fused_attention_is_the_formula_whatever_the_head_widths(depth, width):
    # The plain formula of `ops.dot_product_attention` (flash_attention=False): checks the
    # single-head layout, the zero padding to one width (keys narrower or wider than values)
    # and the scale of 1 that the GPU's fused kernel is given.
    q, k, v = _problem(depth=depth, width=width)
    out = np.asarray(fused_attention(q, k, v, flash_attention=False))
    expected = reference.softmax_attention(*(a.astype(np.float64) for a in (q, k, v)))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_flash_attention_where_there_is_none_warns_and_stays_exact():
    q, k, v = (x[:, None] for x in _problem())  # [B, 1, N, C] maps
    exact = np.asarray(nonlocal_attention(q, k, v, query_chunk=8, key_block=5))
    with pytest.warns(UserWarning, match="needs 16-bit products"):
        out = nonlocal_attention(q, k, v, query_chunk=8, key_block=5, flash_attention=True)
    np.testing.assert_array_equal(np.asarray(out), exact)
    tiles = {"query_chunk": 8, "key_block": 5, "attention_dtype": "bfloat16"}
    bf16 = np.asarray(nonlocal_attention(q, k, v, **tiles))
    with pytest.warns(UserWarning, match="not available here"):  # TensorFlow has no fused kernel
        out = nonlocal_attention(q, k, v, flash_attention=True, **tiles)
    np.testing.assert_array_equal(np.asarray(out), bf16)


def test_an_interceptor_sees_every_call_and_only_while_inside():
    q, k, v = (x[:, None] for x in _problem())
    options = {"query_chunk": 8, "key_block": 5}
    exact = np.asarray(nonlocal_attention(q, k, v, **options))
    calls = []

    def doubled(attend, *maps, **given):
        calls.append(given)
        return 2 * attend(*maps, **given)

    with intercept_attention(doubled):
        np.testing.assert_array_equal(np.asarray(nonlocal_attention(q, k, v, **options)), 2 * exact)
        with intercept_attention(lambda attend, *maps, **given: np.zeros(3)):  # inner wins
            assert not np.asarray(nonlocal_attention(q, k, v, **options)).any()
        nonlocal_attention(q, k, v, **options)
    with pytest.raises(RuntimeError), intercept_attention(doubled):
        raise RuntimeError
    np.testing.assert_array_equal(np.asarray(nonlocal_attention(q, k, v, **options)), exact)
    assert len(calls) == 2 and calls[0] == {
        "memory_budget_mb": 64, "query_chunk": 8, "key_block": 5, "attention_dtype": None,
        "sequential": False, "flash_attention": False}
