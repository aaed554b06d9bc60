"""PNEN on the CPU runtimes it deploys to: TensorFlow (Keras), ONNX Runtime and OpenVINO.

    python -m benchmarks.deployment                       # untrained build("pnen"), 500x400
    python -m benchmarks.deployment --model pnen.keras --onnx pnen.onnx --rounds 3
    python -m benchmarks.deployment --profile             # where onnxruntime's time goes
    python -m benchmarks.deployment --dry-run             # the processes in order, nothing run

The model is `--model` (a `.keras` file or a preset's name) or, by default, an untrained
`build("pnen")` (64 channels, three PNBs, `keras.utils.set_random_seed(0)`) saved in the work
folder; `--onnx` reuses an exported file, otherwise `export.onnx.export_onnx` converts the
model (and checks it against Keras on its probe images). Runtimes (`--runtimes`), each run in
its own process on one random image of `--size`:

- keras: the model as `export._model.load` reads it (its one output), its forward compiled by
  `benchmarks.measure.compiled_forward`: a `tf.function` traced for the image's static size,
  whose attention tiles are planned for that size (the ONNX file's were fixed at export);
- onnxruntime: the `.onnx` on the CPU execution provider with default session options (all
  graph optimisations, a thread per core); `--profile` adds onnxruntime's profile of the
  runs, summed per operator type (a Loop's time includes the nodes of its body);
- openvino: the `.onnx` read by OpenVINO's runtime, reshaped to the image's shape and
  compiled for the CPU with `INFERENCE_PRECISION_HINT` f32 (its default is bf16 on CPUs with
  AMX); skipped with a note where `openvino` is not installed (`pip install '.[bench]'`).
  OpenVINO 2026.4's ONNX front end refuses tf2onnx's attention loops ("loop body graph
  canonical inputs size (19), does not match ... (11)"): the error is reported in the table;
- openvino_savedmodel: the same runtime on the model's SavedModel (`export.saved_model`),
  converted once by OpenVINO's TensorFlow front end and saved as its IR (float32) while the
  model is prepared ("convert s" in the header line); loading reads the IR.

A process loads the model ("load s"), runs the image once ("first call s": tracing, graph
optimisation and shape inference included) and `--repeats` times more ("s": their median).
Its peak RSS is its own address space's (`measure.peak_rss_gb`; "+GB": above its
RSS once the model was loaded). The runtimes alternate, in an order rotated from round to
round. The error column is the largest |runtime - Keras| over the output, against Keras'
output for the same image.
Results: <results>/deployment-<date>.json, rewritten after every process.
"""

import argparse
import collections
import datetime
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time

import numpy as np

# Before TensorFlow is imported (the results' writer imports pnen_tf): its start-up noise.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RUNTIMES = ("keras", "onnxruntime", "openvino", "openvino_savedmodel")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_INFO = {"model": "pnen", "task": "smooth", "scale": 1, "in_channels": 3, "input": "same"}
TOP_OPS = 12


def _prepare(payload):
    """The `.keras` file (built unless given), the `.onnx` file (exported unless given) and,
    for `openvino_savedmodel`, OpenVINO's IR of the SavedModel."""
    import keras

    from pnen_tf import saving

    keras_path, onnx_path, result = payload["model"], payload["onnx"], {}
    if keras_path is None:
        from pnen_tf.models import build

        keras.utils.set_random_seed(0)
        keras_path = os.path.join(payload["dir"], "pnen.keras")
        saving.save_model(build("pnen"), keras_path, DEFAULT_INFO)
    if onnx_path is None:
        from export.onnx import export_onnx

        onnx_path = os.path.join(payload["dir"], "model.onnx")
        start = time.perf_counter()
        result["probes"] = [str(probe) for probe in export_onnx(keras_path, onnx_path)]
        result["export_seconds"] = time.perf_counter() - start
    if "openvino_savedmodel" in payload["runtimes"] and importlib.util.find_spec("openvino"):
        result.update(_openvino_ir(keras_path, payload["dir"]))
    model = saving.load_model(keras_path)
    return {**result, "keras": keras_path, "onnx": onnx_path,
            "in_channels": model.inputs[0].shape[-1]}


def _openvino_ir(keras_path, directory):
    """The model's SavedModel (`export.saved_model`) converted once by OpenVINO's TensorFlow
    front end and saved as its IR, in float32, as a deployment would ship it."""
    import openvino

    from export.saved_model import export_saved_model

    saved_model = export_saved_model(keras_path, os.path.join(directory, "saved_model"), 1, force=True)
    start = time.perf_counter()
    model = openvino.convert_model(saved_model)
    ir = os.path.join(directory, "openvino", "model.xml")
    openvino.save_model(model, ir, compress_to_fp16=False)
    return {"openvino_ir": ir, "openvino_convert_seconds": time.perf_counter() - start}


# What a runtime's process imports before its clock starts: "load s" is the model's loading.
IMPORTS = {"keras": "export._model", "onnxruntime": "onnxruntime", "openvino": "openvino",
           "openvino_savedmodel": "openvino"}


def _keras(payload, image):
    import keras
    import tensorflow as tf

    from benchmarks.measure import compiled_forward
    from export._model import load

    model, _ = load(payload["keras"])
    return compiled_forward(model), f"TensorFlow {tf.__version__}, Keras {keras.__version__}", dict


def _onnxruntime(payload, image):
    import onnxruntime

    from export.onnx import onnxruntime_session

    options = onnxruntime.SessionOptions()
    if payload["profile"]:
        options.enable_profiling = True
        options.profile_file_prefix = os.path.join(payload["dir"], "ort-profile")
    session = onnxruntime_session(payload["onnx"], options)
    name = session.get_inputs()[0].name

    def run(image):
        return session.run(None, {name: image})[0]

    def finish():
        return {"profile": profile_by_op(session.end_profiling())} if payload["profile"] else {}

    return run, f"onnxruntime {onnxruntime.__version__}", finish


def _openvino(payload, image):
    import openvino

    core = openvino.Core()
    source = payload["onnx"] if payload["runtime"] == "openvino" else payload["openvino_ir"]
    model = core.read_model(source)
    model.reshape(list(image.shape))
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    request = compiled.create_infer_request()

    def run(image):
        return request.infer([image])[compiled.output(0)]

    return run, f"OpenVINO {openvino.__version__}", dict


LOADERS = {"keras": _keras, "onnxruntime": _onnxruntime, "openvino": _openvino,
           "openvino_savedmodel": _openvino}
# Operators whose time includes that of the nodes in their bodies.
CONTAINERS = ("Loop", "If", "Scan")


def profile_by_op(path):
    """onnxruntime's profile (a Chrome trace) summed per operator type: `[op, seconds, count,
    share]` for the `TOP_OPS` largest, largest first. The share is of all nodes' time but the
    containers' (`CONTAINERS`, whose time counts their bodies' nodes again); None for those."""
    with open(path) as f:
        events = json.load(f)
    seconds, counts = collections.Counter(), collections.Counter()
    for event in events:
        if event.get("cat") == "Node" and event.get("name", "").endswith("_kernel_time"):
            op = event.get("args", {}).get("op_name", "?")
            seconds[op] += event["dur"] / 1e6
            counts[op] += 1
    leaves = sum(s for op, s in seconds.items() if op not in CONTAINERS) or 1.0
    return [[op, s, counts[op], None if op in CONTAINERS else s / leaves]
            for op, s in seconds.most_common(TOP_OPS)]


def child(payload):
    os.environ["KERAS_BACKEND"] = "tensorflow"
    if payload["runtime"] == "prepare":
        return _prepare(payload)
    from benchmarks.measure import peak_rss_gb, rss_gb

    runtime = payload["runtime"]
    if importlib.util.find_spec(IMPORTS[runtime].split(".")[0]) is None:
        return {"note": f"skipped: {IMPORTS[runtime]} is not installed (pip install '.[bench]')"}
    if runtime == "openvino_savedmodel" and not payload.get("openvino_ir"):
        return {"note": "skipped: no OpenVINO IR was made"}
    importlib.import_module(IMPORTS[runtime])
    image = np.load(payload["image"])
    start = time.perf_counter()
    run, version, finish = LOADERS[runtime](payload, image)
    load = time.perf_counter() - start
    base = rss_gb()
    start = time.perf_counter()
    out = np.asarray(run(image))
    first = time.perf_counter() - start
    seconds = []
    for _ in range(payload["repeats"]):
        start = time.perf_counter()
        out = np.asarray(run(image))
        seconds.append(time.perf_counter() - start)
    np.save(payload["output"], out.astype(np.float32))
    return {"version": version, "load_seconds": load, "first_seconds": first, "seconds": seconds,
            "peak_gb": peak_rss_gb(), "base_gb": base, **finish()}


def plan(args):
    """Per round, every runtime in an order rotated by the round."""
    runs = []
    for r in range(args.rounds):
        order = args.runtimes[r % len(args.runtimes):] + args.runtimes[: r % len(args.runtimes)]
        runs += [{"runtime": runtime, "round": r, "repeats": args.repeats,
                  "profile": args.profile and runtime == "onnxruntime"} for runtime in order]
    return runs


def _fmt(value, form):
    return "—" if value is None else format(value, form)


def _joined(values, form=".2f"):
    return " / ".join(format(v, form) for v in values) or "—"


def summary(runs, outputs):
    """One row per runtime over the rounds; errors against Keras' first output."""
    keras_runs = [i for i, r in enumerate(runs) if r["runtime"] == "keras" and i in outputs]
    reference = outputs[keras_runs[0]] if keras_runs else None
    rows = {}
    for i, r in enumerate(runs):
        row = rows.setdefault(r["runtime"], {"runtime": r["runtime"], "version": r.get("version"),
                                             "load_seconds": [], "first_seconds": [], "seconds": [],
                                             "peak_gb": None, "added_gb": None, "vs_keras": None,
                                             "notes": set()})
        row["notes"].add(r.get("error") or r.get("note") or "")
        if "seconds" not in r:
            continue
        row["version"] = r["version"]
        row["load_seconds"].append(r["load_seconds"])
        row["first_seconds"].append(r["first_seconds"])
        row["seconds"].append(float(np.median(r["seconds"])) if r["seconds"] else None)
        row["peak_gb"] = max(row["peak_gb"] or 0, r["peak_gb"])
        row["added_gb"] = max(row["added_gb"] or 0, r["peak_gb"] - r["base_gb"])
        if reference is not None and i in outputs:
            error = float(np.max(np.abs(outputs[i] - reference)))
            row["vs_keras"] = max(row["vs_keras"] or 0, error)
    for row in rows.values():
        row["notes"] = "; ".join(sorted(row["notes"] - {""}))
    return list(rows.values())


def markdown(result):
    lines = [f"# {result['machine']}; PNEN on a {result['size'][0]}x{result['size'][1]} image",
             "| runtime | version | load s | first call s | s | peak RSS GB | +GB "
             "| max abs diff vs Keras | note |", "|" + "---|" * 9]
    for row in result["summary"]:
        steady = [s for s in row["seconds"] if s is not None]
        lines.append(f"| {row['runtime']} | {row['version'] or '—'} | {_joined(row['load_seconds'])} "
                     f"| {_joined(row['first_seconds'])} | {_joined(steady)} "
                     f"| {_fmt(row['peak_gb'], '.2f')} | {_fmt(row['added_gb'], '.2f')} "
                     f"| {_fmt(row['vs_keras'], '.1e')} | {row['notes']} |")
    profiled = [r for r in result["runs"] if r.get("profile")]
    if profiled:
        lines += ["", "onnxruntime's time per operator type, all calls of the last profiled "
                  "process (a Loop's time includes its body's nodes):",
                  "| op | s | nodes run | share of the nodes' time |", "|---|---|---|---|"]
        lines += [f"| {op} | {s:.2f} | {n} | {_fmt(share, '.0%')} |"
                  for op, s, n, share in profiled[-1]["profile"]]
    return "\n".join(lines)


def _run(payload, timeout):
    from benchmarks.measure import run_child

    try:
        return run_child("benchmarks.deployment", payload, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.deployment",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--model", help="a .keras file or preset name (default: untrained "
                                        "build('pnen'), seed 0)")
    parser.add_argument("--onnx", help="an exported .onnx of the model (default: export it)")
    parser.add_argument("--size", default="500x400", help="HxW of the image (default 500x400)")
    parser.add_argument("--runtimes", nargs="+", default=list(RUNTIMES), choices=RUNTIMES)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="timed calls after the first")
    parser.add_argument("--profile", action="store_true", help="onnxruntime's time per operator type")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds for one process")
    parser.add_argument("--work-dir", help="keep the model, the .onnx and the outputs here "
                                           "(default: a temporary folder)")
    parser.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results"))
    parser.add_argument("--dry-run", action="store_true", help="list the processes, run nothing")
    from benchmarks.measure import parse_or_run_child

    args = parse_or_run_child(parser, child, argv)
    height, width = (int(v) for v in args.size.lower().split("x"))
    runs = plan(args)
    if args.dry_run:
        print(f"prepare: {'load ' + args.model if args.model else 'build pnen (seed 0)'}; "
              f"{'reuse ' + args.onnx if args.onnx else 'export ONNX (export.onnx.export_onnx)'}"
              + ("; SavedModel to OpenVINO IR" if "openvino_savedmodel" in args.runtimes else ""))
        for i, run in enumerate(runs, 1):
            print(f"{i}. round {run['round'] + 1}: {run['runtime']} at {height}x{width}, "
                  f"{1 + run['repeats']} calls" + (" (profiled)" if run["profile"] else ""))
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        work = os.path.abspath(args.work_dir or scratch)
        os.makedirs(work, exist_ok=True)
        return _measure(args, argv, runs, work, height, width)


def _absolute(path):
    """An existing file's absolute path (the children run elsewhere); a preset's name as is."""
    return os.path.abspath(path) if path and os.path.exists(path) else path


def _measure(args, argv, runs, work, height, width):
    from pnen_tf._atomic import write_atomically

    prepared = _run({"runtime": "prepare", "model": _absolute(args.model),
                     "onnx": _absolute(args.onnx), "dir": work, "runtimes": args.runtimes},
                    args.timeout)
    if "error" in prepared:
        print(f"error: preparing the model failed: {prepared['error']}", file=sys.stderr)
        return 1
    facts = [f"model {prepared['keras']}", f"ONNX {prepared['onnx']}"] + prepared.get("probes", [])
    if "openvino_ir" in prepared:
        seconds = prepared["openvino_convert_seconds"]
        facts.append(f"OpenVINO IR from the SavedModel, convert s {seconds:.1f}")
    print("# " + "; ".join(facts))
    image_path = os.path.join(work, "image.npy")
    np.save(image_path, np.random.default_rng(0).random(
        (1, height, width, prepared["in_channels"])).astype(np.float32))
    from benchmarks.measure import machine

    result = {"date": datetime.date.today().isoformat(), "machine": machine(),
              "command": shlex.join(["python", "-m", "benchmarks.deployment",
                                     *(sys.argv[1:] if argv is None else argv)]),
              "size": [height, width], "prepared": prepared, "runs": [], "summary": []}
    path = os.path.join(args.results, f"deployment-{result['date']}.json")
    os.makedirs(args.results, exist_ok=True)
    outputs = {}
    for i, run in enumerate(runs):
        output = os.path.join(work, f"out-{i}.npy")
        payload = {**run, "keras": prepared["keras"], "onnx": prepared["onnx"], "dir": work,
                   "openvino_ir": prepared.get("openvino_ir"), "image": image_path, "output": output}
        r = {**run, **_run(payload, args.timeout)}
        if "seconds" in r:
            outputs[i] = np.load(output)
        result["runs"].append(r)
        result["summary"] = summary(result["runs"], outputs)
        write_atomically(path, json.dumps(result, indent=1) + "\n")
        steady = _fmt(float(np.median(r["seconds"])) if r.get("seconds") else None, ".2f")
        print(f"# round {run['round'] + 1}, {run['runtime']}: first call "
              f"{_fmt(r.get('first_seconds'), '.2f')} s, then {steady} s, peak RSS "
              f"{_fmt(r.get('peak_gb'), '.2f')} GB {r.get('error') or r.get('note') or ''}", flush=True)
    print(markdown(result))
    print(f"\n# results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
