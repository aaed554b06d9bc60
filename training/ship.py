"""`python -m training.ship RUN NAME --command "..." --benchmarks DIR`: ship a run as a preset.

    python -m training.ship /work/runs/sr-x3 sr-x3 --benchmarks ../shared/datasets \\
        --command "python -m training.fit --task sr --scale 3 ..."

A preset is two files in `pnen_tf/presets/` (`pnen_tf.models.presets`). This writes both
from a finished `training.fit` run: its `best.keras` (the model selected on the held-out
validation split, never on a test set) copied as `NAME.keras`, and the card `NAME.json`,
whose every figure is measured or read here, not typed in:

- parameters, architecture: counted on / read from the model file;
- steps, cpu_hours, validation_curve: the run's `log.csv`, up to the epoch that wrote
  `best.keras` (`cpu_hours` is the wall-clock time of those epochs), preceded by the same of
  the run whose `best.keras` its `--init` named, if any (a fine-tuning's first phase), and so on;
  where the first run started from a shipped preset (`--init NAME`: a fresh machine keeps no
  run folders), that preset's card: its curve up to its `steps`, its `cpu_hours`, and its
  `training_command`, which the new card's continues. A model replaces a shipped preset (a
  fine-tuning of it, of another preset, or a new run) only if it validates better on the same
  validation images;
- results and baseline_results: `training.evaluate` of the model and of its task's baseline
  on each public set that the preset's targets name (Set5, Set12; the blind denoiser at each
  target sigma), measured once, here;
- check: the margin over the baseline on the built-in check image
  (`training.presets.measure_check`), less `CHECK_SLACK` dB, which the package's tests require.

A shipped preset is never replaced without `--replace`; both files are written atomically,
and the card last, after the model loads by name and its check passes.
"""

import argparse
import csv
import json
import math
import os
import platform
import sys
import tempfile

from pnen_tf._atomic import write_atomically

CHECK_SLACK = 0.1  # dB a platform's different rounding may cost the check
# Where the public training sets come from (../shared/datasets/README.md): a user has no
# ../shared, so a card names the origin. Keyed by folder name, or file prefix for a folder of
# links named <set>_<file>.
SOURCES = {
    "Train400": "Train400: 400 gray 180x180 crops of BSD images, DnCNN's and MemNet's "
                "denoising set (github.com/cszn/DnCNN, TrainingCodes/DnCNN_TrainingCodes_v1.0/"
                "data/Train400, commit e93b278)",
    "T91": "T91: 91 RGB images of Yang et al. (github.com/jiny2001/dcscn-super-resolution, "
           "data/yang91, commit d382bc3)",
    "BSD200": "BSD200: the 200 training images of BSD300 (same repository, data/bsd200)",
}


def read_log(run):
    """log.csv's rows, numbers as floats (epoch and step as ints)."""
    with open(os.path.join(run, "log.csv"), newline="") as file:
        rows = list(csv.DictReader(file))
    if not rows:
        raise ValueError(f"{run}/log.csv: no finished epoch")
    return [{k: int(v) if k in ("epoch", "step") else float(v) for k, v in row.items()}
            for row in rows]


def best_epoch(rows):
    """The row whose validation PSNR was best: the epoch that wrote best.keras (the first of
    equal ones, as `training.fit` keeps a model only when it strictly improves)."""
    return max(rows, key=lambda row: (row["val_psnr"], -row["epoch"]))


def lineage(run):
    """The run folders whose epochs trained `run`'s best.keras, earliest first: `run`,
    preceded by the run whose `best.keras` its `--init` named (if that folder has a log), and
    so on."""
    runs = [run]
    while True:
        with open(os.path.join(runs[0], "config.json")) as file:
            init = json.load(file).get("init")
        parent = os.path.dirname(init) if init else None
        if (not init or os.path.basename(init) != "best.keras"
                or not os.path.isfile(os.path.join(parent, "log.csv"))
                or any(os.path.samefile(parent, r) for r in runs)):
            return runs
        runs.insert(0, parent)


def preset_history(run):
    """The shipped preset that the first run of `run`'s lineage started from (`--init NAME`),
    as its card tells it, or None: a fresh machine keeps no run folders, the card keeps their
    figures. {"name", "rows": its validation curve up to its `steps` (the epoch its weights
    come from), "cpu_hours", "command", "hardware"}."""
    from pnen_tf.models.presets import read_card, resolve

    with open(os.path.join(lineage(run)[0], "config.json")) as file:
        init = json.load(file).get("init")
    if not init or resolve(init) == init:  # no --init, or a model file's path
        return None
    card = read_card(init)
    if "validation_curve" not in card:
        raise FileNotFoundError(f"the run started from preset {init!r}, whose card (its "
                                "earlier training) is not in the package")
    return {"name": init, "rows": shipped_curve(card),
            "cpu_hours": card["cpu_hours"], "command": card["training_command"],
            "hardware": card.get("hardware")}


def shipped_curve(card):
    """A preset card's validation curve up to its `steps`: the epochs that trained the weights
    it ships, the last of them theirs."""
    return [r for r in card["validation_curve"] if r["step"] <= card["steps"]]


def training_path(run, history=None):
    """(rows, best): the epochs that trained `run`'s best.keras over its whole lineage, each
    phase up to its best epoch but the last, which is shown whole, with `epoch` and `step`
    counted from the first phase's start and `phase` numbering the runs; and the last phase's
    best row, renumbered the same way. `history` (`preset_history`): the phases before the
    lineage, which it continues."""
    path = list(history["rows"]) if history else []
    epochs, steps, phases = ((path[-1]["epoch"], path[-1]["step"], path[-1]["phase"])
                             if path else (0, 0, 0))
    runs = lineage(run)
    for phase, folder in enumerate(runs, phases + 1):
        rows = read_log(folder)
        best = best_epoch(rows)
        if folder != runs[-1]:
            rows = [r for r in rows if r["epoch"] <= best["epoch"]]
        path += [{**r, "phase": phase, "epoch": r["epoch"] + epochs, "step": r["step"] + steps}
                 for r in rows]
        best = {**best, "epoch": best["epoch"] + epochs, "step": best["step"] + steps}
        epochs, steps = best["epoch"], best["step"]
    return path, best


def training_data(config):
    """(description, sources) of the run's training images and its held-out split."""
    from training import data

    per_folder = data.list_folders(data.folder_list(config["data"]))
    if config.get("val"):
        train, how = sum(per_folder, []), "validated on --val"
    else:
        train, held = data.hold_out(per_folder)
        how = f"{len(held)} held out for validation"
    names = sorted({_set_name(path) for path in train})
    return (f"{' + '.join(names)}: {len(train)} images trained on, {how}",
            "; ".join(SOURCES.get(name, name) for name in names))


def _set_name(path):
    """The public set an image belongs to: its folder's name, or its <set>_ file prefix."""
    folder, file = os.path.basename(os.path.dirname(path)), os.path.basename(path)
    prefix = file.split("_", 1)[0]
    return folder if folder in SOURCES or prefix not in SOURCES else prefix


def measure_sets(model, row, benchmarks):
    """(results, baseline_results): `training.evaluate` on each set the targets name."""
    from training import evaluate
    from training.presets import _LEVEL_FLAGS
    from training.tasks import TASKS

    flag, key = _LEVEL_FLAGS[row["task"]]
    results, baselines = [], []
    for target in row["targets"]:
        level = target.get("sigma", row[key])
        common = ["--task", row["task"], flag, str(level),
                  "--data", os.path.join(benchmarks, target["set"])]
        for source, into in ((["--model", model], results),
                             (["--baseline", TASKS[row["task"]].baseline], baselines)):
            with tempfile.TemporaryDirectory() as out:
                if evaluate.main([*source, *common, "--out", out]):
                    raise RuntimeError(f"evaluating {source[1]} on {target['set']} failed")
                with open(os.path.join(out, "results.json")) as file:
                    scores = json.load(file)["folders"][target["set"]]
            entry = {"set": target["set"], "psnr": round(scores["psnr"], 3),
                     "ssim": round(scores["ssim"], 4)}
            if "sigma" in target:
                entry["sigma"] = target["sigma"]
            if into is baselines:
                entry["method"] = source[1]
            into.append(entry)
    return results, baselines


def architecture(info, model):
    """The card's architecture line from the model's facts (`ModelInfo`) and the model."""
    options = ", ".join(f"{k}={v}" for k, v in sorted((info.options or {}).items())
                        if k not in ("scale", "in_channels"))
    return f"{info.model} ({options}); {model.count_params():,} parameters"


def make_card(run, name, command, benchmarks, history, path, notes=None):
    """The card of run's best.keras as preset `name` (the model file must already be in
    place: measuring loads it by name); `history`: `preset_history(run)`, read before;
    `path`: `training_path(run, history)`."""
    from pnen_tf.models import from_preset
    from pnen_tf.models.presets import PRESETS
    from training.presets import measure_check

    with open(os.path.join(run, "config.json")) as file:
        config = json.load(file)
    model = from_preset(name)  # the run's best.keras, copied in; its facts attached
    rows, best = path
    used = [r for r in rows if r["epoch"] <= best["epoch"] and "seconds" in r]
    earlier_hours = history["cpu_hours"] if history else 0.0
    data_text, sources = training_data(config)
    # The check image first: one image decides a refusal before the benchmark sets run.
    check, base = measure_check(name)
    margin = math.floor((check - base - CHECK_SLACK) * 10) / 10
    if margin <= 0:
        raise ValueError(f"{name}: {check:.2f} dB on the check image against the baseline's "
                         f"{base:.2f}: it does not beat its baseline; not shipped")
    results, baselines = measure_sets(name, PRESETS[name], benchmarks)
    card = {
        "architecture": architecture(model.pnen_tf_info, model),
        "parameters": int(sum(math.prod(w.shape) for w in model.trainable_weights)),
        "training_data": data_text, "training_data_source": sources,
        "training_command": f"{history['command']}\n{command}" if history else command,
        "steps": best["step"],
        "cpu_hours": round(earlier_hours + sum(r["seconds"] for r in used) / 3600, 2),
        "results": results, "baseline_results": baselines,
        "check": {"margin_db": margin, "measured_db": round(check - base, 3)},
        "validation_curve": [{k: round(r[k], 4) for k in ("phase", "epoch", "step", "val_psnr",
                                                           "val_ssim", "baseline_psnr")}
                             for r in rows],
        "hardware": _hardware(history),
    }
    if notes:
        card["notes"] = notes
    return card


def _cpu():
    try:
        with open("/proc/cpuinfo") as file:
            model = next(line.split(":", 1)[1].strip() for line in file
                         if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores, no GPU"


def _hardware(history):
    """This machine; after the machines of the preset's card where its last was another."""
    here = _cpu()
    if not history or not history["hardware"]:
        return here
    if history["hardware"].rsplit("; then ", 1)[-1] == here:
        return history["hardware"]
    return f"{history['hardware']}; then {here}"


def ship(run, name, command, benchmarks, replace=False, notes=None):
    """Copy run/best.keras into the package as preset `name` and write its card."""
    from pnen_tf.models.presets import PRESETS, card_file, is_shipped, weights_file

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    if is_shipped(name) and not replace:
        raise ValueError(f"preset {name!r} is already shipped; pass --replace to replace it")
    source = os.path.join(run, "best.keras")
    if not os.path.isfile(source):
        raise FileNotFoundError(f"{source}: no best.keras in the run folder")
    history = preset_history(run)  # before a --replace of that same preset rewrites its card
    path = training_path(run, history)
    if replace:
        _check_improves(run, name, best=path[1])
    target = weights_file(name)
    previous = _read(target)
    with open(source, "rb") as file:
        write_atomically(target, file.read())
    try:
        card = make_card(run, name, command, benchmarks, history, path, notes)
    except BaseException:  # the package keeps what it shipped before, or nothing
        if previous is None:
            os.remove(target)
        else:
            write_atomically(target, previous)
        raise
    write_atomically(card_file(name),
                     json.dumps(card, indent=2) + "\n")
    return card


def _check_improves(run, name, best):
    """Refuse to replace preset `name` by a model that validates no better than the weights
    it ships: a fine-tuning of the preset itself (whose best.keras, its own best epoch, may
    still lose to the weights it started from), one started from another preset, or a new
    run. Comparable only when the same validation split scored both (the same baseline).
    `best`: the run's best row (`training_path`)."""
    from pnen_tf.models.presets import read_card

    card = read_card(name)
    if "validation_curve" not in card:
        return  # no measured figures to beat
    shipped = shipped_curve(card)[-1]
    if abs(best["baseline_psnr"] - shipped["baseline_psnr"]) > 1e-3:
        raise ValueError(f"{run}: validated on other images than preset {name!r} (baseline "
                         f"{best['baseline_psnr']:.3f} dB against its "
                         f"{shipped['baseline_psnr']:.3f}): whether it improves on the preset "
                         "is unknown; not shipped")
    if best["val_psnr"] <= shipped["val_psnr"]:
        raise ValueError(f"{run}: its best validation PSNR, {best['val_psnr']:.3f} dB, does not "
                         f"improve on preset {name!r}'s {shipped['val_psnr']:.3f}, which it would "
                         "replace; not shipped")


def _read(path):
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as file:
        return file.read()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m training.ship", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="training.fit run folder (config.json, log.csv, best.keras)")
    parser.add_argument("name", help="preset name (pnen-tf presets)")
    parser.add_argument("--command", required=True, help="the training command, as run")
    parser.add_argument("--benchmarks", required=True,
                        help="folder holding the public test sets (Set5/, Set12/)")
    parser.add_argument("--notes", help="text for the card (what was missed, and why)")
    parser.add_argument("--replace", action="store_true", help="replace a shipped preset")
    args = parser.parse_args(argv)
    try:
        card = ship(args.run, args.name, args.command, args.benchmarks, args.replace, args.notes)
    except (OSError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({k: card[k] for k in ("parameters", "steps", "cpu_hours", "results",
                                           "baseline_results", "check")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
