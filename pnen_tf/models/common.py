"""Pieces the model builders share: the non-local block factory and the image input."""

import keras

from pnen_tf.layers import AsymmetricPyramidNonLocalBlock, NonLocalBlock, PyramidNonLocalBlock

NONLOCAL_BLOCKS = (None, "nlb", "pnb", "apnb")


def check_nonlocal(nonlocal_block):
    if nonlocal_block not in NONLOCAL_BLOCKS:
        raise ValueError(f"nonlocal_block must be one of {NONLOCAL_BLOCKS}, got {nonlocal_block!r}")


def make_nonlocal(kind, variant, options, name):
    """A PNB, NLB or APNB layer; `variant` None takes the PNB's or NLB's default ("official");
    the APNB has none."""
    options = dict(options or {})
    if kind == "apnb":
        if variant is not None:
            raise ValueError(f"apnb has no variant, got nonlocal_variant={variant!r}")
        return AsymmetricPyramidNonLocalBlock(name=name, **options)
    if variant is not None:
        options["variant"] = variant
    if kind == "pnb":
        return PyramidNonLocalBlock(name=name, **options)
    return NonLocalBlock(name=name, **options)


def image_input(in_channels, name="image"):
    """Dynamic batch, height and width: whole images of any size go through the same model."""
    if in_channels not in (1, 3):
        raise ValueError(f"in_channels must be 1 (grayscale) or 3 (RGB), got {in_channels!r}")
    return keras.Input(shape=(None, None, in_channels), name=name)


def check_positions(option, positions, count, nonlocal_block):
    """Refuse non-local positions that the network does not have (a silent no-op otherwise)."""
    missing = [p for p in positions if not 1 <= p <= count]
    if nonlocal_block is not None and missing:
        raise ValueError(f"{option}={tuple(positions)} names blocks beyond the network's {count}; "
                         f"pass positions between 1 and {count}")
