"""Plain NumPy transcriptions of the paper's equations, independent of Keras, for the tests."""

import numpy as np


def conv2d_same(x, kernel, bias, stride=1):
    """TensorFlow/Keras "same" convolution: out = ceil(in / stride), extra padding after."""
    batch, height, width, _ = x.shape
    k = kernel.shape[0]
    out_h, out_w = -(-height // stride), -(-width // stride)
    pad_h = max((out_h - 1) * stride + k - height, 0)
    pad_w = max((out_w - 1) * stride + k - width, 0)
    padded = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2), (0, 0)))
    out = np.zeros((batch, out_h, out_w, kernel.shape[3]), np.float64)
    for i in range(k):
        for j in range(k):
            window = padded[:, i:i + (out_h - 1) * stride + 1:stride, j:j + (out_w - 1) * stride + 1:stride]
            out += window @ kernel[i, j]
    return out + bias


def softmax_attention(query, key, value):
    """Eq. (11): D^-1 exp(E_theta E_phi^T) E_g, per batch item, on [B, N, C] arrays."""
    logits = query @ key.transpose(0, 2, 1)
    weights = np.exp(logits - logits.max(-1, keepdims=True))
    weights /= weights.sum(-1, keepdims=True)
    return weights @ value


def nonlocal_block(x, branches, output_conv):
    """Eq. (6)/(12): branches of (query (kernel, bias), key (kernel, bias, stride), value ...)."""
    enhanced = []
    batch, height, width, _ = x.shape
    for (q_w, q_b), (k_w, k_b, stride), (v_w, v_b) in branches:
        q = conv2d_same(x, q_w, q_b).reshape(batch, height * width, -1)
        k = conv2d_same(x, k_w, k_b, stride).reshape(batch, -1, k_w.shape[3])
        v = conv2d_same(x, v_w, v_b, stride).reshape(batch, -1, v_w.shape[3])
        enhanced.append(softmax_attention(q, k, v).reshape(batch, height, width, -1))
    return x + conv2d_same(np.concatenate(enhanced, -1), *output_conv)


def layer_branches(layer):
    """Read a built PNB/NLB's weights into `nonlocal_block`'s branch format."""
    weights = lambda conv: [np.asarray(w, np.float64) for w in conv.get_weights()]  # noqa: E731
    branches = []
    for index, (key_conv, value_conv) in enumerate(zip(layer.key_convs, layer.value_convs)):
        query_conv = layer.query_convs[index if len(layer.query_convs) > 1 else 0]
        branches.append((weights(query_conv), (*weights(key_conv), key_conv.strides[0]), weights(value_conv)))
    return branches, weights(layer.output_conv)


def adaptive_average_pool(x, size):
    """PyTorch's AdaptiveAvgPool2d on NHWC: bin i of an axis of length L is the window
    [floor(i L / size), ceil((i + 1) L / size)), averaged window by window."""
    batch, height, width, channels = x.shape
    out = np.zeros((batch, size, size, channels), np.float64)
    bounds = lambda i, length: ((i * length) // size, -(-((i + 1) * length) // size))  # noqa: E731
    for i in range(size):
        top, bottom = bounds(i, height)
        for j in range(size):
            left, right = bounds(j, width)
            out[:, i, j] = x[:, top:bottom, left:right].mean(axis=(1, 2))
    return out


def asymmetric_pyramid_block(x, query_key, value, output, fusion, pool_sizes=(1, 3, 6, 8)):
    """APNB as ANN's code computes it (less BN, ReLU after the fusion and dropout), plus the
    input: Q = K = ReLU(conv(x)), V = conv(x), keys and values pooled to every size,
    F_hat = x + fusion([W(softmax(Q K^T / sqrt(d)) V), x]). Convs are (kernel, bias) pairs."""
    batch, height, width, _ = x.shape
    embedded = np.maximum(conv2d_same(x, *query_key), 0.0)
    values = conv2d_same(x, *value)
    pyramid = lambda m: np.concatenate(  # noqa: E731
        [adaptive_average_pool(m, s).reshape(batch, s * s, -1) for s in pool_sizes], axis=1)
    depth = embedded.shape[-1]
    query = embedded.reshape(batch, height * width, depth) / np.sqrt(depth)
    attended = softmax_attention(query, pyramid(embedded), pyramid(values))
    context = conv2d_same(attended.reshape(batch, height, width, -1), *output)
    return x + conv2d_same(np.concatenate([context, x], axis=-1), *fusion)
