"""Steps that run strictly in turn, so that a tile or two (or one branch's maps) are alive.

TensorFlow runs independent operations side by side, and up to ten iterations of a while loop
at once when their inputs are ready. The tiled passes and the non-local blocks' branches order
their steps with these two helpers instead (JAX runs loops in turn anyway).
"""

from keras import ops


def wait_for(x, carry):
    """`x`, made to wait for `carry` (a tensor or a tuple of them): adds 0 * an element of each,
    exactly zero (`x` may be an index). One element suffices (an operation hands over its whole
    output at once) and costs no pass over a carry as large as a tile (the backward pass
    carries all of dQ).

    Where a loop step's tiles depend only on its loop index (the backward pass), ten tiles
    would be alive together. Deriving each step's index from every output of the previous step
    keeps one alive. The forward pass's tiles depend on the running log-sum-exp already, so its
    steps need no `wait_for` (whose eight small operations per step cost time there).

    Example:

    >>> import numpy as np
    >>> int(wait_for(3, (np.full((2, 2), 7.0), np.array([np.nan]))))
    3
    """
    x = ops.convert_to_tensor(x)
    carries = carry if isinstance(carry, (tuple, list)) else (carry,)
    firsts = [ops.reshape(c, (-1,))[0] for c in carries]
    # Non-finite elements (NaN inputs) are replaced, or 0 * NaN would make a garbage index.
    zero = 0.0 * sum(ops.where(ops.isfinite(f), f, 0.0) for f in firsts)
    return x + ops.cast(zero, x.dtype)


def sequential_map(fn, xs, like):
    """`fn` over the leading axis of `xs`, strictly in turn; `like`: zeros shaped as one output.

    `ops.scan` with unroll=1 (under TensorFlow a while loop with parallel_iterations=1), unlike
    `ops.map`, which lets TensorFlow run ten elements at once.
    """
    return ops.scan(lambda previous, x: (fn(x),) * 2, like, xs)[1]
