"""PSNR/SSIM of a model or a baseline on benchmark folders, as in the paper's Tables I, IV, V.

    python -m training.evaluate --task sr --scale 3 --baseline bicubic --data Set5 Set14
    python -m training.evaluate --model rdn_sigma30.keras --task denoise --sigma 30 \\
        --data Set12 --out results/ --save restored/

Whole images, never tiles. Each ground-truth image x (8-bit; 16-bit files are rounded to
8 bits, alpha is dropped) gives a network input and a target by its task's protocol, the
same code that makes the task's training pairs (`training.tasks`: sr, denoise, smooth, jpeg;
each module's docstring states its protocol), and is measured as the task says (Y channel,
shave). Outputs are clipped and rounded to 8 bits before measuring, as a saved PNG would be
(`pnen_tf.metrics`). Baselines: `bicubic` (sr), `noisy` (denoise: the noisy input itself),
`identity` (smooth: the unfiltered input), `jpeg` (jpeg: the decoded JPEG image).
"""

import argparse
import contextlib
import csv
import io
import json
import os
import sys

import numpy as np

from pnen_tf import image_io
from pnen_tf._atomic import write_atomically
from pnen_tf.apps._outputs import (name_preferences, output_folder,
                                   refuse_overwriting_inputs, unique_names)
from pnen_tf.metrics import calculate_psnr, calculate_ssim, gaussian_window
from pnen_tf.model_info import ModelInfo
from training.tasks import BASELINES, TASKS, configure

REPORTS = ("per_image.csv", "results.json")
# The settings `training.evaluate` takes, one per task (--scale, --sigma, --filter, ...).
SETTINGS = tuple(task.setting for task in TASKS.values())


def degrade(args, path, truth):
    """(network input float32 in [0, 1], target uint8) for the ground truth `truth` (uint8),
    by the protocol of `args.task` (`training.tasks`)."""
    return configure(vars(args)).evaluation_pair(path, truth)


def baseline(name, scale=1):
    """The restore function of a baseline (bicubic upscaling, the input unchanged)."""
    return configure({"task": BASELINES[name], "scale": scale}).restore_baseline


def check_size(args, path, truth):
    """Refuse, naming its real size, an image too small for the protocol: the measured part
    (cropped to a multiple of the scale, shaved) must hold SSIM's window, an LR input 2x2."""
    height, width = truth.shape[:2]
    window = len(gaussian_window())
    need = max(window + 2 * args.shave, 2 * args.scale)
    if min(height - height % args.scale, width - width % args.scale) < need:
        raise ValueError(f"{path}: image is {width}x{height} pixels, too small: {args.task} "
                         f"x{args.scale} with {args.shave} pixels shaved needs {need}x{need}")


def measure(args, path, restore):
    """(PSNR, SSIM, restored uint8) of one image; raises `ValueError` naming a bad file."""
    truth = image_io.to_integers(image_io.read_image(path).pixels)
    check_size(args, path, truth)
    pixels, target = degrade(args, path, truth)
    restored = image_io.to_integers(restore(pixels))
    if restored.shape != target.shape:
        raise ValueError(f"{path}: restored shape {restored.shape} != target {target.shape}")
    y = args.test_y_channel
    return (calculate_psnr(target, restored, args.shave, y),
            calculate_ssim(target, restored, args.shave, y), restored)


def benchmark_sets(folders):
    """{set name: (folder, its images)}; names are the folders' own, made unique (two
    folders called Set5 give Set5 and Set5_2), as they name the reports' rows and --save's
    subfolders."""
    names = unique_names([[os.path.basename(os.path.normpath(f))] for f in folders])
    return {name: (folder, _images_in(folder)) for name, folder in zip(names, folders)}


def _images_in(folder):
    """The images of a benchmark folder; none for a path that is not a folder (reported)."""
    return image_io.list_images(folder) if os.path.isdir(folder) else []


def saved_paths(save_dir, name, paths):
    """Where `--save` writes the restored images of the set `name`: unique PNG names."""
    stems = unique_names([name_preferences(path) for path in paths])
    return [os.path.join(save_dir, name, stem + ".png") for stem in stems]


def evaluate_folder(args, folder, restore, paths=None, name=None):
    """Per-image rows {'image', 'psnr', 'ssim'} and the number of images that failed.

    `paths` are the folder's images (default: listed now), `name` the set's name, which
    names its `--save` subfolder (default: the folder's own).
    """
    if paths is None:
        paths = _images_in(folder)
    name = name or os.path.basename(os.path.normpath(folder))
    if not paths:
        print(f"error: {folder}: not a folder with images", file=sys.stderr)
        return [], 1
    rows = []
    targets = saved_paths(args.save, name, paths) if args.save else [None] * len(paths)
    for path, target in zip(paths, targets):
        try:
            rows.append(evaluate_image(args, path, target, restore))
        except ValueError as error:  # one line naming the file; the others go on
            print(f"error: {error}", file=sys.stderr)
    return rows, len(paths) - len(rows)


def evaluate_image(args, path, target, restore):
    """The row {'image', 'psnr', 'ssim'} of one image, its restoration saved to `target`
    unless None; `ValueError` naming the file and whether reading, the model or writing
    failed."""
    try:
        psnr, ssim, restored = measure(args, path, restore)
    except ValueError as error:  # ImageReadError, too small, NaN output, wrong shape
        raise ValueError(str(error) if path in str(error) else f"{path}: {error}") from None
    except Exception as error:  # a model failure on one image must not stop the others
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"{path}: model failed: {first_line}") from None
    if target:
        try:
            image_io.write_image(target, restored / 255.0)
        except OSError as error:
            raise ValueError(f"{path}: cannot write {target}: {error.strerror or error}") \
                from None
    return {"image": os.path.basename(path), "psnr": psnr, "ssim": ssim}


def format_table(folder, rows):
    """A per-image PSNR/SSIM table with the average last, as the paper reports averages."""
    lines = [f"{folder}", f"{'image':<24} {'PSNR':>8} {'SSIM':>7}"]
    lines += [f"{r['image']:<24} {r['psnr']:>8.2f} {r['ssim']:>7.4f}" for r in rows]
    if rows:
        lines.append(f"{'average':<24} {np.mean([r['psnr'] for r in rows]):>8.2f} "
                     f"{np.mean([r['ssim'] for r in rows]):>7.4f}")
    return "\n".join(lines)


def write_reports(out_dir, config, results):
    """`per_image.csv` (folder, image, psnr, ssim) and `results.json` (config + averages)."""
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(["folder", "image", "psnr", "ssim"])
    for folder, rows in results.items():
        writer.writerows([folder, r["image"], f"{r['psnr']:.4f}", f"{r['ssim']:.6f}"] for r in rows)
    write_atomically(os.path.join(out_dir, REPORTS[0]), table.getvalue())
    summary = {name: {"psnr": float(np.mean([r["psnr"] for r in rows])) if rows else None,
                      "ssim": float(np.mean([r["ssim"] for r in rows])) if rows else None,
                      "images": rows} for name, rows in results.items()}
    report = json.dumps({"config": config, "folders": summary}, indent=2)
    write_atomically(os.path.join(out_dir, REPORTS[1]), report + "\n")


def add_arguments(parser):
    parser.add_argument("--task", choices=tuple(TASKS), help="default: the model's recorded task")
    for task in TASKS.values():
        task.add_evaluate_flags(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help=".keras file, SavedModel directory or preset name "
                                        "(pnen-tf presets)")
    source.add_argument("--baseline", choices=BASELINES)
    parser.add_argument("--data", nargs="+", required=True, metavar="DIR",
                        help="benchmark folders of ground-truth images")
    parser.add_argument("--out", help="folder for per_image.csv and results.json")
    parser.add_argument("--save", help="folder for the restored images (one subfolder per set; "
                                       "never one holding the ground truth)")
    parser.add_argument("--test-y-channel", action=argparse.BooleanOptionalAction,
                        help="measure RGB on BT.601 Y (default: yes for sr, no otherwise)")
    parser.add_argument("--shave", type=int, help="border pixels ignored (default: scale)")


def _resolve(args, info):
    """Fill unset options from the model's facts (`ModelInfo`) and the task's protocol;
    check them."""
    if args.task is None:
        args.task = info.task
    if args.task is None:
        raise ValueError("--task is needed (the model records none)")
    if info.task not in (None, args.task):
        raise ValueError(f"the model was trained for {info.task!r}, not {args.task!r}")
    for key in SETTINGS:
        if getattr(args, key) is None and info.get(key) is not None:
            setattr(args, key, info.get(key))
    if args.baseline and BASELINES[args.baseline] != args.task:
        raise ValueError(f"baseline {args.baseline!r} is for task {BASELINES[args.baseline]!r}")
    task = TASKS[args.task]
    task.check_evaluation(args, info)
    args.scale = task.requested_scale(args) or 1
    configured = configure(vars(args))
    if args.test_y_channel is None:
        args.test_y_channel = configured.test_y_channel
    if args.shave is None:
        args.shave = configured.shave


def planned_outputs(args, sets):
    """Every file the run may write: the reports, and with --save the restored images."""
    outputs = [os.path.join(args.out, n) for n in REPORTS] if args.out else []
    if args.save:
        for name, (_, paths) in sets.items():
            outputs += saved_paths(args.save, name, paths)
    return outputs


def _load(args):
    """The model's `Restorer` (None for a baseline), the options resolved; `ValueError`
    (`OSError`) for a bad model or options, before any image is restored."""
    restorer = None
    if args.model:
        from pnen_tf.apps.restore import load_restorer

        restorer = load_restorer(args.model,
                                 TASKS[args.task].requested_scale(args) if args.task else None)
    _resolve(args, restorer.info if restorer else ModelInfo())
    expected = TASKS[args.task].requested_scale(args)
    if restorer and expected and restorer.scale != expected:
        raise ValueError(f"{args.model} is a x{restorer.scale} model, --scale {args.scale} asked")
    return restorer


def run(args):
    """Evaluate every folder; prints tables, writes reports. Exit status 0 if every image
    was measured, 1 if an image or folder failed (one line each), 2 if nothing was run (bad
    model or options, an output location that cannot be written or would overwrite an input).
    """
    sets = benchmark_sets(args.data)
    inputs = [path for _, paths in sets.values() for path in paths]
    with contextlib.ExitStack() as folders:
        try:
            refuse_overwriting_inputs(planned_outputs(args, sets),
                                      inputs + ([args.model] if args.model else []))
            for folder in filter(None, (args.out, args.save)):
                folders.enter_context(output_folder(folder))
            restorer = _load(args)
        except (OSError, ValueError) as error:  # OutputError too: all before any restoring
            print(f"error: {error}", file=sys.stderr)
            return 2
        return _evaluate(args, sets, restorer)


def _evaluate(args, sets, restorer):
    """Measure every set with `restorer` (or the baseline), print the tables, write the
    reports; the exit status."""
    restore = restorer.restore if restorer else baseline(args.baseline, args.scale)
    results, failed = {}, 0
    for name, (folder, paths) in sets.items():
        rows, folder_failed = evaluate_folder(args, folder, restore, paths, name)
        failed += folder_failed
        results[name] = rows
        print(format_table(folder, rows) + "\n")
    if args.out:
        keys = dict.fromkeys(("task", "scale", "sigma", "filter",
                              TASKS[args.task].setting, "model", "baseline",
                              "test_y_channel", "shave"))
        config = {k: getattr(args, k) for k in keys}
        try:
            write_reports(args.out, config, results)
        except OSError as error:
            print(f"error: cannot write the reports into {args.out}: "
                  f"{error.strerror or error}", file=sys.stderr)
            failed += 1
    if failed:
        print(f"{failed} image(s), folder(s) or report(s) failed", file=sys.stderr)
    return 1 if failed else 0


def main(argv=None):
    from pnen_tf.apps import cli

    return cli.main(["evaluate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
