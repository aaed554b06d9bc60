"""What the two non-local blocks share: branches of (query, key, value) convs, eq. (6)/(11)-(12).

A branch embeds the input into a query map at full resolution and key/value maps (possibly at a
stride), lets every query pixel attend to every key pixel (`nonlocal_attention`), and the
enhanced maps of all branches are concatenated, projected back by a 1x1 convolution (T in eq. 6,
psi in eq. 12) and added to the input.

The projection of the concatenation is computed as the sum of each branch's projection through
its slice of the 1x1 kernel (the same weights, the same result up to rounding), so a branch can
be evaluated, and in training rematerialised, on its own: only one branch's maps are ever alive.
"""

import keras
from keras import layers, ops

from pnen_tf.layers._validation import check_feature_map
from pnen_tf.layers.attention import nonlocal_attention, wait_for


def pad_same(x, kernel, stride):
    """NHWC `x` zero-padded as TensorFlow's "same" padding pads it for a `kernel` x `kernel`
    convolution at `stride`, so that a "valid" one gives ceil(H / stride) x ceil(W / stride)
    outputs: any size works, 7x9 with stride 8 too.

    Written out because the converted "same" convolution is wrong in ONNX: tf2onnx emits
    SAME_UPPER for dynamic sizes, and onnxruntime does not clamp its total padding,
    (ceil(H / s) - 1) * s + k - H, at zero. With a kernel smaller than the stride (the official
    PNB's 3x3 keys at stride 8) that total is negative for most sizes, and onnxruntime crops
    the map instead, shifting every key and value (an error of 0.3-3 on any photograph).
    """
    shape = ops.shape(x)
    pads = [[0, 0]]
    for size in (shape[1], shape[2]):
        total = ((size + stride - 1) // stride - 1) * stride + kernel - size
        total = max(total, 0) if isinstance(total, int) else ops.maximum(total, 0)
        pads.append([total // 2, total - total // 2])
    return ops.pad(x, pads + [[0, 0]])


class ResidualAttentionBlock(layers.Layer):
    """What every non-local block shares: the tiling options it hands to `nonlocal_attention`
    (`memory_budget_mb`, `query_chunk`, `key_block`: see there) and a residual output of the
    input's shape."""

    def __init__(self, memory_budget_mb=64, query_chunk=None, key_block=None, **kwargs):
        super().__init__(**kwargs)
        self.memory_budget_mb = memory_budget_mb
        self.query_chunk = query_chunk
        self.key_block = key_block

    @property
    def tiling(self):
        """The tiling options, as `nonlocal_attention` keywords."""
        return dict(memory_budget_mb=self.memory_budget_mb, query_chunk=self.query_chunk,
                    key_block=self.key_block)

    def start_as_identity(self):
        """Zero the convolution that ends the residual branch (`branch_end`), so the built
        block returns its input: how Wang et al. (2018) insert non-local blocks into a network.

        At Glorot initialisation the attention logits of deep features are large (the softmax
        is near one-hot) and a random branch perturbs every later layer; from zero the branch
        grows as training finds it useful.
        """
        for weight in self.branch_end.weights:
            weight.assign(ops.zeros_like(weight))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), **self.tiling}


class NonLocalBase(ResidualAttentionBlock):
    """Base class; subclasses implement `branch_specs(channels)`.

    `branch_specs` returns a list of dicts, one per branch, with keys `query` (1x1 query channels,
    or None to reuse the shared query of branch 0), `key`, `value` (channels), `kernel` (key/value
    kernel size) and `stride`.
    """

    def __init__(self, attention_dtype=None, rematerialize=True, flash_attention=False, **kwargs):
        super().__init__(**kwargs)
        if attention_dtype not in (None, "bfloat16", "float32"):
            raise ValueError(f"{type(self).__name__}: attention_dtype must be None, 'float32' or "
                             f"'bfloat16', got {attention_dtype!r}")
        self.attention_dtype = attention_dtype
        self.rematerialize = bool(rematerialize)
        self.flash_attention = bool(flash_attention)

    def branch_specs(self, channels):
        raise NotImplementedError

    def build(self, input_shape):
        channels = check_feature_map(self, input_shape)
        self.channels = channels
        self.query_convs, self.key_convs, self.value_convs = [], [], []
        enhanced_channels = 0
        for index, spec in enumerate(self.branch_specs(channels)):
            if spec["query"] is not None:
                self.query_convs.append(self._conv(spec["query"], 1, 1, f"query_{index}"))
            self.key_convs.append(self._conv(spec["key"], spec["kernel"], spec["stride"], f"key_{index}"))
            self.value_convs.append(self._conv(spec["value"], spec["kernel"], spec["stride"], f"value_{index}"))
            enhanced_channels += spec["value"]
        self.output_conv = self._conv(channels, 1, 1, "output")
        # Built for any size: a strided conv sees the padded map (`pad_same`), not `input_shape`.
        any_size = (None, None, None)
        for conv_list in (self.query_convs, self.key_convs, self.value_convs):
            for conv in conv_list:
                conv.build(any_size + (channels,))
        self.output_conv.build(any_size + (enhanced_channels,))
        self.input_spec = keras.InputSpec(ndim=4, axes={-1: channels})

    def _conv(self, filters, kernel, stride, name):
        # A strided key/value conv reads an input padded by `pad_same` (`_branch`).
        return layers.Conv2D(filters, kernel, strides=stride, padding="same" if stride == 1 else "valid",
                             name=name, dtype=self.dtype_policy)

    def call(self, inputs, training=None):
        check_feature_map(self, inputs.shape, self.channels)
        training = bool(training)
        remat = training and self.rematerialize
        total, done = self.residual_start(inputs), None
        last = self.branch_count - 1
        # The "paper" PNB shares one query embedding among its branches: computed once.
        shared = self._shares_query
        extra = (self.query_convs[0](inputs),) if shared else ()
        for index in range(last + 1):
            def branch(x, *args, index=index):
                query, previous = (args[0], args[1:]) if shared else (None, args)
                x = wait_for(x, previous) if previous else x
                contribution = self._branch(index, x, query, sequential=training)
                if not remat or index == last:
                    return contribution
                return ops.cast(ops.min(contribution), "float32"), contribution

            if remat:
                # Keep only the block's input for the backward pass and recompute the branch's
                # embeddings and attention output there: stored, they would be several feature
                # maps per branch; recomputed, they cost one more forward pass of the block.
                # Each branch waits for the previous one's `done` scalar and, in the backward
                # pass, for the next one's gradient of it (the recomputation waits for the
                # gradient of its first output): TensorFlow would otherwise run the branches
                # side by side.
                branch = keras.remat(branch)
            result = branch(inputs, *extra) if done is None else branch(inputs, *extra, done)
            done, contribution = result if remat and index < last else (None, result)
            total = total + contribution
            if not remat and index < last:
                # Without rematerialisation the next branch waits for the running sum: each
                # partial sum then has two readers, and Grappler does not merge the sum into one
                # AddN, which it evaluates into a temporary initialised from a zeros map made
                # at the start of the graph and held throughout: a feature map per block
                # (BENCHMARKS.md, section 2).
                done = ops.stop_gradient(ops.cast(ops.min(total), "float32"))
        return total

    @property
    def branch_end(self):
        """T (psi in the paper's PNB): the 1x1 convolution that ends the residual branch."""
        return self.output_conv

    @property
    def branch_count(self):
        return len(self.key_convs)

    @property
    def _shares_query(self):
        return self.branch_count > 1 and len(self.query_convs) == 1

    def residual_start(self, inputs):
        """The residual sum of eq. (6)/(12) before any branch: the input plus T's / psi's bias."""
        if self.output_conv.use_bias:
            return inputs + ops.cast(self.output_conv.bias, inputs.dtype)
        return inputs

    def branch(self, inputs, index):
        """Branch `index`'s term of the residual sum, on its own (inference; a shared query is
        recomputed): `call` equals `residual_start` plus every branch's term, added in order."""
        query = self.query_convs[0](inputs) if self._shares_query else None
        return self._branch(index, inputs, query, sequential=False)

    def _branch(self, index, inputs, query, sequential):
        """Branch `index`'s enhanced map (eq. 11), projected by its slice of T / psi; `query`:
        the shared query map, or None for the branch's own."""
        query = self.query_convs[index](inputs) if query is None else query
        key_conv, value_conv = self.key_convs[index], self.value_convs[index]
        if key_conv.strides[0] > 1:
            inputs = pad_same(inputs, key_conv.kernel_size[0], key_conv.strides[0])
        enhanced = nonlocal_attention(
            query, key_conv(inputs), value_conv(inputs), **self.tiling,
            attention_dtype=self.attention_dtype, sequential=sequential,
            flash_attention=self.flash_attention,
        )
        return self._project(enhanced, index)

    def _project(self, enhanced, index):
        """1x1 convolution of one branch's map with its input-channel slice of the output conv."""
        start = sum(conv.filters for conv in self.value_convs[:index])
        kernel = self.output_conv.kernel[:, :, start:start + self.value_convs[index].filters, :]
        return self.output_conv.convolution_op(enhanced, ops.cast(kernel, enhanced.dtype))

    def get_config(self):
        return {**super().get_config(), "attention_dtype": self.attention_dtype,
                "rematerialize": self.rematerialize, "flash_attention": self.flash_attention}
