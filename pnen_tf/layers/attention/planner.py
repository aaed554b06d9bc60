"""The tile plan of one attention call: the direct formula, or tiles of which sizes."""

# Bytes per element of one live tile, as measured in a training step (TensorFlow's allocator
# statistics): the probabilities and dP/dS tiles of the backward pass, the transposed copies its
# products read, all float32, and the allocator's rounding.
_TILE_BYTES_PER_ELEMENT = 32
# Keys per block: with its carry key a tile has a multiple of 16 columns, at most 2,048. A logits
# product whose column count is not a multiple of 16 runs slower, and larger tiles gained
# nothing (BENCHMARKS.md, section 2).
_MAX_KEY_BLOCK = 2047
_COLUMN_ALIGNMENT = 16
_MIN_QUERY_CHUNK = 16


def plan_tiles(batch, num_queries, num_keys, memory_budget_mb, query_chunk=None, key_block=None):
    """Choose `(direct, query_chunk, key_block)` for one attention call.

    Static sizes may be `None` (unknown until run time, e.g. a SavedModel with dynamic height
    and width): then the tiled path is taken, which is exact for every size. The direct path
    is kept for small static problems where one matrix fits the budget, because it is faster.

    Example:

    A 500x400 query map against 250x200 keys: 25 balanced key blocks of 2,015 keys (with the
    carry key a tile has 2,016 columns) and 49 balanced query chunks that fit 256 MB.

    >>> plan_tiles(1, 500 * 400, 250 * 200, memory_budget_mb=256)
    (False, 4082, 2015)
    >>> plan_tiles(1, 48 * 48, 24 * 24, memory_budget_mb=256)  # one matrix fits: direct
    (True, None, None)
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
