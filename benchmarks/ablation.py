"""The ablations of Tables II-IV, measured at a size a CPU trains: one budget for every variant.

    python -m benchmarks.ablation --study smoothing --seeds 0 1    # Tables II-III: PNEN, L0
    python -m benchmarks.ablation --study denoising --seeds 0 1    # Table IV: MemNet, sigma 50
    python -m benchmarks.ablation --study smoothing --dry-run      # the commands, nothing run

Every (variant, seed) is one `python -m training.fit` run in <root>/<study>/<variant>-seed<k>
with the study's data, patch, batch, steps, constant learning rate and validation crops; only
the variant's flags and the seed differ. The rows that carry the paper's claims run every
--seeds, the others the first. A study may be stopped at any point and started again: a run
whose log.csv reaches its last epoch and that has best.keras is skipped, a run with a
config.json is continued (--resume), and --steps may grow between invocations (more epochs of
the same length). Each run's best.keras is evaluated once by `python -m training.evaluate` on
the study's test set (Set5 against the L0 filter's output; Set12 with sigma-50 noise), as is
the untrained baseline once (the unfiltered image; the noisy input), each
variant's cost (parameters, GMACs at the training patch, training-step memory, s/step) once by
`benchmarks.cost` in a fresh process. Results: <results>/ablation-<study>.json and .md.
"""

import argparse
import csv
import dataclasses
import datetime
import json
import math
import os
import shlex
import subprocess
import sys

import numpy as np

# Before TensorFlow is imported (by training.config): keep its start-up noise out of the table.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pnen_tf._atomic import write_atomically  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    flags: tuple
    claim: bool = False  # carries a claim of the paper: trained with every seed
    paper: tuple = ()  # the paper's (PSNR, SSIM) for this row, where it gives them


@dataclasses.dataclass(frozen=True)
class Study:
    train: tuple  # folders of <datasets>/train joined into one training set
    test: str  # benchmark folder of <datasets>
    flags: tuple  # training.fit flags shared by every variant
    steps: int
    steps_per_epoch: int
    variants: tuple
    claims: tuple  # (variant, variant) pairs whose difference the paper claims
    paper: str
    baseline: tuple  # `training.evaluate` flags of the untrained baseline on the test set


def _pnb(*scales):
    return ("--nonlocal", "pnb", "--nonlocal-scales", *map(str, scales))


def _constant_lr(lr):
    # --min-lr = --lr: the paper's plateau rule would halve it at different epochs for
    # different variants, noise in a comparison of short runs.
    return ("--lr", lr, "--min-lr", lr)


COMMON = ("--val-crop", "96", "--patch", "48", "--batch", "8")
STUDIES = {
    "smoothing": Study(
        train=("T91", "BSD200"), test="Set5", steps=2000, steps_per_epoch=100,
        flags=("--task", "smooth", "--filter", "l0", "--model", "pnen", "--channels", "16",
               "--num-groups", "3", "--identity-start", *_constant_lr("2e-4"), *COMMON),
        variants=(Variant("none", ("--nonlocal", "none"), True, (31.95, 0.9665)),
                  Variant("pnb-2", _pnb(2), False, (32.57, 0.9706)),
                  Variant("pnb-4", _pnb(4), False, (33.17, 0.9708)),
                  Variant("pnb-8", _pnb(8), False, (32.87, 0.9707)),
                  Variant("pnb-2-4", _pnb(2, 4), False, (33.21, 0.9720)),
                  Variant("pnb-2-4-8", ("--nonlocal", "pnb"), True, (33.44, 0.9741)),
                  Variant("nlb", ("--nonlocal", "nlb"), True, (32.40, None)),
                  Variant("apnb", ("--nonlocal", "apnb"), True, (32.10, None))),
        claims=(("pnb-2-4-8", "none"), ("pnb-2-4-8", "nlb"), ("pnb-2-4-8", "apnb"),
                ("pnb-2-4-8", "pnb-2"), ("pnb-2-4-8", "pnb-4"), ("pnb-2-4-8", "pnb-8")),
        paper="Tables II-III: PNEN at C = 64, 96x96 patches; PSNR/SSIM against the L0 filter",
        baseline=("--task", "smooth", "--filter", "l0", "--baseline", "identity")),
    "denoising": Study(
        train=("Train400",), test="Set12", steps=1000, steps_per_epoch=100,
        flags=("--task", "denoise", "--sigma", "50", "--model", "memnet", "--channels", "32",
               "--num-memory-blocks", "6", "--num-recursions", "2", *_constant_lr("5e-4"),
               *COMMON),
        variants=(Variant("plain", ("--nonlocal", "none"), True, (27.38, None)),
                  Variant("deeper", ("--nonlocal", "none", "--deeper"), True, (27.42, None)),
                  Variant("nlb", ("--nonlocal", "nlb"), True, (27.41, None)),
                  Variant("pnb", ("--nonlocal", "pnb"), True, (27.49, None))),
        claims=(("pnb", "plain"), ("pnb", "deeper"), ("pnb", "nlb")),
        paper="Table IV: MemNet M6R6 at C = 64; Set12 PSNR at sigma 50",
        baseline=("--task", "denoise", "--sigma", "50", "--baseline", "noisy")),
}
METRICS = ("val_psnr", "val_ssim", "test_psnr", "test_ssim", "s_per_step")
VALIDATION_EVERY = 20  # every 20th image of the sorted training folders validates


def execute(command, log_path):
    """Run `command` from the repository, its output appended to `log_path`; the exit status."""
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "a") as log:
        log.write(f"$ {shlex.join(command)}\n")
        log.flush()
        return subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT).returncode


def measure_cost(payload):
    """`benchmarks.cost`'s measurement of one model, in a fresh process."""
    from benchmarks.measure import run_child

    return run_child("benchmarks.cost", payload)


def prepare_data(study, datasets, folder, create=True):
    """Training and validation folders of links to the study's images (made once): names
    prefixed by their set, every VALIDATION_EVERY-th image of the sorted list held out."""
    train, val = os.path.join(folder, "train"), os.path.join(folder, "val")
    sources = [os.path.join(datasets, "train", name) for name in study.train]
    missing = [f for f in sources + [os.path.join(datasets, study.test)] if not os.path.isdir(f)]
    if missing:
        raise FileNotFoundError(f"no image folder at {', '.join(missing)} (see --datasets)")
    if os.path.isdir(folder) or not create:
        return train, val
    from pnen_tf.image_io import list_images

    paths = [path for source in sources for path in list_images(source)]
    staging = f"{folder}.tmp-{os.getpid()}"
    for index, path in enumerate(paths):
        split = os.path.join(staging, "val" if index % VALIDATION_EVERY == 0 else "train")
        os.makedirs(split, exist_ok=True)
        set_name = os.path.basename(os.path.dirname(path))
        link = os.path.join(split, f"{set_name}-{os.path.basename(path)}")
        os.symlink(os.path.abspath(path), link)
    os.makedirs(os.path.dirname(folder), exist_ok=True)
    os.rename(staging, folder)
    return train, val


def schedule(study, steps):
    """(epochs, steps per epoch) for `steps` training steps."""
    per_epoch = min(study.steps_per_epoch, steps)
    return math.ceil(steps / per_epoch), per_epoch


def fit_command(study, variant, seed, data, steps, out):
    epochs, per_epoch = schedule(study, steps)
    return [sys.executable, "-m", "training.fit", *study.flags, *variant.flags,
            "--data", data[0], "--val", data[1], "--epochs", str(epochs),
            "--steps-per-epoch", str(per_epoch), "--seed", str(seed), "--out", out]


def run_folder(args, variant, seed):
    return os.path.join(args.root, args.study, f"{variant}-seed{seed}")


def log_rows(run):
    path = os.path.join(run, "log.csv")
    if not os.path.isfile(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def run_state(run, epochs):
    """"finished", "resume" (a run to continue) or "new"."""
    rows = log_rows(run)
    finished = rows and int(rows[-1]["epoch"]) >= epochs
    if finished and os.path.isfile(os.path.join(run, "best.keras")):
        return "finished"
    return "resume" if os.path.isfile(os.path.join(run, "config.json")) else "new"


def unknown_flags(command):
    """Flags of a `training.fit` command that its parser does not know."""
    from training.config import parser

    return parser().parse_known_args(command[3:])[1]


def evaluate(folder, source, test_folder, since=0.0):
    """`training.evaluate` of `source` (its --model or --baseline flags) on the test set into
    <folder>/eval unless a report newer than `since` is there; the report's path, or None when
    the evaluation failed."""
    report = os.path.join(folder, "eval", "results.json")
    if os.path.isfile(report) and os.path.getmtime(report) >= since:
        return report
    command = [sys.executable, "-m", "training.evaluate", *source,
               "--data", test_folder, "--out", os.path.dirname(report)]
    return report if execute(command, os.path.join(folder, "eval.log")) == 0 else None


def evaluate_run(run, test_folder):
    """`evaluate` of the run's best.keras, again whenever it was saved after the report."""
    model = os.path.join(run, "best.keras")
    return evaluate(run, ("--model", model), test_folder, os.path.getmtime(model))


def report_scores(report):
    """(PSNR, SSIM) over the test set of a `training.evaluate` report."""
    with open(report) as f:
        test = next(iter(json.load(f)["folders"].values()))
    return test["psnr"], test["ssim"]


def run_result(run, seed, report, per_epoch):
    """One run's scores: the best validation epoch's (best.keras's) and the test set's."""
    rows = log_rows(run)
    best = max(rows, key=lambda r: float(r["val_psnr"]))
    test_psnr, test_ssim = report_scores(report)
    seconds = float(np.median([float(r["seconds"]) for r in rows]))
    return {"seed": seed, "status": "finished", "epochs": len(rows),
            "steps": int(rows[-1]["step"]), "val_psnr": float(best["val_psnr"]),
            "val_ssim": float(best["val_ssim"]), "test_psnr": test_psnr,
            "test_ssim": test_ssim, "s_per_step": seconds / per_epoch}


def variant_cost(command, cache):
    """`measure_cost` of the model a fit command builds, at its batch and patch (cached)."""
    from training.config import build_options, parser, resolve

    config = resolve(parser().parse_args(command[3:]))
    payload = {"family": config["model"], "options": build_options(config),
               "batch": config["batch"], "patch": config["patch"]}
    payload = json.loads(json.dumps(payload))  # as the cache reads back: tuples become lists
    if os.path.isfile(cache):
        with open(cache) as f:
            saved = json.load(f)
        if saved["payload"] == payload and "error" not in saved["result"]:
            return saved["result"]
    result = measure_cost(payload)
    os.makedirs(os.path.dirname(cache), exist_ok=True)
    write_atomically(cache, json.dumps({"payload": payload, "result": result}, indent=2))
    return result


def summarise(values):
    """Mean, sample standard deviation, range and count of the seeds' values (None if none)."""
    values = [v for v in values if v is not None]
    if not values:
        return None
    sd = float(np.std(values, ddof=1)) if len(values) > 1 else None
    return {"mean": float(np.mean(values)), "sd": sd, "min": min(values), "max": max(values),
            "n": len(values), "values": values}


def difference(a, b):
    """{"delta": mean(a) - mean(b), "note"}: within seed noise when the seeds' ranges overlap,
    beyond it when they do not, unknown noise when either side has one seed."""
    if a is None or b is None:
        return None
    note = ("one seed: noise unknown" if min(a["n"], b["n"]) < 2 else
            "within seed noise" if a["min"] <= b["max"] and b["min"] <= a["max"] else
            "beyond seed noise")
    return {"delta": a["mean"] - b["mean"], "note": note}


def run_variant(args, study, variant, data):
    """Train (or skip, or continue) and evaluate every seed of one variant; its runs."""
    seeds = args.seeds if variant.claim else args.seeds[:1]
    epochs, per_epoch = schedule(study, args.steps)
    runs = []
    for seed in seeds:
        run = run_folder(args, variant.name, seed)
        command = fit_command(study, variant, seed, data, args.steps, run)
        state = run_state(run, epochs)
        if state == "resume":
            command.append("--resume")
        missing = unknown_flags(command)
        if args.dry_run or missing:
            blocked = f"; blocked: training.fit lacks {' '.join(missing)}" if missing else ""
            print(f"# {variant.name} seed {seed}: {state}{blocked}\n{shlex.join(command)}",
                  flush=True)
            runs.append({"seed": seed, "status": "blocked" if missing else state})
            continue
        if state != "finished":
            print(f"{variant.name} seed {seed}: training ({state})", flush=True)
            if execute(command, os.path.join(run, "fit.log")) != 0:
                runs.append({"seed": seed, "status": f"failed: see {run}/fit.log"})
                continue
        report = evaluate_run(run, os.path.join(args.datasets, study.test))
        runs.append(run_result(run, seed, report, per_epoch) if report else
                    {"seed": seed, "status": f"evaluation failed: see {run}/eval.log"})
    return runs, command


def collect(args, study, data):
    """Every selected variant's runs, cost and summary; the claims' differences."""
    rows = []
    for variant in study.variants:
        if args.variants and variant.name not in args.variants:
            continue
        runs, command = run_variant(args, study, variant, data)
        cost = None
        if not args.dry_run and not any(r["status"] == "blocked" for r in runs):
            cache = os.path.join(args.root, args.study, "cost", f"{variant.name}.json")
            cost = variant_cost(command, cache)
        paper = dict(zip(("psnr", "ssim"), variant.paper)) or None
        rows.append({"variant": variant.name, "flags": list(variant.flags),
                     "claim": variant.claim, "paper": paper, "runs": runs, "cost": cost,
                     "summary": {m: summarise([r.get(m) for r in runs]) for m in METRICS}})
    by_name = {row["variant"]: row["summary"]["test_psnr"] for row in rows}
    claims = [{"better": a, "than": b, **found} for a, b in study.claims
              if (found := difference(by_name.get(a), by_name.get(b)))]
    return rows, claims


def baseline_scores(args, study, rows):
    """The untrained baseline's (unfiltered image, noisy input) scores beside finished runs
    (None without one): on the test set, evaluated once, and on the validation split, as the
    runs' logs record them."""
    finished = next((run_folder(args, row["variant"], run["seed"]) for row in rows
                     for run in row["runs"] if run["status"] == "finished"), None)
    if finished is None:
        return None
    first_epoch = log_rows(finished)[0]
    scores = {"name": study.baseline[-1], "flags": list(study.baseline),
              "val_psnr": float(first_epoch["baseline_psnr"]),
              "val_ssim": float(first_epoch["baseline_ssim"])}
    folder = os.path.join(args.root, args.study, "baseline")
    report = evaluate(folder, study.baseline, os.path.join(args.datasets, study.test))
    if report:
        scores["test_psnr"], scores["test_ssim"] = report_scores(report)
    return scores


def _stat(summary, digits):
    """"mean ± sd" of a summary ("mean" for one seed, "—" for none)."""
    if summary is None:
        return "—"
    text = f"{summary['mean']:.{digits}f}"
    return text + (f" ± {summary['sd']:.{digits}f}" if summary["sd"] is not None else "")


def _cost(cost, key, form):
    return format(cost[key], form) if key in (cost or {}) else "—"


def _baseline_line(base, reference):
    """The table's row of the untrained baseline: scores only, its Δ to the first variant."""
    def value(key, digits):
        return f"{base[key]:.{digits}f}" if key in base else "—"

    delta = (f"{base['test_psnr'] - reference['mean']:+.2f}"
             if reference and "test_psnr" in base else "—")
    return "| " + " | ".join([f"{base['name']} (untrained baseline)", *["—"] * 6,
                              value("val_psnr", 2), value("val_ssim", 4), value("test_psnr", 2),
                              value("test_ssim", 4), delta, "—"]) + " |"


def markdown(result):
    """The study's table: one row a variant, cost columns, scores over seeds, the paper's."""
    study, rows = STUDIES[result["study"]], result["rows"]
    first = rows[0]
    reference = first["summary"]["test_psnr"]
    lines = [f"### Ablation: {result['study']} ({study.paper})", "",
             f"{result['machine']}; {result['date']}; `{result['command']}`; "
             f"{result['steps']} steps ({result['epochs']} x {result['steps_per_epoch']}), "
             f"`{' '.join(study.flags)}`", "",
             "| variant | seeds | params | GMACs | train-step GB | s/step (cost) "
             f"| s/step (training) | val PSNR | val SSIM | {study.test} PSNR | {study.test} SSIM "
             f"| Δ PSNR vs {first['variant']} | paper PSNR / SSIM |", "|" + "---|" * 13]
    if result.get("baseline"):
        lines.append(_baseline_line(result["baseline"], reference))
    for row in rows:
        s, cost, paper = row["summary"], row["cost"], row["paper"] or {}
        done = sum(r["status"] == "finished" for r in row["runs"])
        seeds = f"{done}/{len(row['runs'])}" + ("" if done else f" ({row['runs'][0]['status']})")
        delta = None if row is first else difference(s["test_psnr"], reference)
        lines.append("| " + " | ".join([
            row["variant"], seeds, _cost(cost, "params", ","), _cost(cost, "gmacs", ".2f"),
            _cost(cost, "train_gb", ".2f"), _cost(cost, "step_s", ".2f"),
            _stat(s["s_per_step"], 2), _stat(s["val_psnr"], 2), _stat(s["val_ssim"], 4),
            _stat(s["test_psnr"], 2), _stat(s["test_ssim"], 4),
            f"{delta['delta']:+.2f} {delta['note']}".strip() if delta else "—",
            " / ".join("—" if paper.get(k) is None else f"{paper[k]:g}"
                       for k in ("psnr", "ssim")),
        ]) + " |")
    lines += ["", "Mean ± sample standard deviation over the seeds; a difference is within seed "
              "noise when the two rows' per-seed ranges overlap, beyond it when they do not.", ""]
    lines += [f"- {c['better']} − {c['than']}: {c['delta']:+.2f} dB {study.test} PSNR"
              + (f" ({c['note']})" if c["note"] else "") for c in result["claims"]]
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.ablation",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--study", choices=list(STUDIES), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1],
                        help="seeds of the claim rows; the other rows train with the first")
    parser.add_argument("--steps", type=int, help="training steps per run (default: the study's)")
    parser.add_argument("--variants", nargs="+", help="only these variants (default: all)")
    parser.add_argument("--root", default=os.path.join(os.path.expanduser("~"), "pnen-ablation"),
                        help="folder of the run folders and the joined training sets")
    parser.add_argument("--datasets",
                        default=os.path.join(os.path.dirname(REPO), "shared", "datasets"),
                        help="folder holding train/<set> and the test sets")
    parser.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results"))
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = parser.parse_args(argv)
    study = STUDIES[args.study]
    args.steps = args.steps or study.steps
    unknown = set(args.variants or ()) - {v.name for v in study.variants}
    if unknown or args.steps < 1:
        parser.error(f"unknown variants {sorted(unknown)}" if unknown else
                     "--steps must be positive")
    try:
        data = prepare_data(study, args.datasets, os.path.join(args.root, "data", args.study),
                            create=not args.dry_run)
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    rows, claims = collect(args, study, data)
    if args.dry_run:
        return 0
    from benchmarks.measure import machine

    epochs, per_epoch = schedule(study, args.steps)
    command = ["python", "-m", "benchmarks.ablation", *(sys.argv[1:] if argv is None else argv)]
    result = {"study": args.study, "machine": machine(), "date": datetime.date.today().isoformat(),
              "command": shlex.join(command), "steps": epochs * per_epoch, "epochs": epochs,
              "steps_per_epoch": per_epoch, "flags": list(study.flags),
              "baseline": baseline_scores(args, study, rows), "rows": rows, "claims": claims}
    os.makedirs(args.results, exist_ok=True)
    stem = os.path.join(args.results, f"ablation-{args.study}")
    table = markdown(result)
    write_atomically(stem + ".json", json.dumps(result, indent=2) + "\n")
    write_atomically(stem + ".md", table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
