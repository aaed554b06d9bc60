"""The family table: each record agrees with what its builder builds, and no module outside
`pnen_tf/models` branches on a family's name."""

import inspect
import os
import re

import pytest

from pnen_tf import models
from pnen_tf.models import FAMILIES
from training.config import parser

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))
TINY = {"pnen": dict(num_groups=1), "memnet": dict(num_memory_blocks=1, num_recursions=1),
        "rdn": dict(num_blocks=1, num_layers=1, growth=4)}


@pytest.mark.parametrize("name", list(FAMILIES))
@pytest.mark.parametrize("scale", [1, 3])
def test_a_record_says_what_its_builder_builds(name, scale):
    family = FAMILIES[name]
    if scale not in family.scales:
        with pytest.raises(ValueError, match=f"{name}: scale must be 1, got 3"):
            models.build(name, scale=scale)
        return
    model = models.build(name, scale=scale, channels=4, **TINY[name])
    assert model.inputs[0].shape[-1] == family.default_in_channels(scale)
    ratio = 3 if family.input_convention(scale) == "lr" else 1
    assert model.compute_output_shape((1, 8, 8, model.inputs[0].shape[-1]))[1] == 8 * ratio
    has_nonlocal = any(layer.name.startswith(("pnb", "nlb", "apnb")) for layer in model.layers)
    assert has_nonlocal == (family.nonlocal_block is not None)
    has_batch_norm = any("batch_norm" in w.path or "bn" in w.path for w in model.weights)
    assert has_batch_norm == family.batch_norm


@pytest.mark.parametrize("name", list(FAMILIES))
def test_the_flags_and_sizes_a_family_takes_are_its_builders(name):
    family = FAMILIES[name]
    parameters = inspect.signature(family.builder).parameters
    assert set(family.sizes) <= set(parameters)
    for flag, supported in (("deeper", family.deeper), ("multi_output", family.multi_output),
                            ("synchronized_bn", family.batch_norm)):
        assert (flag in parameters) == supported
        if not supported:
            with pytest.raises(ValueError, match=f"{name} does not support {flag}"):
                models.build(name, **{flag: True})
    if family.multi_output:
        outputs = models.build(name, channels=4, multi_output=True, **TINY[name]).outputs
        assert len(outputs) == 2


def test_training_fit_takes_every_size_of_every_family_as_a_flag():
    flags = {option for action in parser()._actions for option in action.option_strings}
    sizes = [size for family in FAMILIES.values() for size in family.sizes]
    assert {f"--{size.replace('_', '-')}" for size in sizes} <= flags
    assert models.MODELS == tuple(FAMILIES) == ("pnen", "memnet", "rdn")


def test_no_module_outside_the_models_branches_on_a_family():
    names = "|".join(FAMILIES)
    pattern = re.compile(rf"""(==|!=)\s*["']({names})["']|["']({names})["']\s*(==|!=)""")
    found = []
    for folder in ("training", "export", "pnen_tf"):
        for directory, _, files in os.walk(os.path.join(ROOT, folder)):
            if directory.startswith(os.path.join(ROOT, "pnen_tf", "models")):
                continue
            for path in (os.path.join(directory, f) for f in files if f.endswith(".py")):
                found += [f"{path}:{n}" for n, line in enumerate(open(path), 1)
                          if pattern.search(line)]
    assert not found
