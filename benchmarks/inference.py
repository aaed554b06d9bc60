"""PNEN forward on whole images: seconds, peak memory, achieved GFLOP/s vs the matmul peak.

    python -m benchmarks.inference [--sizes 500x400 2048x2048] [--precisions float32 bf16-attention bfloat16]
    KERAS_BACKEND=jax python -m benchmarks.inference --repeat --flash-attention   # a GPU, no TensorFlow
    python -m benchmarks.inference --sizes 2048x2048 --precisions float32 --dry-attention
    python -m benchmarks.inference --sizes 2048x2048 --precisions float32 --staged-dir runs/

Every image runs in a fresh process (clean peak RSS). The first call's time includes tracing the
model and TensorFlow's graph optimisation (3-5 s on two CPU cores; on a GPU, XLA's compilation);
`--repeat` times a second call as well, and the rate is then that call's. The fp32 and bf16 matmul peaks of this
machine are measured in the same run, so the fractions compare like with like. "bfloat16" runs the
whole model under the `mixed_bfloat16` policy (convolutions and attention products in bf16,
softmax statistics in fp32); "bf16-attention" keeps the network in fp32 and runs only the
attention's matrix products in bf16 (`attention_dtype="bfloat16"`), where nearly all of a large
image's work is. Their accuracy cost is the max abs difference to the fp32 output of the same
weights; their fraction of peak is against the bf16 matmul peak.

`--dry-attention` replaces each attention product by zeros of its shape (`count_macs`' dry
mode; computed from the embeddings, so they are made where the attention's output would be):
every other tensor of the forward pass is really computed and allocated, so the peak
memory of an image whose attention takes hours (2048x2048: ~1.7 PMAC, 4.0 h at the 231
GFLOP/s reached on the 2-core development machine) is measured in minutes; the attention's own
working set (one tile of `memory_budget_mb` and a few chunk-sized buffers) comes on top. Its
time and error columns mean nothing.

`--staged-dir` runs the forward stage by stage (`pnen_tf.staged.StagedForward`: layer by layer,
a non-local block branch by branch), every result on disk: the same command resumes an
interrupted run, so a forward of hours survives an interruption. Seconds are the stages'
sum over all runs, memory the largest peak RSS of its processes; the MACs are counted by tracing.
"""

import argparse
import contextlib
import json
import os
import tempfile
import time


_PEAK_DTYPE = {"float32": "float32", "bf16-attention": "bfloat16", "bfloat16": "bfloat16"}


def child(payload):
    import keras
    import numpy as np

    from benchmarks.measure import compiled_forward, count_macs, peak_device_gb, peak_rss_gb
    from pnen_tf import models

    height, width = payload["size"]
    if payload["precision"] == "bfloat16":
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    attention_dtype = "bfloat16" if payload["precision"] == "bf16-attention" else None
    model = models.build("pnen", nonlocal_options={
        "attention_dtype": attention_dtype, "flash_attention": payload["flash_attention"],
        "memory_budget_mb": payload["memory_budget_mb"]})
    image = np.random.default_rng(0).random((1, height, width, 3)).astype("float32")
    model(image[:, : min(height, 64), : min(width, 64)])  # builds the weights
    if payload["staged_dir"]:
        return _staged(model, image, payload)
    # Counted while the forward is traced (static shapes), not by an eager pass at full size,
    # whose peak memory would be the process's: the graph frees tensors sooner.
    with count_macs(dry_attention=payload["dry_attention"]) as macs:
        forward = compiled_forward(model)
        start = time.perf_counter()
        out = forward(image).astype("float32")
        first = time.perf_counter() - start
    warm = None
    if payload["repeat"]:  # the first call also traces and optimises (XLA on a GPU compiles)
        start = time.perf_counter()
        forward(image)
        warm = time.perf_counter() - start
    np.save(payload["output"], out)
    return {"first_seconds": first, "seconds": warm, "peak_gb": peak_rss_gb(),
            "device_gb": peak_device_gb(), "gmacs": (macs["conv"] + macs["attention"]) / 1e9}


def _staged(model, image, payload):
    """The forward by `StagedForward`: resumable, so a run of hours can span several sessions.
    Seconds: the stages' sum over all runs; memory: the largest peak RSS of any of its processes
    (each stage records its process's peak so far in a log beside the run's directory)."""
    import numpy as np

    from benchmarks.measure import count_macs, peak_rss_gb, traced_macs
    from pnen_tf.staged import StagedForward

    # The run's folder names what its results depend on beyond the model's fingerprint (which
    # covers its config and weights): the dry attention is the benchmark's, not a setting.
    name = f"{payload['size'][0]}x{payload['size'][1]}-{payload['precision']}"
    name += f"-{payload['memory_budget_mb']}mb" + "-flash" * payload["flash_attention"]
    run = os.path.join(payload["staged_dir"], name + "-dry" * payload["dry_attention"])
    log = run + ".jsonl"
    if not os.path.isdir(run) and os.path.exists(log):
        os.remove(log)  # a log of an earlier run whose folder was removed

    def record(key, seconds):
        with open(log, "a") as f:
            f.write(json.dumps({"stage": key, "seconds": seconds, "peak_rss_gb": peak_rss_gb(),
                                "pid": os.getpid(), "time": time.strftime("%H:%M:%S")}) + "\n")

    forward = StagedForward(model, run, on_stage=record)
    with count_macs(dry_attention=True) if payload["dry_attention"] else contextlib.nullcontext():
        np.save(payload["output"], forward(image).astype("float32"))
    with open(os.path.join(run, "progress.json")) as f:
        seconds = sum(stage["seconds"] for stage in json.load(f)["done"].values())
    with open(log) as f:
        peak = max(json.loads(line)["peak_rss_gb"] for line in f)
    return {"first_seconds": seconds, "seconds": None, "peak_gb": max(peak, peak_rss_gb()),
            "device_gb": None, "gmacs": traced_macs(model, image.shape) / 1e9}


def _seconds(value):
    if value is None:
        return "—"
    return f"{value:.3f}" if value < 1 else f"{value:.1f}"  # GPU times in ms matter


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["500x400"], help="HxW, e.g. 500x400 2048x2048")
    parser.add_argument("--precisions", nargs="+", default=list(_PEAK_DTYPE), choices=list(_PEAK_DTYPE))
    parser.add_argument("--repeat", action="store_true",
                        help="time a second call too, without the first call's tracing and graph "
                             "optimisation (seconds on a CPU; XLA's compilation on a GPU): the rate "
                             "and fraction of peak are then the second call's")
    parser.add_argument("--dry-attention", action="store_true",
                        help="zeros instead of attention products: the memory of everything else")
    parser.add_argument("--flash-attention", action="store_true",
                        help="the backend's fused attention kernel for the 16-bit precisions "
                             "(JAX on a GPU: cuDNN); fp32 keeps the tiled attention")
    parser.add_argument("--staged-dir",
                        help="run each image stage by stage (pnen_tf.staged), results kept here: "
                             "the same command again resumes an interrupted run")
    parser.add_argument("--memory-budget-mb", type=int, default=64,
                        help="attention tile budget (the layers' default: sized for a CPU)")
    parser.add_argument("--timeout-hours", type=float, default=12,
                        help="limit for one image (2048x2048 in fp32 took 4.0 h on 2 cores)")
    from benchmarks.measure import parse_or_run_child

    args = parse_or_run_child(parser, child, argv)
    import numpy as np

    from benchmarks.measure import machine, matmul_peak_gflops, run_child

    peaks = {p: matmul_peak_gflops(p) for p in ("float32", "bfloat16")}
    print(f"# {machine()}")
    print(f"# 4096^2 matmul peak: fp32 {peaks['float32']:.0f} GFLOP/s, bf16 {peaks['bfloat16']:.0f} GFLOP/s")
    print("| image | precision | first call s | second call s | peak RSS GB (GPU: device peak) | GMACs "
          "| GFLOP/s | of matmul peak | max error vs fp32 (relative) |")
    print("|---|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            height, width = (int(v) for v in size.lower().split("x"))
            outputs = {}
            for precision in args.precisions:
                path = os.path.join(tmp, f"{size}-{precision}.npy")
                payload = {"size": [height, width], "precision": precision, "output": path,
                           "repeat": args.repeat, "dry_attention": args.dry_attention,
                           "flash_attention": args.flash_attention and precision != "float32",
                           "memory_budget_mb": args.memory_budget_mb,
                           "staged_dir": args.staged_dir and os.path.abspath(args.staged_dir)}
                r = run_child("benchmarks.inference", payload, timeout=args.timeout_hours * 3600)
                if "error" in r:
                    print(f"| {size} | {precision} | error: {r['error']} |", flush=True)
                    continue
                outputs[precision] = np.load(path)
                diff = "n/a"
                if "float32" in outputs:
                    reference = outputs["float32"]
                    diff = f"{np.abs(outputs[precision] - reference).max() / np.abs(reference).max():.1e}"
                gflops = 2 * r["gmacs"] / (r["seconds"] or r["first_seconds"])
                memory = f"{r['peak_gb']:.2f}"
                if r["device_gb"] is not None:
                    memory += f" (device {r['device_gb']:.2f})"
                print(f"| {size} | {precision} | {_seconds(r['first_seconds'])} | {_seconds(r['seconds'])} "
                      f"| {memory} | {r['gmacs']:.0f} "
                      f"| {gflops:.0f} | {gflops / peaks[_PEAK_DTYPE[precision]]:.0%} | {diff} |", flush=True)


if __name__ == "__main__":
    main()
