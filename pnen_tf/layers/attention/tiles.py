"""The tiles of eq. (11): query chunks and key/value blocks, each block with a carry key.

The logits product of a tile does the masking and merging work that would otherwise be passes
over the tile (`Tiles`), so the tiled passes (`tiled.py`) need one logits product, one softmax
and one product with the values per tile.
"""

from keras import ops

NEG_LARGE = -1e30


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


def merge(x, length):
    """[num_tiles, B, size, C] -> [B, length, C]: the tiles in order, without the padded rows
    beyond `length`."""
    shape = ops.shape(x)
    x = ops.transpose(x, (1, 0, 2, 3))
    x = ops.reshape(x, (shape[1], shape[0] * shape[2], shape[3]))
    return x[:, :length]


def _with_zero_row(blocks):
    """`[nb, B, block, c]` -> `[nb, B, block + 1, c]`: the carry key's row, zero."""
    shape = ops.shape(blocks)
    return ops.concatenate([blocks, ops.zeros((shape[0], shape[1], 1, shape[3]), blocks.dtype)], axis=2)


class Tiles:
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
        bias = ops.broadcast_to(ops.where(padded, NEG_LARGE, 0.0), column)
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
        """Key block `j` with its bias row, carry key and carry indicator, transposed (under
        TensorFlow a view of `keys_t`, not a copy, where blocks are 64-byte aligned: planned
        blocks are, having a multiple of 16 columns)."""
        return self.keys_t[j]

    def logits(self, q_rows, block_t):
        """Logits of `query_rows` against a key block (`block_t`) and its carry key (the last
        column).

        Always float32: an error e in a logit is a relative error e in its weight, and a bf16
        product keeps 8 significant bits (a logit of 30 is off by up to 0.0625). The other
        products see probabilities and gradients, whose rounding errors average out over keys.
        """
        return self.matmul(q_rows, block_t, "float32")
