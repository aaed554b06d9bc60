"""The paper's models as functional Keras models: `build(name, **options)`.

- "pnen": PNEN for edge-preserving smoothing (Section III).
- "memnet": MemNet M6R6, plain / deeper / with NLB / with PNB (Section V).
- "rdn": RDN D16C8G64, plain / deeper / with NLB / with PNB, denoising or x2/x3/x4 SR.

Every model takes float32 NHWC images in [0, 1] of any height and width. Trained ones ship
by name: `from_preset(name)`, `list_presets()` (`pnen_tf.models.presets`).
"""

import keras

from pnen_tf.models.common import check_nonlocal
from pnen_tf.models.memnet import build_memnet
from pnen_tf.models.pnen import build_pnen
from pnen_tf.models.presets import from_preset, list_presets
from pnen_tf.models.rdn import build_rdn

MODELS = ("pnen", "memnet", "rdn")
_DEFAULT = object()
_DEFAULT_NONLOCAL = {"pnen": "pnb", "memnet": None, "rdn": None}


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
        **options: family options: `num_groups` (PNEN); `num_memory_blocks`, `num_recursions`,
            `nonlocal_before` (MemNet); `num_blocks`, `num_layers`, `growth`, `nonlocal_after` (RDN).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {MODELS}")
    if nonlocal_block is _DEFAULT:
        nonlocal_block = _DEFAULT_NONLOCAL[name]
    if nonlocal_block == "none":
        nonlocal_block = None
    check_nonlocal(nonlocal_block)
    common = dict(channels=channels, nonlocal_block=nonlocal_block,
                  nonlocal_variant=nonlocal_variant, nonlocal_options=nonlocal_options)
    try:
        if name == "pnen":
            _reject(name, deeper=deeper, scale=scale != 1)
            return build_pnen(in_channels or 3, multi_output=multi_output,
                              synchronized_bn=synchronized_bn, **common, **options)
        if name == "memnet":
            if scale not in (1, 2, 3, 4):
                raise ValueError(f"memnet: scale must be 1, 2, 3 or 4, got {scale!r}")
            return build_memnet(in_channels or 1, deeper=deeper, multi_output=multi_output,
                                synchronized_bn=synchronized_bn, **common, **options)
        _reject(name, multi_output=multi_output, synchronized_bn=synchronized_bn)
        return build_rdn(scale, in_channels, deeper=deeper, **common, **options)
    except TypeError as error:
        raise ValueError(f"{name}: {error}") from None


def _reject(name, **flags):
    for flag, value in flags.items():
        if value:
            raise ValueError(f"{name} does not support {flag}")


def input_convention(name, scale):
    """What the network takes: "lr" (RDN SR), "upsampled" (MemNet SR) or "same"."""
    if scale == 1:
        return "same"
    return "lr" if name == "rdn" else "upsampled"


def single_output(model):
    """The inference model Y alone, sharing weights with a multi-output training model."""
    if len(model.outputs) == 1:
        return model
    return keras.Model(model.inputs, model.outputs[0], name=model.name)


__all__ = ["MODELS", "build", "from_preset", "input_convention", "list_presets", "single_output"]
