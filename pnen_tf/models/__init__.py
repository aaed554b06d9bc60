"""The paper's models as functional Keras models: `build(name, **options)`.

- "pnen": PNEN for edge-preserving smoothing (Section III).
- "memnet": MemNet M6R6, plain / deeper / with NLB / with PNB (Section V).
- "rdn": RDN D16C8G64, plain / deeper / with NLB / with PNB, denoising or x2/x3/x4 SR.

What differs between the families outside their builders (defaults, input convention,
options) is one table, `FAMILIES` (`pnen_tf.models.families`). Every model takes float32
NHWC images in [0, 1] of any height and width. Trained ones ship by name: `from_preset(name)`,
`list_presets()` (`pnen_tf.models.presets`).
"""

import keras

from pnen_tf.models.common import check_nonlocal
from pnen_tf.models.families import FAMILIES, Family, get_family
from pnen_tf.models.presets import from_preset, list_presets

MODELS = tuple(FAMILIES)
_DEFAULT = object()


def build(name, *, scale=1, in_channels=None, channels=64, nonlocal_block=_DEFAULT,
          nonlocal_variant=None, nonlocal_options=None, deeper=False, multi_output=False,
          synchronized_bn=False, **options):
    """Build one of the paper's models.

    Args:
        name: "pnen", "memnet" or "rdn".
        scale: 1 for smoothing/denoising; 2, 3 or 4 for super-resolution. RDN then takes the
            low-resolution image; MemNet takes the bicubic-upsampled one (see `input_convention`).
        in_channels: 1 or 3; default the paper's (PNEN 3, MemNet 1, RDN 1 for denoising and 3 for SR).
        channels: feature width (64 in the paper; small values make quick test models).
        nonlocal_block: None, "nlb", "pnb" or "apnb" (default "pnb" for PNEN, None otherwise).
            MemNet and RDN carry two, as the paper's parameter counts show; PNEN one per group.
        nonlocal_variant: "official" (default) / "paper" for PNB, "official" / "classic" for NLB.
        nonlocal_options: extra keyword arguments for the non-local layers (e.g. `scales`,
            `memory_budget_mb`, `attention_dtype`, `flash_attention`).
        deeper: the paper's "deeper" baseline (MemNet, RDN).
        multi_output: PNEN and MemNet return [Y, Y_1, ..., Y_M] for multi-supervision (eq. 5).
        synchronized_bn: synchronised batch norm, for multi-worker training (PNEN, MemNet).
        **options: family options: `num_groups`, `identity_start` (PNEN); `num_memory_blocks`,
            `num_recursions`, `nonlocal_before` (MemNet); `num_blocks`, `num_layers`, `growth`,
            `nonlocal_after` (RDN).
    """
    family = get_family(name)
    family.check_scale(scale)
    if nonlocal_block is _DEFAULT:
        nonlocal_block = family.nonlocal_block
    if nonlocal_block == "none":
        nonlocal_block = None
    check_nonlocal(nonlocal_block)
    if family.sr_input == "lr":
        options["scale"] = scale  # the network itself upsamples
    try:
        return family.builder(in_channels=in_channels or family.default_in_channels(scale),
                              channels=channels, nonlocal_block=nonlocal_block,
                              nonlocal_variant=nonlocal_variant, nonlocal_options=nonlocal_options,
                              **family.flags(deeper, multi_output, synchronized_bn), **options)
    except TypeError as error:
        raise ValueError(f"{name}: {error}") from None


def input_convention(name, scale):
    """What the network takes: "lr" (RDN SR), "upsampled" (MemNet SR) or "same"."""
    return get_family(name).input_convention(scale)


def single_output(model):
    """The inference model Y alone, sharing weights with a multi-output training model."""
    if len(model.outputs) == 1:
        return model
    return keras.Model(model.inputs, model.outputs[0], name=model.name)


__all__ = ["FAMILIES", "MODELS", "Family", "build", "from_preset", "get_family",
           "input_convention", "list_presets", "single_output"]
