"""Edge-preserving smoothing (paper Sec. IV, Table I): PNEN imitates a filter.

The input is the image x, the target `training.smoothing.smooth_target(x, filter)` (the
weighted median filter, L0 smoothing or the SD filter); training targets are computed once
and cached (`training.smoothing.cached_targets`). Measured on all channels, no shave; the
baseline is the unfiltered image ('identity').
"""

from pnen_tf import image_io
from training import data
from training.tasks.base import Task

FILTERS = ("l0", "wmf", "sd")


class Smoothing(Task):
    name = "smooth"
    help = "edge-preserving smoothing"
    default_model = "pnen"
    models = ("pnen", "memnet", "rdn")
    baseline = "identity"
    neutral = {"filter": None}
    setting = "filter"
    suffix = "{filter}"
    fit_flags = {"--filter": dict(choices=FILTERS, default="l0",
                                  help="smoothing filter to imitate (--task smooth)")}
    evaluate_flags = {"--filter": dict(choices=FILTERS, help="smoothing filter to reproduce")}

    @classmethod
    def valid_setting(cls, value):
        return value in FILTERS

    def training_pairs(self, images, convention, cache_root=None):
        from training import smoothing  # only smoothing needs the filters

        paths = smoothing.cached_targets([image for _, image in images],
                                         self.settings["filter"], cache_root)
        return [(image, image_io.to_integers(image_io.read_image(path).pixels)
                 .reshape(image.shape)) for (_, image), path in zip(images, paths)]

    def validation_pairs(self, images, convention, crop=0, cache_root=None):
        """Pairs of whole images, then cropped: an edge-preserving filter is not local (L0 and
        the SD filter solve for the whole image), so a crop's target would differ from the
        crop of the image's target, which training and the benchmark's protocol use."""
        pairs = self.training_pairs(images, convention, cache_root)
        return [(data.center_crop_array(inp, crop), data.center_crop_array(target, crop))
                for inp, target in pairs] if crop else pairs

    def evaluation_pair(self, path, truth):
        from training.smoothing import smooth_target

        inp, _ = super().evaluation_pair(path, truth)
        return inp, smooth_target(truth, self.settings["filter"])


TASK = Smoothing
