"""What the two non-local blocks share: branches of (query, key, value) convs, eq. (6)/(11)-(12).

A branch embeds the input into a query map at full resolution and key/value maps (possibly at a
stride), lets every query pixel attend to every key pixel (`nonlocal_attention`), and the
enhanced maps of all branches are concatenated, projected back by a 1x1 convolution (T in eq. 6,
psi in eq. 12) and added to the input.
"""

import keras
from keras import layers, ops

from pnen_tf.layers._validation import check_feature_map
from pnen_tf.layers.attention import nonlocal_attention


class NonLocalBase(layers.Layer):
    """Base class; subclasses implement `branch_specs(channels)`.

    `branch_specs` returns a list of dicts, one per branch, with keys `query` (1x1 query channels,
    or None to reuse the shared query of branch 0), `key`, `value` (channels), `kernel` (key/value
    kernel size) and `stride`.
    """

    def __init__(self, memory_budget_mb=64, query_chunk=None, key_block=None,
                 attention_dtype=None, **kwargs):
        super().__init__(**kwargs)
        if attention_dtype not in (None, "bfloat16", "float32"):
            raise ValueError(f"{type(self).__name__}: attention_dtype must be None, 'float32' or "
                             f"'bfloat16', got {attention_dtype!r}")
        self.memory_budget_mb = memory_budget_mb
        self.query_chunk = query_chunk
        self.key_block = key_block
        self.attention_dtype = attention_dtype

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
        for conv_list in (self.query_convs, self.key_convs, self.value_convs):
            for conv in conv_list:
                conv.build(input_shape)
        self.output_conv.build(tuple(input_shape[:-1]) + (enhanced_channels,))
        self.input_spec = keras.InputSpec(ndim=4, axes={-1: channels})

    def _conv(self, filters, kernel, stride, name):
        # "same" padding at a stride keeps ceil(H / s) rows: any size works, 7x9 with s=8 too.
        return layers.Conv2D(filters, kernel, strides=stride, padding="same", name=name,
                             dtype=self.dtype_policy)

    def call(self, inputs):
        check_feature_map(self, inputs.shape, self.channels)
        enhanced = []
        for index, (key_conv, value_conv) in enumerate(zip(self.key_convs, self.value_convs)):
            query_conv = self.query_convs[index if len(self.query_convs) > 1 else 0]
            enhanced.append(nonlocal_attention(
                query_conv(inputs), key_conv(inputs), value_conv(inputs),
                memory_budget_mb=self.memory_budget_mb, query_chunk=self.query_chunk,
                key_block=self.key_block, attention_dtype=self.attention_dtype,
            ))
        merged = enhanced[0] if len(enhanced) == 1 else ops.concatenate(enhanced, axis=-1)
        return inputs + self.output_conv(merged)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            memory_budget_mb=self.memory_budget_mb, query_chunk=self.query_chunk,
            key_block=self.key_block, attention_dtype=self.attention_dtype,
        )
        return config
