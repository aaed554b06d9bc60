"""Table III/IV/V columns: parameters, GMACs at 96x96, training-step memory, forward time.

    python -m benchmarks.cost [--families pnen memnet rdn] [--batch 8] [--patch 96]

Each configuration runs in a fresh process. "train GB" is the peak of TensorFlow's allocator
(its BFC allocator, switched on for the CPU with TF_CPU_ALLOCATOR_USE_BFC: the one it uses on
GPUs) during two Adam steps on a batch of 8 96x96 patches, minus what it held before them
(weights, optimizer slots, the batch): the tensors a training step needs, allocator rounding
included, unaffected by the C library's heap. Paper (TITAN Xp, GPU memory): MemNet 26.9 G /
1.6 GB, RDN 202.9 G / 2.6 GB, PNEN w/o NL 40.6 G / 1.1 GB, w/ PNB 42.5 G / 4.3 GB.
"""

import argparse

CONFIGS = {
    "pnen": [("w/o NL", {"nonlocal_block": None}), ("w/ NLB", {"nonlocal_block": "nlb"}),
             ("w/ PNB", {"nonlocal_block": "pnb"}),
             ("w/ PNB, not rematerialised",
              {"nonlocal_block": "pnb", "nonlocal_options": {"rematerialize": False}})],
    "memnet": [("plain", {}), ("deeper", {"deeper": True}), ("w/ NLB", {"nonlocal_block": "nlb"}),
               ("w/ PNB", {"nonlocal_block": "pnb"})],
    "rdn": [("plain", {}), ("deeper", {"deeper": True}), ("w/ NLB", {"nonlocal_block": "nlb"}),
            ("w/ PNB", {"nonlocal_block": "pnb"})],
}


def child(payload):
    from benchmarks.measure import count_macs, tensor_memory, timed, use_tensor_memory_stats

    use_tensor_memory_stats()
    import keras
    import numpy as np
    import tensorflow as tf

    from pnen_tf import models

    model = models.build(payload["family"], **payload["options"])
    channels = model.inputs[0].shape[-1]
    patch = payload["patch"]
    with count_macs() as macs:
        model(np.zeros((1, patch, patch, channels), "float32"))
    forward = tf.function(lambda x: model(x, training=False))
    single = tf.constant(np.random.rand(1, patch, patch, channels).astype("float32"))
    forward_s = timed(lambda: forward(single).numpy())

    optimizer = keras.optimizers.Adam(5e-4)
    optimizer.build(model.trainable_variables)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.square(model(x, training=True) - y))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables),
                                      model.trainable_variables))
        return loss

    batch = tf.constant(np.random.rand(payload["batch"], patch, patch, channels).astype("float32"))
    train_step(batch, batch).numpy()  # traced and run once: later steps allocate the same
    with tensor_memory() as memory:
        step_s = timed(lambda: train_step(batch, batch).numpy(), repeats=2)
    return {"params": model.count_params(), "gmacs": (macs["conv"] + macs["attention"]) / 1e9,
            "attention_gmacs": macs["attention"] / 1e9, "train_gb": memory["gb"],
            "step_s": step_s, "forward_ms": forward_s * 1e3}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--patch", type=int, default=96)
    from benchmarks.measure import parse_or_run_child

    args = parse_or_run_child(parser, child, argv)
    from benchmarks.measure import machine, run_child

    print(f"# {machine()}; batch {args.batch} x {args.patch}x{args.patch}")
    print("| model | params | GMACs | of which attention | train-step GB | train s/step "
          "| forward ms (1 patch) |")
    print("|---|---|---|---|---|---|---|")
    for family in args.families:
        for label, options in CONFIGS[family]:
            payload = {"family": family, "options": options, "batch": args.batch, "patch": args.patch}
            r = run_child("benchmarks.cost", payload)
            if "error" in r:
                print(f"| {family} {label} | error: {r['error']} |")
                continue
            print(f"| {family} {label} | {r['params']:,} | {r['gmacs']:.1f} | {r['attention_gmacs']:.1f} "
                  f"| {r['train_gb']:.2f} | {r['step_s']:.1f} | {r['forward_ms']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
