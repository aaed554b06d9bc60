"""Input checks shared by the blocks: a clear error naming the layer and the shape."""


def check_feature_map(layer, shape, channels=None):
    """Raise a ValueError unless `shape` is NHWC with a known (and, if given, matching) depth."""
    shape = tuple(shape)
    where = f"{type(layer).__name__} '{layer.name}'"
    if len(shape) != 4:
        raise ValueError(f"{where} expects a 4-D [batch, height, width, channels] input, got shape {shape}")
    if shape[-1] is None:
        raise ValueError(f"{where} needs a known channel count, got shape {shape}")
    if channels is not None and shape[-1] != channels:
        raise ValueError(f"{where} was built for {channels} channels, got shape {shape}")
    if any(dim == 0 for dim in shape[1:]):
        raise ValueError(f"{where} got an empty input of shape {shape}")
    return shape[-1]
