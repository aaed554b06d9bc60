"""Command-line flags and their resolution into one run configuration (saved as config.json).

Two presets fill the flags a user leaves out:

- "quick" (the default when no --data is given): a small model on the built-in photographs,
  sized so that `python -m training.fit --task sr --scale 3` trains, validates and saves on a
  2-core CPU in under 10 minutes and beats bicubic;
- "paper" (the default with --data): the paper's widths and depths, 96-pixel patches, batch 8,
  Adam lr 5e-4 halved on plateaus down to 1e-4 (Sec. IV-A, V).
"""

import argparse
import inspect
import os

from pnen_tf.models import FAMILIES
from training.tasks import TASKS

PRESETS = {
    "paper": {"channels": 64, "patch": 96, "batch": 8, "epochs": 200, "steps_per_epoch": 1000,
              "lr": 5e-4, "nonlocal_block": "pnb", "val_crop": 0},
    # Non-local blocks triple the CPU step time and make whole-image validation quadratic:
    # the quick preset trains the plain network (--nonlocal pnb brings them back).
    "quick": {"channels": 32, "patch": 48, "batch": 16, "epochs": 10, "steps_per_epoch": 100,
              "lr": 1e-3, "nonlocal_block": "none", "val_crop": 256,
              "num_groups": 1, "num_memory_blocks": 1, "num_recursions": 1,
              "num_blocks": 2, "num_layers": 3, "growth": 16},
}
# Flags that may differ when a run is resumed; any other difference is a different run.
RESUMABLE = ("epochs", "resume", "strategy", "jit", "export_saved_model")


def parser():
    p = argparse.ArgumentParser(
        prog="python -m training.fit",
        description="Train PNEN / MemNet / RDN for smoothing, denoising or super-resolution. "
                    "Without --data it trains a small model on photographs shipped with "
                    "scikit-image (preset 'quick', ~5-10 min on a 2-core CPU); with --data the "
                    "paper's recipe (preset 'paper'). Explicit flags override the preset.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--task", choices=tuple(TASKS), required=True)
    a("--model", choices=tuple(FAMILIES),
      help="network (default: " + "; ".join(
          f"{task.default_model} for {name}" for name, task in TASKS.items()) + ")")
    a("--nonlocal", dest="nonlocal_block", choices=("none", "nlb", "pnb", "apnb"),
      help="non-local block inserted in the network (paper preset: pnb; quick: none); apnb: "
           "the asymmetric pyramid block of Table III")
    a("--nonlocal-variant", choices=("official", "paper", "classic"),
      help="PNB: official/paper; NLB: official/classic (default: official)")
    a("--nonlocal-scales", type=int, nargs="+", metavar="S",
      help="PNB strides (default 2 4 8; Table II's ablation uses subsets)")
    a("--deeper", action="store_true", help="the paper's 'deeper' " + "/".join(
        family.title for family in FAMILIES.values() if family.deeper) + " baseline")
    for task in TASKS.values():
        task.add_fit_flags(p)
    a("--data", nargs="+", metavar="DIR",
      help="folder(s) of training images (PNG/JPEG/BMP), the images of all of them; default: "
           "built-in photographs")
    a("--val", nargs="+", metavar="DIR",
      help="folder(s) of validation images (default: the last 1/20 of each --data folder)")
    a("--val-crop", type=int, help="validate on central crops of this side; 0 = whole "
                                   "images (paper: 0; quick: 256). A smoothing target is the "
                                   "whole image's, cropped")
    a("--preset", choices=("auto", "quick", "paper"), default="auto",
      help="defaults for the flags below: auto = quick without --data, paper with --data")
    a("--channels", type=int, help="feature width (paper: 64; quick: 32)")
    for family in FAMILIES.values():
        for size, text in family.sizes.items():
            a(f"--{size.replace('_', '-')}", type=int, help=f"{family.title}: {text}")
    a("--patch", type=int, help="target patch side in pixels (paper: 96)")
    a("--batch", type=int, help="GLOBAL batch size, split over replicas (paper: 8)")
    a("--epochs", type=int, help="epochs (checkpoint and validation after each)")
    a("--steps-per-epoch", type=int, help="training steps per epoch")
    a("--lr", type=float, help="initial learning rate (paper: 5e-4)")
    a("--min-lr", type=float, default=1e-4, help="floor of the plateau halving (paper: 1e-4)")
    a("--lr-patience", type=int, default=3,
      help="epochs without a training-loss decrease before the lr is halved")
    a("--loss", choices=("mse", "l1"), default="mse",
      help="distance; MSE is the paper's (eq. 5), L1 an option for RDN")
    a("--ema", type=float, default=0.0, metavar="MOMENTUM",
      help="keep an exponential moving average of the weights (e.g. 0.999) for validation "
           "and saved models; 0 = off")
    a("--out", help="run folder (default: runs/<task>-<model>-<x<scale>|s<sigma>|blind|<filter>|"
                    "q<quality>>)")
    a("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    a("--init", metavar="MODEL",
      help="start from the weights of this .keras file or preset (same architecture): "
           "fine-tune e.g. sr-x3 into x2/x4, or a sigma-50 denoiser into sigma 30")
    a("--identity-start", action="store_true", default=None,
      help="PNEN: start the last convolution of every exit and non-local branch at zero, so "
           "the network starts at the identity Y = X (smoothing targets are close to it)")
    a("--strategy", choices=("auto", "mirrored", "multiworker", "one"), default="auto",
      help="auto: multi-worker if TF_CONFIG names a cluster, mirrored over several GPUs, "
           "else one device")
    a("--precision", choices=("float32", "mixed_bfloat16", "mixed_float16"), default="float32",
      help="Keras dtype policy (mixed_float16 on GPUs; mixed_bfloat16 on recent CPUs/TPUs)")
    a("--jit", action="store_true", help="XLA-compile the forward/backward pass")
    a("--seed", type=int, default=0, help="seed of weights, patches, augmentation and noise")
    a("--target-cache", help="folder of cached smoothing targets "
                             "(default: ~/.cache/pnen_tf/targets)")
    a("--export-saved-model", metavar="DIR",
      help="after training, export best.keras as a TF Serving SavedModel DIR/1")
    return p


def resolve(args):
    """The run configuration: flags with the preset's and the task's defaults filled in."""
    config = dict(vars(args))
    # One folder stays a plain string, as config.json held it before --data took several.
    config["data"], config["val"] = _folders(args.data), _folders(args.val)
    task = TASKS[args.task]
    config["model"] = config["model"] or task.default_model
    preset = args.preset if args.preset != "auto" else ("paper" if args.data else "quick")
    config["preset"] = preset
    for key, value in PRESETS[preset].items():
        if config.get(key) is None:
            config[key] = value
    model = config["model"]
    if model not in task.models:
        raise ValueError(f"--model {model} is not a {task.help} network; use "
                         f"{' or '.join(task.models)} for --task {args.task}")
    for other in TASKS.values():  # every task's keys, other tasks' at their neutral values
        config.update(other.neutral)
    task.resolve(config, args)
    family = FAMILIES[model]
    config["input"] = family.input_convention(config["scale"])
    config["in_channels"] = family.default_in_channels(config["scale"])
    config["family_options"] = {k: config[k] for k in family.sizes if config.get(k) is not None}
    if config["identity_start"]:
        if "identity_start" not in inspect.signature(family.builder).parameters:
            raise ValueError(f"--identity-start is a PNEN option; {family.title} has no exit nets")
        if config["init"]:
            raise ValueError("--identity-start and --init both set the starting weights; "
                             "use one")
    for key in ("patch", "batch", "epochs", "steps_per_epoch", "channels"):
        if config[key] < 1:
            raise ValueError(f"--{key.replace('_', '-')} must be positive, got {config[key]}")
    if config["nonlocal_scales"] and (config["nonlocal_block"] != "pnb"
                                      or min(config["nonlocal_scales"]) < 1):
        raise ValueError(f"--nonlocal-scales {' '.join(map(str, config['nonlocal_scales']))} "
                         "needs --nonlocal pnb and positive strides")
    if config["patch"] % config["scale"]:
        raise ValueError(f"--patch {config['patch']} must be a multiple of --scale "
                         f"{config['scale']} (the LR patch is patch / scale)")
    config["out"] = config["out"] or os.path.join("runs", _run_name(config))
    return config


def _folders(value):
    """A --data / --val value as saved: None, one folder (a string) or a list of several."""
    if value is None or isinstance(value, str):
        return value
    return value[0] if len(value) == 1 else list(value)


def _run_name(config):
    return f"{config['task']}-{config['model']}-{TASKS[config['task']].run_suffix(config)}"


def build_options(config, synchronized_bn=False):
    """Keyword arguments of `pnen_tf.models.build` for this configuration."""
    options = {"scale": config["scale"], "in_channels": config["in_channels"],
               "channels": config["channels"], "deeper": config["deeper"],
               "nonlocal_block": None if config["nonlocal_block"] == "none"
               else config["nonlocal_block"], **config["family_options"]}
    if config["nonlocal_variant"]:
        options["nonlocal_variant"] = config["nonlocal_variant"]
    if config.get("nonlocal_scales"):
        options["nonlocal_options"] = {"scales": tuple(config["nonlocal_scales"])}
    if config.get("identity_start"):  # runs saved before the flag existed have no key
        options["identity_start"] = True
    if synchronized_bn and FAMILIES[config["model"]].batch_norm:
        options["synchronized_bn"] = True
    return options


def check_resumable(saved, config):
    """Raise if `config` is not the saved run continued (only RESUMABLE keys may change)."""
    changed = sorted(k for k in set(saved) | set(config)
                     if k not in RESUMABLE and saved.get(k) != config.get(k))
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {config.get(k)!r}" for k in changed)
        raise ValueError(f"--resume with a different configuration ({details}); resume with "
                         "the original flags (only --epochs may grow) or use another --out")
