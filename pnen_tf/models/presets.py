"""Trained models shipped by name: `from_preset(name)`, `list_presets()`, `pnen-tf presets`.

A preset is a trained model inside the package, picked by name (keras-hub's convention),
loaded from package data, never downloaded. `PRESETS` is the one table of the names: what
each one restores (its facts), the quality it must reach (`targets`) and the published
figures beside it (`references`). The rest is data: a trained preset is two files dropped
into the package folder `pnen_tf/presets/` (shipped in the wheel), no code change:

- `<name>.keras`: the single-output inference model saved by `pnen_tf.saving.save_model`,
  as `training.fit` saves `best.keras`, so its facts (`pnen_tf.model_info.ModelInfo`: model,
  task, scale, sigma, filter, in_channels, input) travel inside it. Its task, scale, sigma and filter must be the
  table's; in_channels and input are the table's plan, and the file's facts decide them.
- `<name>.json`: its card, an object with `CARD_FIELDS`: architecture, parameters (trainable
  count), training_data and training_data_source, training_command (exactly as run), steps,
  cpu_hours, results (`[{"set", "psnr", "ssim"}, ...]`, with "sigma" for the blind denoiser,
  measured by `python -m training.evaluate --model <name>` on Set5 / Set12) and check
  (`{"margin_db": M}`: by how much it beats its baseline on the built-in check image, as
  `training.presets.measure_check` measures it). Other keys (validation_curve,
  baseline_results, hardware, notes) are kept and shown.

A name without its `.keras` file is listed as "not trained yet", and loading it raises
`FileNotFoundError` saying it is not shipped in this version. Layout and cards:
docs/models.md.

Example:
    >>> sorted(list_presets())[:2]
    ['denoise-gray-blind', 'denoise-gray-s30']
"""

import copy
import json
import os

from pnen_tf.model_info import ModelInfo

PRESETS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "presets")
CARD_FIELDS = ("architecture", "parameters", "training_data", "training_data_source",
               "training_command", "steps", "cpu_hours", "results", "check")
IDENTITY = ("task", "scale", "sigma", "filter")  # what the name promises; the file must agree
NOT_TRAINED = "not trained yet"


def _denoise(sigma, targets, references=()):
    return dict(task="denoise", scale=1, sigma=sigma, filter=None, in_channels=1,
                input="same", targets=targets, references=list(references))


def _sr(scale, target, memnet, bicubic):
    # MemNet's protocol: the Y channel, bicubic-upsampled input (planned; the file decides).
    return dict(task="sr", scale=scale, sigma=None, filter=None, in_channels=1,
                input="upsampled", targets=[{"set": "Set5", "psnr": target}],
                references=[{"method": "MemNet (paper)", "set": "Set5", "psnr": memnet},
                            {"method": "bicubic", "set": "Set5", "psnr": bicubic}])


def _smooth(filter_name, target, table_one):
    return dict(task="smooth", scale=1, sigma=None, filter=filter_name, in_channels=3,
                input="same", targets=[{"set": "Set5", "psnr": target}],
                references=[{"method": "PNEN (paper, Table I, its own benchmark)",
                             "psnr": table_one}])


def _set12(psnr, sigma=None, method=None):
    entry = {"set": "Set12", "psnr": psnr}
    entry.update({k: v for k, v in (("sigma", sigma), ("method", method)) if v is not None})
    return entry


PRESETS = {
    "denoise-gray-s30": _denoise(30, [_set12(29.1)]),
    "denoise-gray-s50": _denoise(50, [_set12(26.9)], [
        _set12(26.72, method="BM3D"), _set12(27.18, method="DnCNN"),
        _set12(27.38, method="MemNet (paper)")]),
    # Any sigma in [0, 55]; its file records sigma None, so evaluate asks for --sigma.
    "denoise-gray-blind": _denoise(None, [
        _set12(32.37, 15), _set12(29.97, 25), _set12(26.72, 50)], [
        _set12(32.37, 15, "BM3D"), _set12(29.97, 25, "BM3D"), _set12(26.72, 50, "BM3D")]),
    "sr-x2": _sr(2, 36.8, memnet=37.78, bicubic=33.66),
    "sr-x3": _sr(3, 33.1, memnet=34.09, bicubic=30.39),
    "sr-x4": _sr(4, 30.7, memnet=31.74, bicubic=28.42),
    # PSNR against the filter's own output (L0 lambda 0.02 kappa 2; WMF r 10 sigma 50; SD 15).
    "smooth-l0": _smooth("l0", 30.5, table_one=33.44),
    "smooth-wmf": _smooth("wmf", 36.5, table_one=39.45),
    "smooth-sd": _smooth("sd", 31.0, table_one=34.19),
}


def weights_file(name):
    """Where the preset's `.keras` file lies in the package (whether shipped or not)."""
    return os.path.join(PRESETS_DIR, f"{_known(name)}.keras")


def card_file(name):
    """Where the preset's card, `<name>.json` (its measured figures), lies in the package."""
    return os.path.join(PRESETS_DIR, f"{_known(name)}.json")


def is_shipped(name):
    """Whether this version ships the preset's weights."""
    return os.path.isfile(weights_file(name))


def shipped_weights(name):
    """The preset's `.keras` file; `FileNotFoundError` if this version does not ship it."""
    path = weights_file(name)
    if not os.path.isfile(path):
        from pnen_tf import __version__

        raise FileNotFoundError(f"preset {name!r} is {NOT_TRAINED}: not shipped in pnen-tf "
                                f"{__version__} (see `pnen-tf presets`)")
    return path


def resolve(path):
    """`path` itself if something exists there or it names no preset; else the preset's file.

    What `pnen_tf.saving` and `ModelInfo.read` do with every model path, so that restore,
    evaluate and the exporters take a preset name wherever they take a `.keras` file.
    """
    if os.path.exists(path) or os.fspath(path) not in PRESETS:
        return path
    return shipped_weights(os.fspath(path))


def _known(name):
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return name


def read_card(name):
    """The preset's card: its table row, status, weights file and `<name>.json` fields."""
    row = PRESETS[_known(name)]
    card = {**copy.deepcopy(row), "status": "shipped" if is_shipped(name) else NOT_TRAINED,
            "weights": os.path.basename(weights_file(name))}
    if card["status"] == NOT_TRAINED:
        return card
    facts = ModelInfo.read(weights_file(name))
    card.update({k: facts.get(k) for k in ("model", "in_channels", "input")
                 if facts.get(k) is not None})
    path = card_file(name)
    if os.path.isfile(path):
        with open(path) as file:
            fields = json.load(file)
        if not isinstance(fields, dict):
            raise ValueError(f"{path}: a card is a JSON object")
        clashes = sorted(k for k in fields if k in card and fields[k] != card[k])
        if clashes:
            raise ValueError(f"{path}: {', '.join(clashes)} differ from the preset "
                             "table or the model file's facts")
        card.update(fields)
    return card


def list_presets():
    """name -> card (`read_card`) of every preset, shipped or not."""
    return {name: read_card(name) for name in PRESETS}


def from_preset(name):
    """The preset's single-output inference model, its facts (a `ModelInfo` whose
    `get("preset")` is `name`) in `model.pnen_tf_info`.

    Raises `ValueError` for an unknown name or weights whose facts are not the preset's,
    `FileNotFoundError` for a preset this version does not ship.
    """
    from pnen_tf import saving
    from pnen_tf.models import single_output

    path = shipped_weights(_known(name))
    facts = ModelInfo.read(path)
    wrong = [k for k in IDENTITY
             if PRESETS[name][k] is not None and facts.get(k) != PRESETS[name][k]]
    if wrong:
        raise ValueError(f"{path}: its facts ({', '.join(f'{k}={facts.get(k)!r}' for k in wrong)})"
                         f" are not those of preset {name!r}")
    model = single_output(saving.load_model(path))
    model.pnen_tf_info = facts.updated(preset=name)
    return model
