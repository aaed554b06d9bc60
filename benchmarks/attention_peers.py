"""Our attention beside its peers on one PNB branch: PyTorch's SDPA and JAX, on the CPU.

    python -m benchmarks.attention_peers                  # 500x400, strides 2 4 8, 2 rounds
    python -m benchmarks.attention_peers --dry-run        # the runs in order, nothing run
    python -m benchmarks.attention_peers --size 40x32 --rounds 1 --peak-size 512   # seconds

One branch of the official PNB at C = 64 on an H x W image: H*W full-resolution queries of
width 32 attend to ceil(H/s) * ceil(W/s) keys of width 32 (stride s) with values of width 64,
batch 1, softmax without 1/sqrt(d) scaling (eq. (11)). Implementations (`--impls`):

- tf: `pnen_tf.layers.nonlocal_attention` in a `tf.function` (forward as in inference; the
  training pass with `sequential=True`, as a block in training mode calls it);
- jax: the same function under `KERAS_BACKEND=jax`, `jax.jit`;
- torch: `torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=1.0)` inside
  `sdpa_kernel(FLASH_ATTENTION)`, so that it is PyTorch's fused CPU kernel (no query x key
  matrix) or an error, never a silent fallback. That kernel wants one head width: queries and
  keys are zero-padded from 32 to 64 inside the timed call, a third more work than the useful
  32 + 64 MACs per query-key pair, which all rates count. `pip install '.[bench]'`;
- jax_sdpa: `jax.nn.dot_product_attention` (queries and keys padded alike; it too wants one
  width). On a CPU its only implementation is XLA's plain formula: the compiled call's
  temporary buffers hold the matrix (2x it forward, 6x in training). It is compiled first and
  skipped, with XLA's own figure, where they would exceed `--matrix-limit-gb`.

Passes: forward; train = forward and the gradients of sum(out * g) with respect to queries,
keys and values, for a fixed random g. dtypes: float32, and bfloat16 where the CPU has bf16
instructions: ours with `attention_dtype="bfloat16"` (products with probabilities in bf16,
logits float32), the peers with bf16 inputs throughout. Inputs are random, scaled so that the
logits have a standard deviation of `LOGIT_STD`: peaked enough that a wrong running maximum
or normaliser would show.

Every run is a fresh process, and its peak RSS its own (`peak_rss_gb`; "+GB": above its
RSS once the framework and the inputs were loaded). RSS counts the pages of the framework's
shared libraries it touched (TensorFlow's about 0.5 GB, PyTorch's about 0.25), which the system
shares between processes and can drop; "peak private" is the anonymous memory alone (heap,
tensors: `measure.PeakAnon`, sampled during the calls), with its own "+GB". Within a round the implementations
alternate, in an order rotated from round to round, and each round starts with the matmul
peaks (`benchmarks.measure.matmul_peak_gflops`, 4096^2 by default, TensorFlow, each dtype):
rates compare with the machine as it was in that round. A run times a first call
(tracing and compilation included) and `--repeats` more; "s" is their median. Outputs and
gradients are compared on `SAMPLE` query rows (and key rows) with our fp32 result of the first
round, and output and query gradient with the exact formula in float64, computed here.
Results: <results>/attention-peers-<date>.json, rewritten after every run.
"""

import argparse
import datetime
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np

# Before TensorFlow is imported (the results' writer imports pnen_tf): its start-up noise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

IMPLS = ("tf", "jax", "torch", "jax_sdpa")
PASSES = ("forward", "train")
DTYPES = ("float32", "bfloat16")
KEY_DIM, VALUE_DIM = 32, 64  # the official PNB at C = 64: queries and keys C/2, values C
PEER_WIDTH = max(KEY_DIM, VALUE_DIM)  # the one head width the fused kernels take
LOGIT_STD = 2.0
SAMPLE = 256
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def branch_shape(height, width, stride):
    """(queries, keys) of one PNB branch: every pixel against the stride-s keys ("same")."""
    return height * width, -(-height // stride) * -(-width // stride)


def attention_macs(queries, keys, train):
    """Useful MACs: q.k and p.v per query-key pair; training adds the backward pass's
    recomputed logits, dO V^T, P^T dO, dS K and dS^T Q (FlashAttention's count)."""
    per_pair = 4 * KEY_DIM + 3 * VALUE_DIM if train else KEY_DIM + VALUE_DIM
    return queries * keys * per_pair


def make_inputs(height, width, stride, seed=0):
    """Query, key and value maps (NHWC, batch 1) and the cotangent g, float32."""
    rng = np.random.default_rng(seed)
    h, w = -(-height // stride), -(-width // stride)
    scale = (LOGIT_STD**2 / KEY_DIM) ** 0.25  # q.k = sum of KEY_DIM products of two N(0, scale^2)
    return (rng.standard_normal((1, height, width, KEY_DIM), np.float32) * scale,
            rng.standard_normal((1, h, w, KEY_DIM), np.float32) * scale,
            rng.standard_normal((1, h, w, VALUE_DIM), np.float32),
            rng.standard_normal((1, height, width, VALUE_DIM), np.float32))


def sample_rows(count):
    """`SAMPLE` rows spread evenly over `count` (all of them when fewer)."""
    return np.unique(np.linspace(0, count - 1, min(count, SAMPLE)).astype(int))


def exact(q, k, v, g, rows):
    """Output and query gradient of sum(out * g) at query `rows`, in float64."""
    flat = [x.reshape(-1, x.shape[-1]).astype(np.float64) for x in (q, k, v, g)]
    q, k, v, g = flat[0][rows], flat[1], flat[2], flat[3][rows]
    logits = q @ k.T
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    out = p @ v
    d_logits = p * (g @ v.T - np.sum(g * out, axis=1, keepdims=True))
    return {"out": out, "d_query": d_logits @ k}


def _ours(arrays, payload):
    import keras

    from benchmarks.measure import compile_fn
    from pnen_tf.layers.attention import nonlocal_attention

    train = payload["pass"] == "train"
    options = {"attention_dtype": "bfloat16" if payload["dtype"] == "bfloat16" else None,
               "sequential": train}

    def forward(q, k, v):
        return nonlocal_attention(q, k, v, **options)

    tensors = [keras.ops.convert_to_tensor(a) for a in arrays[: 3 + train]]
    if keras.backend.backend() == "jax":
        import jax

        fn = _jax_train(forward) if train else forward
        return _jax_compiled(fn, tensors, f"JAX {jax.__version__}", payload)
    import tensorflow as tf

    if train:
        @tf.function
        def fn(q, k, v, g):
            with tf.GradientTape() as tape:
                tape.watch((q, k, v))
                out = forward(q, k, v)
            return (out, *tape.gradient(out, (q, k, v), output_gradients=g))
    else:
        fn = compile_fn(forward)
    return (lambda: [keras.ops.convert_to_numpy(x) for x in tf.nest.flatten(fn(*tensors))],
            {"version": f"TensorFlow {tf.__version__}, Keras {keras.__version__}"})


def _jax_train(forward):
    import jax

    def fn(q, k, v, g):
        out, vjp = jax.vjp(forward, q, k, v)
        return (out, *vjp(g))

    return fn


def _jax_compiled(fn, args, version, payload):
    """`fn` compiled for `args` (its time goes into the first call); XLA's temporary memory."""
    import jax

    start = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    info = {"version": version, "compile_seconds": time.perf_counter() - start,
            "xla_temp_gb": compiled.memory_analysis().temp_size_in_bytes / 2**30}
    if info["xla_temp_gb"] > payload["matrix_limit_gb"]:
        return None, {**info, "note": f"skipped: XLA's buffers would hold "
                                      f"{info['xla_temp_gb']:.1f} GB (the matrix)"}
    return lambda: [np.asarray(x) for x in jax.tree_util.tree_leaves(compiled(*args))], info


def _widen(x, ops):
    """Zero-pad the last axis to `PEER_WIDTH` (a fused kernel's one head width)."""
    return ops.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, PEER_WIDTH - x.shape[-1])])


def _jax_sdpa(arrays, payload):
    import jax
    import jax.numpy as jnp

    train = payload["pass"] == "train"
    dtype = jnp.dtype(payload["dtype"])
    # [batch, length, heads, width]
    q, k, v, g = (jnp.asarray(a.reshape(1, -1, 1, a.shape[-1]), dtype) for a in arrays)

    def forward(q, k, v):
        out = jax.nn.dot_product_attention(_widen(q, jnp), _widen(k, jnp), _widen(v, jnp), scale=1.0)
        return out[..., :VALUE_DIM]

    fn, args = (_jax_train(forward), (q, k, v, g)) if train else (forward, (q, k, v))
    return _jax_compiled(fn, args, f"JAX {jax.__version__}", payload)


def _torch(arrays, payload):
    import torch
    from torch.nn import functional
    from torch.nn.attention import SDPBackend, sdpa_kernel

    train = payload["pass"] == "train"
    dtype = getattr(torch, payload["dtype"])
    # [batch, heads, length, width]
    q, k, v, g = (torch.from_numpy(a.reshape(1, 1, -1, a.shape[-1])) for a in arrays)
    leaves = [x.requires_grad_(train) for x in (q, k, v)]

    def widen(x):
        return functional.pad(x, (0, PEER_WIDTH - x.shape[-1])).to(dtype)

    def step():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION), torch.set_grad_enabled(train):
            out = functional.scaled_dot_product_attention(widen(q), widen(k), widen(v), scale=1.0)
            out = out[..., :VALUE_DIM]
            results = (out, *torch.autograd.grad(out, leaves, g.to(dtype))) if train else (out,)
        return [r.detach().float().numpy() for r in results]

    return step, {"version": f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads",
                  "note": f"queries and keys zero-padded {KEY_DIM} -> {PEER_WIDTH}"}


def _peaks(payload):
    from benchmarks.measure import machine, matmul_peak_gflops

    return {"machine": machine(),
            "peaks": {d: matmul_peak_gflops(d, payload["peak_size"]) for d in payload["dtypes"]}}


def child(payload):
    from benchmarks.measure import PeakAnon, anon_gb, peak_rss_gb, rss_gb

    os.environ["KERAS_BACKEND"] = "jax" if payload["impl"] == "jax" else "tensorflow"
    if payload["impl"] == "peaks":
        return _peaks(payload)
    height, width = payload["size"]
    arrays = make_inputs(height, width, payload["stride"])
    prepare = {"tf": _ours, "jax": _ours, "torch": _torch, "jax_sdpa": _jax_sdpa}[payload["impl"]]
    step, info = prepare(arrays, payload)
    if step is None:
        return info
    base, base_anon = rss_gb(), anon_gb()
    with PeakAnon() as peak_anon:
        start = time.perf_counter()
        results = step()
        first = time.perf_counter() - start + info.pop("compile_seconds", 0.0)
        seconds = []
        for _ in range(payload["repeats"]):
            start = time.perf_counter()
            results = step()
            seconds.append(time.perf_counter() - start)
    queries, keys = branch_shape(height, width, payload["stride"])
    names, counts = ("out", "d_query", "d_key", "d_value"), (queries, queries, keys, keys)
    samples = {name: r.reshape(-1, r.shape[-1])[sample_rows(count)].tolist()
               for name, r, count in zip(names, results, counts)}
    return {**info, "first_seconds": first, "seconds": seconds, "peak_gb": peak_rss_gb(),
            "base_gb": base, "peak_anon_gb": peak_anon.gb, "base_anon_gb": base_anon,
            "samples": samples}


def cpu_has_bf16():
    """Whether the CPU has bf16 arithmetic (x86 AVX512-BF16 or AMX-BF16; Arm's bf16)."""
    try:
        with open("/proc/cpuinfo") as f:
            words = set(f.read().split())
    except OSError:
        return False
    return bool(words & {"avx512_bf16", "amx_bf16", "bf16"})


def plan(args, height, width):
    """The runs in order: per round the peaks, then every configuration's implementations in
    an order rotated by the round."""
    runs = []
    for r in range(args.rounds):
        runs.append({"impl": "peaks", "round": r, "peak_size": args.peak_size, "dtypes": args.dtypes})
        impls = args.impls[r % len(args.impls):] + args.impls[: r % len(args.impls)]
        for stride in args.strides:
            for kind in args.passes:
                for dtype in args.dtypes:
                    runs += [{"impl": impl, "round": r, "size": [height, width], "stride": stride,
                              "pass": kind, "dtype": dtype, "repeats": args.repeats,
                              "matrix_limit_gb": args.matrix_limit_gb} for impl in impls]
    return runs


def _macs(run):
    return attention_macs(*branch_shape(*run["size"], run["stride"]), run["pass"] == "train")


def _max_diff(samples, reference):
    common = [name for name in samples if name in reference]
    return max(float(np.max(np.abs(np.asarray(samples[n]) - np.asarray(reference[n])))) for n in common)


def _fmt(value, form):
    return "—" if value is None else format(value, form)


class Report:
    """Runs' results, their checks against ours in fp32 and the exact formula, the tables."""

    def __init__(self, size, path):
        self.size, self.path = size, path
        self.runs, self.peaks, self.samples, self.exact = [], [], {}, {}
        self.machine = None

    def add(self, run, result):
        if run["impl"] == "peaks":
            self.machine = self.machine or result.get("machine")
            self.peaks.append(result.get("peaks", {}))
            return
        key = (run["stride"], run["pass"])
        samples = result.pop("samples", None)
        if samples is not None:
            if key not in self.exact:
                arrays = make_inputs(*self.size, run["stride"])
                self.exact[key] = exact(*arrays, sample_rows(self.size[0] * self.size[1]))
            result["vs_exact"] = _max_diff(samples, self.exact[key])
            self.samples[len(self.runs)] = samples
        self.runs.append({**run, **result})
        self._compare_with_ours()
        self._print_run(self.runs[-1])

    def _compare_with_ours(self):
        """Each run's samples against those of our fp32 run of its configuration that came
        first (in the first round, wherever the rotation put it)."""
        ours = {}
        for i, r in enumerate(self.runs):
            if r["impl"] == "tf" and r["dtype"] == "float32" and i in self.samples:
                ours.setdefault((r["stride"], r["pass"]), self.samples[i])
        for i, r in enumerate(self.runs):
            reference = ours.get((r["stride"], r["pass"]))
            if reference is not None and i in self.samples:
                r["vs_ours_fp32"] = _max_diff(self.samples[i], reference)

    def _print_run(self, r):
        steady = float(np.median(r["seconds"])) if r.get("seconds") else None
        print(f"| {r['round'] + 1} | {r['stride']} | {r['pass']} | {r['dtype']} | {r['impl']} "
              f"| {_fmt(r.get('first_seconds'), '.2f')} | {_fmt(steady, '.2f')} "
              f"| {_fmt(r.get('peak_gb'), '.2f')} | {_fmt(r.get('vs_ours_fp32'), '.1e')} "
              f"| {_fmt(r.get('vs_exact'), '.1e')} | {r.get('error') or r.get('note') or ''} |",
              flush=True)

    def summary(self):
        """One row per configuration: medians over rounds, the worst memory and error."""
        rows = {}
        for r in self.runs:
            rows.setdefault((r["stride"], r["pass"], r["dtype"], r["impl"]), []).append(r)
        table = []
        for (stride, kind, dtype, impl), runs in rows.items():
            done = [r for r in runs if r.get("seconds")]
            seconds = [float(np.median(r["seconds"])) for r in done]
            peak = np.median([p[dtype] for p in self.peaks if dtype in p]) if self.peaks else None
            rate = 2 * _macs(runs[0]) / np.median(seconds) / 1e9 if seconds else None

            def worst(key, done=done):
                return max((r[key] for r in done if key in r), default=None)

            table.append({
                "stride": stride, "pass": kind, "dtype": dtype, "impl": impl,
                "shape": "{} x {}".format(*branch_shape(*self.size, stride)),
                "seconds": seconds, "first_seconds": [r["first_seconds"] for r in done],
                "gflops": rate, "of_peak": rate / peak if rate and peak else None,
                "peak_gb": worst("peak_gb"),
                "added_gb": max((r["peak_gb"] - r["base_gb"] for r in done), default=None),
                "peak_anon_gb": worst("peak_anon_gb"),
                "added_anon_gb": max((r["peak_anon_gb"] - r["base_anon_gb"] for r in done
                                      if "peak_anon_gb" in r), default=None),
                "vs_ours_fp32": worst("vs_ours_fp32"), "vs_exact": worst("vs_exact"),
                "version": runs[0].get("version"),
                "note": "; ".join(sorted({r.get("error") or r.get("note") or "" for r in runs} - {""})),
            })
        return table

    def markdown(self):
        lines = [f"# {self.machine}",
                 "# matmul peaks per round (GFLOP/s): " + "; ".join(
                     ", ".join(f"{d} {v:.0f}" for d, v in p.items()) for p in self.peaks),
                 "| stride | queries x keys | pass | dtype | impl | s (per round) | first call s "
                 "| GFLOP/s | of matmul peak | peak RSS GB | +GB | peak private GB | +GB "
                 "| max abs diff vs ours fp32 | vs exact (fp64) | note |", "|" + "---|" * 16]
        for row in self.summary():
            lines.append(
                f"| {row['stride']} | {row['shape']} | {row['pass']} | {row['dtype']} | {row['impl']} "
                f"| {' / '.join(f'{s:.2f}' for s in row['seconds']) or '—'} "
                f"| {' / '.join(f'{s:.2f}' for s in row['first_seconds']) or '—'} "
                f"| {_fmt(row['gflops'], '.0f')} | {_fmt(row['of_peak'], '.0%')} "
                f"| {_fmt(row['peak_gb'], '.2f')} | {_fmt(row['added_gb'], '.2f')} "
                f"| {_fmt(row['peak_anon_gb'], '.2f')} | {_fmt(row['added_anon_gb'], '.2f')} "
                f"| {_fmt(row['vs_ours_fp32'], '.1e')} | {_fmt(row['vs_exact'], '.1e')} "
                f"| {row['note']} |")
        return "\n".join(lines)

    def save(self, command):
        from pnen_tf._atomic import write_atomically

        result = {"date": datetime.date.today().isoformat(), "machine": self.machine,
                  "command": command, "size": list(self.size), "key_dim": KEY_DIM,
                  "value_dim": VALUE_DIM, "logit_std": LOGIT_STD, "sample_rows": SAMPLE,
                  "peaks": self.peaks, "summary": self.summary(), "runs": self.runs}
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        write_atomically(self.path, json.dumps(result, indent=1) + "\n")


def _run(run, timeout):
    from benchmarks.measure import run_child

    try:
        return run_child("benchmarks.attention_peers", run, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}


def _dry_run(runs):
    total = 0.0
    print("| # | round | impl | stride | pass | dtype | GMACs per call | calls "
          "| est. s at 200 GFLOP/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for i, run in enumerate(runs, 1):
        if run["impl"] == "peaks":
            print(f"| {i} | {run['round'] + 1} | matmul peaks | | | {', '.join(run['dtypes'])} | | | |")
            continue
        calls = 1 + run["repeats"]
        seconds = calls * 2 * _macs(run) / 200e9
        total += seconds
        print(f"| {i} | {run['round'] + 1} | {run['impl']} | {run['stride']} | {run['pass']} "
              f"| {run['dtype']} | {_macs(run) / 1e9:,.0f} | {calls} | {seconds:,.0f} |")
    print(f"# {len(runs)} processes; attention work alone about {total / 3600:.1f} h at 200 GFLOP/s "
          "(bf16 and PyTorch's padded keys differ; jax_sdpa runs only where it fits)")


def torch_installed():
    """Whether PyTorch (the `bench` extra) can be imported here."""
    return importlib.util.find_spec("torch") is not None


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.attention_peers",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--size", default="500x400", help="HxW of the image (default 500x400)")
    parser.add_argument("--strides", nargs="+", type=int, default=[2, 4, 8])
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--passes", nargs="+", default=list(PASSES), choices=PASSES)
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=DTYPES,
                        help="bfloat16 is dropped where the CPU has no bf16 instructions")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="timed calls after the first")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds for one process")
    parser.add_argument("--matrix-limit-gb", type=float, default=8.0,
                        help="skip jax_sdpa where XLA's buffers (the matrix) would exceed this")
    parser.add_argument("--peak-size", type=int, default=4096, help="side of the peak's matmul")
    parser.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results"))
    parser.add_argument("--dry-run", action="store_true", help="list the runs, run nothing")
    from benchmarks.measure import parse_or_run_child

    args = parse_or_run_child(parser, child, argv)
    height, width = (int(v) for v in args.size.lower().split("x"))
    if "bfloat16" in args.dtypes and not cpu_has_bf16():
        print("# bfloat16 dropped: this CPU has no bf16 instructions")
        args.dtypes = [d for d in args.dtypes if d != "bfloat16"]
    if "torch" in args.impls and not args.dry_run and not torch_installed():
        print("# torch dropped: PyTorch is not installed (pip install '.[bench]')")
        args.impls = [i for i in args.impls if i != "torch"]
    runs = plan(args, height, width)
    if args.dry_run:
        _dry_run(runs)
        return 0
    path = os.path.join(args.results, f"attention-peers-{datetime.date.today().isoformat()}.json")
    command = shlex.join(["python", "-m", "benchmarks.attention_peers",
                          *(sys.argv[1:] if argv is None else argv)])
    report = Report((height, width), path)
    print(f"# one PNB branch at {height}x{width}: queries and keys {KEY_DIM} wide, values "
          f"{VALUE_DIM}, batch 1; torch and jax_sdpa pad queries and keys to {PEER_WIDTH}")
    print("| round | stride | pass | dtype | impl | first call s | s | peak RSS GB "
          "| max abs diff vs ours fp32 | vs exact (fp64) | note |")
    print("|" + "---|" * 11)
    for run in runs:
        result = _run(run, args.timeout)
        if run["impl"] == "peaks" and "error" in result:
            print(f"# matmul peaks failed: {result['error']}")
        report.add(run, result)
        report.save(command)
    print()
    print(report.markdown())
    print(f"\n# results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
