"""`pnen-tf presets`: the table of the trained models shipped by name, and the check that a
shipped preset beats its task's baseline on a built-in image.

The registry itself (names, facts, cards, loading) is the library's,
`pnen_tf.models.presets`; measuring a preset needs `training.evaluate` and the task table,
so it lives here, on the application side.
"""

import json
import os
import sys
import tempfile

from pnen_tf.models.presets import PRESETS, list_presets
from training.tasks import TASKS

BLIND_CHECK_SIGMA = 25  # the blind denoiser's check image is noised at this sigma
# `training.evaluate`'s flag that sets each task's level: the preset row's value for it.
_LEVEL_FLAGS = {"sr": ("--scale", "scale"), "denoise": ("--sigma", "sigma"),
                "smooth": ("--filter", "filter")}


def check_image(row):
    """The built-in check image of a preset row (uint8, odd size): a crop of scikit-image's
    `camera` for a gray model (the denoisers), of `astronaut` (RGB) for the others."""
    from skimage import data

    if row["in_channels"] == 1 and row["input"] == "same":
        return "camera", data.camera()[96:217, 160:291]
    return "astronaut", data.astronaut()[20:141, 150:281]


def measure_check(name, save=None):
    """(model PSNR, baseline PSNR) on the check image, as `training.evaluate` measures them.

    The baseline is the task's: bicubic, the noisy input, the unfiltered image. The blind
    denoiser is checked at sigma `BLIND_CHECK_SIGMA`. What a card's `check.margin_db` bounds.
    With `save`, the two restorations are kept as `save/<name or baseline>/check/<image>.png`.
    """
    from pnen_tf import image_io
    from training import evaluate

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (see `pnen-tf presets`)")
    row = PRESETS[name]
    task = row["task"]
    image_name, pixels = check_image(row)
    flag, key = _LEVEL_FLAGS[task]
    setting = [flag, str(row[key] if row[key] is not None else BLIND_CHECK_SIGMA)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = os.path.join(tmp, "check")
        image_io.write_image(os.path.join(folder, f"{image_name}.png"), pixels / 255.0)
        psnr = []
        for source in (["--model", name], ["--baseline", TASKS[task].baseline]):
            out = os.path.join(tmp, source[1])
            keep = ["--save", os.path.join(save, source[1])] if save else []
            if evaluate.main([*source, "--task", task, *setting, "--data", folder, "--out", out,
                              *keep]):
                raise RuntimeError(f"preset {name!r}: evaluating {source[1]} failed")
            with open(os.path.join(out, "results.json")) as file:
                psnr.append(json.load(file)["folders"]["check"]["psnr"])
    return tuple(psnr)


_TASK_TEXT = {
    "sr": lambda card: f"sr x{card['scale']}",
    "smooth": lambda card: f"smooth {card['filter']}",
    "denoise": lambda card: "denoise sigma " + (
        str(card["sigma"]) if card["sigma"] is not None else "0-55"),
}


def _quality_text(card):
    """Per benchmark set: measured PSNR against the target ("pending" before results)."""
    parts = []
    for set_name in dict.fromkeys(target["set"] for target in card["targets"]):
        targets = [target for target in card["targets"] if target["set"] == set_name]
        measured = [_measured(card.get("results", []), target) for target in targets]
        sigmas = "/".join(str(target["sigma"]) for target in targets if "sigma" in target)
        values = "pending" if measured == [None] * len(measured) else \
            "/".join("-" if v is None else f"{v:.2f}" for v in measured) + " dB"
        floors = "/".join(str(target["psnr"]) for target in targets)
        parts.append(f"{set_name}{' sigma ' + sigmas if sigmas else ''} {values} "
                     f"(target >= {floors})")
    return "; ".join(parts)


def _measured(results, target):
    found = [r["psnr"] for r in results if r.get("set") == target["set"]
             and ("sigma" not in target or r.get("sigma") == target["sigma"])]
    return found[0] if found else None


def format_table(cards):
    """The `pnen-tf presets` table: name, task, status, parameters, quality vs target."""
    rows = [("name", "task", "status", "params", "quality vs target")]
    for name, card in cards.items():
        params = card.get("parameters")
        rows.append((name, _TASK_TEXT[card["task"]](card), card["status"],
                     f"{params:,}" if isinstance(params, int) else "-",
                     _quality_text(card)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[4]
                     for row in rows)


def add_arguments(parser):
    parser.add_argument("--json", action="store_true", help="print every card as JSON")
    parser.add_argument("--check", metavar="NAME",
                        help="measure a shipped preset against its baseline on the built-in "
                             "check image (the figure its card's check.margin_db bounds)")


def run(args):
    """Print the table (or the cards, or one check); exit status 0, or 2 for a bad preset."""
    try:
        if args.check:
            model, base = measure_check(args.check)
            baseline = TASKS[PRESETS[args.check]["task"]].baseline
            print(f"{args.check}: {model:.2f} dB against {baseline}"
                  f" {base:.2f} dB: margin {model - base:.2f} dB")
        elif args.json:
            print(json.dumps(list_presets(), indent=2))
        else:
            print(format_table(list_presets()))
    except (OSError, ValueError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0

