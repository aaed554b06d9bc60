"""One official PNB (64 channels): our tiled attention against two straightforward baselines.

    python -m benchmarks.attention_baselines [--sizes 128x128 256x256 500x400] [--train-size 96x96]
    python -m benchmarks.attention_baselines --sizes 2048x2048 --scales 8 --methods tiled --passes forward

- direct: softmax(q k^T) v with the whole matrix in memory;
- map_fn: queries in chunks of 1024 with `tf.map_fn`, each chunk against all keys (the
  common memory fix; its gradient keeps every chunk's probabilities);
- tiled: `pnen_tf.layers.nonlocal_attention` (query chunks x key blocks, online softmax,
  recomputing custom gradient); tiled_bf16: the same with bfloat16 products after the logits.

`--scales` restricts the block to some of its scales, e.g. one branch of a 2048x2048 image
(scale 8: 26 TMAC, minutes; scale 2: 423 TMAC, about 70 minutes on the development machine).

The checksum (sum of |output|, or of |gradient| for the training pass) shows that the exact
methods agree and what bfloat16 costs.

Each run is a fresh process; "GB" is the peak of TensorFlow's allocator during the call minus
what it held before (see `benchmarks.measure.tensor_memory`); the call is traced beforehand.
The training pass calls the block with training=True (rematerialised branches, chunks in turn).
"""

import argparse

METHODS = ("direct", "map_fn", "tiled", "tiled_bf16")


def _map_fn_attention(attend, query_map, key_map, value_map, **options):
    """The map_fn baseline in the blocks' attention's place (`intercept_attention`)."""
    import tensorflow as tf

    batch, height, width = tf.unstack(tf.shape(query_map)[:3])
    q = tf.reshape(query_map, (batch, -1, query_map.shape[-1]))
    k = tf.reshape(key_map, (batch, -1, key_map.shape[-1]))
    v = tf.reshape(value_map, (batch, -1, value_map.shape[-1]))
    chunk = 1024
    pad = (chunk - tf.shape(q)[1] % chunk) % chunk
    chunks = tf.transpose(tf.reshape(tf.pad(q, [[0, 0], [0, pad], [0, 0]]), (batch, -1, chunk, q.shape[-1])),
                          (1, 0, 2, 3))
    out = tf.map_fn(lambda c: tf.nn.softmax(c @ tf.transpose(k, (0, 2, 1))) @ v, chunks)
    out = tf.reshape(tf.transpose(out, (1, 0, 2, 3)), (batch, -1, v.shape[-1]))[:, : height * width]
    return tf.reshape(out, (batch, height, width, v.shape[-1]))


def child(payload):
    import contextlib

    from benchmarks.measure import use_tensor_memory_stats

    use_tensor_memory_stats()
    from pnen_tf.layers.attention import intercept_attention

    method = payload["method"]
    with intercept_attention(_map_fn_attention) if method == "map_fn" else contextlib.nullcontext():
        return _measure(payload, {"direct": {"memory_budget_mb": 10**6},
                                  "tiled_bf16": {"attention_dtype": "bfloat16"}}.get(method, {}))


def _measure(payload, options):
    """Seconds, allocator GB and checksum of one PNB's traced call (forward or training step)."""
    import time

    import keras
    import numpy as np
    import tensorflow as tf

    from benchmarks.measure import tensor_memory
    from pnen_tf.layers import PyramidNonLocalBlock

    height, width = payload["size"]
    keras.utils.set_random_seed(0)  # the same weights in every process: equal checksums
    layer = PyramidNonLocalBlock(scales=payload["scales"], **options)
    x = tf.constant(np.random.default_rng(0).random((payload["batch"], height, width, 64)).astype("float32"))
    layer(x[:, :8, :8])
    if payload["train"]:
        def step(inputs):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(layer(inputs, training=True)))
            return tape.gradient(loss, layer.trainable_variables)[0]
    else:
        def step(inputs):
            return layer(inputs)
    run = tf.function(step)  # static shapes: the direct path really is direct
    run.get_concrete_function(x)
    with tensor_memory() as memory:
        start = time.perf_counter()
        out = run(x).numpy()
        seconds = time.perf_counter() - start
    return {"seconds": seconds, "gb": memory["gb"], "checksum": float(np.abs(out).sum())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["128x128", "256x256", "500x400"])
    parser.add_argument("--train-size", default="96x96", help="HxW of the training-step comparison")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument("--direct-limit-gb", type=float, default=12.0,
                        help="skip the direct method when its finest scale's matrix alone is larger")
    parser.add_argument("--scales", nargs="+", type=int, default=[2, 4, 8], help="the PNB's scales")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--passes", nargs="+", default=["forward", "train"], choices=["forward", "train"])
    from benchmarks.measure import parse_or_run_child

    args = parse_or_run_child(parser, child, argv)
    from benchmarks.measure import machine, run_child

    print(f"# {machine()}")
    print(f"# one PNB, scales {tuple(args.scales)}")
    print("| pass | input | method | seconds | GB | checksum |")
    print("|---|---|---|---|---|---|")
    runs = [("forward", size, 1) for size in args.sizes] * ("forward" in args.passes)
    runs += [("train", args.train_size, args.train_batch)] * ("train" in args.passes)
    finest = min(args.scales)
    for kind, size, batch in runs:
        height, width = (int(v) for v in size.lower().split("x"))
        for method in args.methods:
            matrix_gb = batch * height * width * -(-height // finest) * -(-width // finest) * 4 / 2**30
            if method == "direct" and matrix_gb > args.direct_limit_gb:
                print(f"| {kind} | {batch}x{size} | {method} | — | does not fit: the scale-{finest} "
                      f"matrix alone is {matrix_gb:.0f} GiB | |")
                continue
            payload = {"method": method, "size": [height, width], "batch": batch, "train": kind == "train",
                       "scales": args.scales}
            r = run_child("benchmarks.attention_baselines", payload, timeout=6 * 3600)
            if "error" in r:
                print(f"| {kind} | {batch}x{size} | {method} | error: {r['error']} | | |", flush=True)
                continue
            print(f"| {kind} | {batch}x{size} | {method} | {r['seconds']:.2f} | {r['gb']:.2f} "
                  f"| {r['checksum']:.6g} |", flush=True)


if __name__ == "__main__":
    main()
