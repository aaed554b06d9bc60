"""The default training set: sample photographs shipped inside scikit-image (no download).

Used when `python -m training.fit` gets no `--data`, so that the README command runs anywhere.
They are files in scikit-image's data folder, so the same file-based pipeline reads them.
"""

import os

import skimage.data

# Natural colour photographs: the nearest thing to the paper's BSD/DIV2K training images.
TRAIN = ("astronaut.png", "rocket.jpg", "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png")
# Held out for validation: two everyday photographs (fur and fine texture, a cup on a table).
# motorcycle_right.png is not used at all: it is the stereo twin of a training image.
VALIDATION = ("chelsea.png", "coffee.png")


def _paths(names):
    folder = os.path.dirname(skimage.data.__file__)
    paths = [os.path.join(folder, name) for name in names]
    missing = [path for path in paths if not os.path.isfile(path)]
    if missing:
        raise FileNotFoundError(
            f"scikit-image sample images missing: {missing}; reinstall scikit-image or pass --data")
    return paths


def train_paths():
    """Paths of the built-in training photographs."""
    return _paths(TRAIN)


def validation_paths():
    """Paths of the built-in validation photographs (disjoint from `train_paths()`)."""
    return _paths(VALIDATION)
