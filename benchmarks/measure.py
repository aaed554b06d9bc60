"""Shared measuring tools for the benchmarks: MAC counts, peak memory in a fresh process, peaks.

FLOPs follow the paper's convention: multiply-accumulates ("GFLOPs" in Tables III-V are GMACs:
RDN's 202.9 G at 96x96 is its 22M weights times 9,216 pixels).
"""

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

import numpy as np


@contextlib.contextmanager
def count_macs(dry_attention=False):
    """Count multiply-accumulates of Conv2D layers and non-local attention while inside.

    Yields a dict whose "conv" and "attention" entries grow as calls run or are traced. The
    attention is seen through `pnen_tf.layers.attention.intercept_attention`; convolutions
    through `Conv2D.convolution_op`, which also serves the non-local blocks' branch-by-branch
    output projections. With `dry_attention` the attention is counted but not computed (zeros
    of the right shape), so the count of a large image costs only its convolutions.
    """
    import keras

    from pnen_tf.layers.attention import intercept_attention

    counts = {"conv": 0, "attention": 0}
    convolution_op = keras.layers.Conv2D.convolution_op

    def counting_convolution(layer, inputs, kernel):
        outputs = convolution_op(layer, inputs, kernel)
        kh, kw, cin, cout = kernel.shape
        counts["conv"] += int(np.prod(outputs.shape[:3])) * kh * kw * cin * cout
        return outputs

    def counting_attention(attend, query_map, key_map, value_map, **options):
        batch, h, w, depth = query_map.shape
        keys = key_map.shape[1] * key_map.shape[2]
        counts["attention"] += batch * h * w * keys * (depth + value_map.shape[3])
        if dry_attention:
            # Zeros computed from the embeddings, not a constant: from a constant, TensorFlow
            # computes whatever follows it and not the image (each branch's output projection)
            # at the start of the graph and holds it: 9 feature maps more at 512x512, a
            # memory the real model never needs.
            ops = keras.ops
            touch = ops.sum(key_map[:, :1, :1]) + ops.sum(value_map[:, :1, :1])
            zeros = ops.broadcast_to(query_map[..., :1] * 0, (batch, h, w, value_map.shape[3]))
            return zeros + ops.cast(touch * 0, zeros.dtype)
        return attend(query_map, key_map, value_map, **options)

    keras.layers.Conv2D.convolution_op = counting_convolution
    try:
        with intercept_attention(counting_attention):
            yield counts
    finally:
        keras.layers.Conv2D.convolution_op = convolution_op


def traced_macs(model, shape):
    """MACs of `model` on an input of `shape`, counted while its forward is traced, not run
    (dry attention): a 2048x2048 image is counted in seconds."""
    import keras

    with count_macs(dry_attention=True) as macs:
        if keras.backend.backend() == "jax":
            import jax

            state = ([v.value for v in model.trainable_variables],
                     [v.value for v in model.non_trainable_variables])
            jax.eval_shape(lambda s, x: model.stateless_call(s[0], s[1], x, training=False)[0],
                           state, jax.ShapeDtypeStruct(shape, "float32"))
        else:
            import tensorflow as tf

            tf.function(lambda x: model(x, training=False)).get_concrete_function(
                tf.TensorSpec(shape, "float32"))
    return macs["conv"] + macs["attention"]


def use_tensor_memory_stats():
    """Make TensorFlow's CPU allocator its BFC allocator (the one it uses on GPUs), whose
    statistics `tensor_memory` reads. Call before TensorFlow is imported."""
    os.environ["TF_CPU_ALLOCATOR_USE_BFC"] = "true"


@contextlib.contextmanager
def tensor_memory():
    """Yields a dict whose "gb" is set on exit: the allocator's peak while inside minus what it
    held on entry (tensors only, rounding included; not the C library's heap, not the code)."""
    import tensorflow as tf

    held = tf.config.experimental.get_memory_info("CPU:0")["current"]
    tf.config.experimental.reset_memory_stats("CPU:0")
    result = {}
    yield result
    result["gb"] = (tf.config.experimental.get_memory_info("CPU:0")["peak"] - held) / 2**30


def peak_rss_gb():
    """Peak resident memory of this process's own address space so far (Linux `VmHWM`).

    Not `getrusage`'s `ru_maxrss`, which Linux carries over `execve`: a process started by
    `subprocess` reported at least its parent's peak (a child of a 2 GB parent that used
    11 MB reported 2.0 GB).
    """
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kib / 2**20


def rss_gb():
    """Resident memory of this process now."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def anon_gb():
    """Private (anonymous) resident memory of this process now (Linux `RssAnon`): the heap,
    tensors and stacks; not the pages of its shared libraries, which RSS also counts and
    other processes share."""
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("RssAnon:"))
    return kib / 2**20


class PeakAnon:
    """The largest `anon_gb` while inside, sampled every `interval` seconds by a thread
    (Linux keeps no high-water mark of it); `.gb` after the block. A peak shorter than the
    interval can be missed: it measures working sets that live for many milliseconds."""

    def __init__(self, interval=0.002):
        self.interval, self.gb = interval, 0.0

    def __enter__(self):
        import threading

        self._stop = threading.Event()
        self.gb = anon_gb()

        def sample():
            while not self._stop.wait(self.interval):
                self.gb = max(self.gb, anon_gb())

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.gb = max(self.gb, anon_gb())
        return False


def peak_device_gb():
    """Peak memory in use on the accelerator under JAX (`memory_stats`), or None (a CPU, whose
    tensors `peak_rss_gb` counts, or a device that keeps no statistics)."""
    import keras

    if keras.backend.backend() != "jax":
        return None
    import jax

    device = jax.devices()[0]
    stats = device.memory_stats() if device.platform != "cpu" else None
    return stats["peak_bytes_in_use"] / 2**30 if stats and "peak_bytes_in_use" in stats else None


def run_child(module, payload, timeout=3600):
    """Run `python -m module --child JSON` in a fresh process (clean peak RSS); its JSON reply."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-m", module, "--child", json.dumps(payload)],
                            capture_output=True, text=True, env=env, timeout=timeout)
    if result.returncode != 0:
        return {"error": result.stderr.strip().splitlines()[-1] if result.stderr else "failed"}
    return json.loads(result.stdout.strip().splitlines()[-1])


def timed(fn, repeats=3):
    """Median wall time of `fn()` over `repeats` runs, after one warm-up run."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def compile_fn(fn):
    """`fn` compiled for the current Keras backend: `tf.function` or `jax.jit`."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        return jax.jit(fn)
    import tensorflow as tf

    return tf.function(fn)


def compiled_forward(model):
    """Inference call of `model`, compiled for the backend, returning a NumPy array."""
    import keras

    if keras.backend.backend() == "jax":
        import jax

        state = ([v.value for v in model.trainable_variables],
                 [v.value for v in model.non_trainable_variables])
        call = jax.jit(lambda s, x: model.stateless_call(s[0], s[1], x, training=False)[0])
        return lambda x: np.asarray(call(state, x))
    fn = compile_fn(lambda x: model(x, training=False))
    return lambda x: keras.ops.convert_to_numpy(fn(x))


def matmul_peak_gflops(dtype="float32", size=4096, repeats=5):
    """Achieved GFLOP/s of a size x size matmul on this backend: the machine's practical peak."""
    import keras

    a = keras.ops.cast(keras.random.normal((size, size)), dtype)
    matmul = compile_fn(lambda x: keras.ops.matmul(x, x))
    seconds = timed(lambda: keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.sum(matmul(a)), "float32")), repeats)
    return 2 * size**3 / seconds / 1e9


def machine():
    import platform

    import keras

    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    device = cpu
    if keras.backend.backend() == "jax":
        import jax

        device = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    return (f"{device}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"Keras {keras.__version__} ({keras.backend.backend()} backend)")


def parse_or_run_child(parser, child, argv):
    """Parse a benchmark's flags; when re-invoked by `run_child`, run `child` and exit instead."""
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        raise SystemExit(0)
    return args
