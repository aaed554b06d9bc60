"""The model families in one table: `FAMILIES`, one `Family` record per network.

A family's record holds everything that differs between PNEN, MemNet and RDN outside their
builders: the defaults `pnen_tf.models.build` fills in (channels, non-local block), the
scales and the input convention of super-resolution, which build options it takes, and the
size options that `training.fit` exposes as flags. `build`, `input_convention`,
`training.config` and `training.fit` read it and never name a family.
"""

import dataclasses
from collections.abc import Callable

from pnen_tf.models.memnet import build_memnet
from pnen_tf.models.pnen import build_pnen
from pnen_tf.models.rdn import build_rdn

SR_SCALES = (2, 3, 4)


@dataclasses.dataclass(frozen=True)
class Family:
    """One family of networks.

    Attributes:
        name: its name in `build`, `--model` and a model's facts.
        title: its name as the paper writes it.
        builder: the function that builds it, called by `pnen_tf.models.build`.
        nonlocal_block: the non-local block it carries by default (None: none).
        in_channels: its input channels in the paper at scale 1 (denoising, smoothing).
        sr_input: for super-resolution, what it takes: "lr", the low-resolution image (the
            network upsamples; `builder` takes `scale`), or "upsampled", the bicubic-upsampled
            image (the network keeps the size); None: no super-resolution.
        sr_in_channels: its input channels in the paper for super-resolution.
        multi_output: it can return [Y, Y_1, ..., Y_M] for multi-supervision (eq. 5).
        batch_norm: it holds batch norms, which `synchronized_bn` synchronises.
        deeper: it has the paper's "deeper" baseline.
        sizes: its size options, keyword arguments of `builder`: {option: description}
            (`training.fit`'s flags and a run's `family_options`).
    """

    name: str
    title: str
    builder: Callable
    nonlocal_block: str | None
    in_channels: int
    sr_input: str | None
    sr_in_channels: int | None
    multi_output: bool
    batch_norm: bool
    deeper: bool
    sizes: dict

    @property
    def scales(self):
        """The scales it is built for: 1, and SR's with an SR input convention."""
        return (1, *SR_SCALES) if self.sr_input else (1,)

    def check_scale(self, scale):
        if scale not in self.scales:
            raise ValueError(f"{self.name}: scale must be "
                             f"{', '.join(map(str, self.scales))}, got {scale!r}")

    def default_in_channels(self, scale):
        """The paper's input channels at `scale`."""
        self.check_scale(scale)
        return self.in_channels if scale == 1 else self.sr_in_channels

    def input_convention(self, scale):
        """What the network takes at `scale`: "same" at 1, else `sr_input`."""
        self.check_scale(scale)
        return "same" if scale == 1 else self.sr_input

    def flags(self, deeper, multi_output, synchronized_bn):
        """The builder's keyword arguments among these flags; `ValueError` for a flag set
        that the family does not take."""
        takes = {"deeper": self.deeper, "multi_output": self.multi_output,
                 "synchronized_bn": self.batch_norm}
        given = {"deeper": deeper, "multi_output": multi_output,
                 "synchronized_bn": synchronized_bn}
        for flag, value in given.items():
            if value and not takes[flag]:
                raise ValueError(f"{self.name} does not support {flag}")
        return {flag: value for flag, value in given.items() if takes[flag]}


FAMILIES = {family.name: family for family in (
    Family("pnen", "PNEN", build_pnen, nonlocal_block="pnb", in_channels=3,
           sr_input=None, sr_in_channels=None, multi_output=True, batch_norm=True,
           deeper=False, sizes={"num_groups": "DRB+PNB groups (paper: 3)"}),
    Family("memnet", "MemNet", build_memnet, nonlocal_block=None, in_channels=1,
           sr_input="upsampled", sr_in_channels=1, multi_output=True, batch_norm=True,
           deeper=True, sizes={"num_memory_blocks": "memory blocks (paper: 6)",
                               "num_recursions": "recursions per block (paper: 6)"}),
    Family("rdn", "RDN", build_rdn, nonlocal_block=None, in_channels=1,
           sr_input="lr", sr_in_channels=3, multi_output=False, batch_norm=False,
           deeper=True, sizes={"num_blocks": "residual dense blocks (paper: 16)",
                               "num_layers": "conv layers per block (paper: 8)",
                               "growth": "growth rate (paper: 64)"}),
)}


def get_family(name):
    """The `Family` called `name`; `ValueError` naming the known ones otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model {name!r}; choose one of {tuple(FAMILIES)}")
    return FAMILIES[name]
