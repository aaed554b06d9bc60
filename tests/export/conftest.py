"""Tiny PNEN-family models (8 channels), saved as `.keras` and exported once per test session.

PNEN's attention budget (`memory_budget_mb`) is small enough that a LARGE image takes the
memory-linear (tiled) attention path in Keras while a SMALL one, whose sides are not multiples
of 8, takes the direct path; the exported graphs have dynamic sizes and always tile. The MemNet
forces small tiles, so that its exported graph runs several query chunks and key blocks at every
parity size. PHOTO_LIKE sizes are above the 36x44 at which the ONNX export used to break
(issue 20), with sides that are multiples of 8 and odd.
"""

import os
import re
import sys

import keras
import pytest
import tensorflow as tf

import pnen_tf
from pnen_tf.models import build, input_convention
from pnen_tf.saving import save_model

ATTENTION_BUDGET_MB = 8
SMALL = (21, 27)
LARGE = (36, 44)
PHOTO_LIKE = ((40, 48), (43, 37))
PARITY_ATOL = 1e-4
ONNX_OPSETS = {"pnen": None, "memnet_sr": 17}  # the default opset and an explicit one

# PNEN with its full pyramid; MemNet x2 (it takes the bicubic-upsampled image) with one
# single-scale PNB, because tf2onnx's conversion time grows with every attention loop.
BUILD_OPTIONS = {
    "pnen": dict(name="pnen", channels=8, num_groups=1),
    "memnet_sr": dict(name="memnet", scale=2, channels=8, nonlocal_block="pnb",
                      num_memory_blocks=1, num_recursions=1, nonlocal_before=(1,),
                      nonlocal_options={"scales": (2,), "query_chunk": 96, "key_block": 31}),
}
MODEL_NAMES = tuple(BUILD_OPTIONS)


class TinyModel:
    """A built model, the `.keras` file it was saved to and the facts saved with it."""

    def __init__(self, model, path, info):
        self.model, self.path, self.info = model, path, info
        self.channels = info["in_channels"]


def _build(name, directory):
    options = dict(BUILD_OPTIONS[name])
    family = options.pop("name")
    options["nonlocal_options"] = {**options.get("nonlocal_options", {}),
                                   "memory_budget_mb": ATTENTION_BUDGET_MB}
    keras.utils.set_random_seed(0)
    model = build(family, **options)
    scale = options.get("scale", 1)
    info = {"model": family, "task": "sr" if scale > 1 else "smooth", "scale": scale,
            "in_channels": model.inputs[0].shape[-1], "input": input_convention(family, scale),
            "pnen_tf_version": pnen_tf.__version__}
    path = str(directory / f"{name}.keras")
    save_model(model, path, info)
    return TinyModel(model, path, info)


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    directory = tmp_path_factory.mktemp("keras")
    return {name: _build(name, directory) for name in MODEL_NAMES}


@pytest.fixture(scope="session")
def saved_models(tiny_models, tmp_path_factory):
    """name -> model directory `DIR/NAME` holding version 1."""
    from export.saved_model import export_saved_model

    root = tmp_path_factory.mktemp("serving")
    bases = {name: str(root / name) for name in MODEL_NAMES}
    for name, tiny in tiny_models.items():
        export_saved_model(tiny.path, bases[name], 1)
    return bases


@pytest.fixture(scope="session")
def loaded_signatures(saved_models):
    """name -> the reloaded SavedModel's signatures."""
    return {name: tf.saved_model.load(f"{base}/1").signatures for name, base in saved_models.items()}


@pytest.fixture(scope="session")
def onnx_files(tiny_models, tmp_path_factory):
    """name -> (ONNX path, the exporter's probes: `export.onnx.Probe`s)."""
    from export.onnx import export_onnx

    root = tmp_path_factory.mktemp("onnx")
    files = {}
    for name, tiny in tiny_models.items():
        path = str(root / f"{name}.onnx")
        files[name] = path, export_onnx(tiny.path, path, opset=ONNX_OPSETS[name])
    return files


@pytest.fixture(params=MODEL_NAMES)
def model_name(request):
    return request.param


@pytest.fixture(params=[SMALL, LARGE, *PHOTO_LIKE],
                ids=["small-direct", "large-tiled", *(f"{h}x{w}" for h, w in PHOTO_LIKE)])
def parity_size(request):
    return request.param


@pytest.fixture(scope="session")
def attention_budget_mb():
    return ATTENTION_BUDGET_MB


@pytest.fixture(scope="session")
def serving_docs_block():
    """The fenced code block of docs/serving.md that contains `marker` (exactly one must)."""
    docs = os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, "docs", "serving.md")
    with open(docs) as file:
        blocks = re.findall(r"```\w*\n(.*?)```", file.read(), flags=re.S)

    def block(marker):
        (found,) = [text for text in blocks if marker in text]
        return found

    return block


@pytest.fixture(scope="session")
def docs_env():
    """Environment for running documented commands: this venv's `python` and the repo on the path."""
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    return {**os.environ, "PATH": path, "PYTHONPATH": repo}
