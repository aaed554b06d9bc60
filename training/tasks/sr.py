"""Super-resolution x2, x3, x4 (paper Sec. V, Table V).

HR = modcrop(x, scale); LR = uint8(round(imresize(HR, 1/scale))) with MATLAB's antialiased
bicubic (`pnen_tf.apps.imresize`), rounded as a saved LR file would be. An 'lr' model (RDN) gets
LR, an 'upsampled' one (MemNet) imresize(LR, scale) unrounded; the target is HR. The same
pair serves training, validation and evaluation. Measured on the Y of BT.601 YCbCr with
`scale` pixels shaved; the baseline is bicubic upscaling of LR.
"""

import numpy as np

from pnen_tf.apps.imresize import imresize, modcrop
from training.tasks.base import Task


def bicubic_pair(hr_uint8, scale, convention):
    """(network input, target) for x`scale` SR of one whole image.

    The low-resolution image is rounded to 8 bits, as a saved LR file would be, and is the
    input for the 'lr' convention (uint8). For 'upsampled' the input is that image enlarged
    back with the same bicubic `imresize`, unrounded (float32 in [0, 1]).
    """
    hr = modcrop(np.asarray(hr_uint8), scale)
    lr = np.clip(np.round(imresize(hr.astype(np.float32), scale=1.0 / scale).numpy()), 0, 255)
    lr = lr.astype(np.uint8)
    if convention == "lr":
        return lr, hr
    if convention != "upsampled":
        raise ValueError(f"SR input convention must be 'lr' or 'upsampled', got {convention!r}")
    return imresize(lr / np.float32(255.0), scale=scale).numpy(), hr


class SuperResolution(Task):
    name = "sr"
    help = "super-resolution"
    baseline = "bicubic"
    neutral = {"scale": 1}
    setting = "scale"
    suffix = "x{scale}"
    fit_flags = {"--scale": dict(type=int, choices=(2, 3, 4), default=3,
                                 help="SR factor (--task sr)")}
    evaluate_flags = {"--scale": dict(type=int, help="SR scale factor (2, 3, 4)")}

    @classmethod
    def valid_setting(cls, value):
        return value is not None and value >= 2

    @classmethod
    def requested_scale(cls, args):
        return args.scale

    @property
    def scale(self):
        return int(self.settings["scale"])

    @property
    def shave(self):
        return self.scale

    @property
    def test_y_channel(self):
        return True

    def training_pairs(self, images, convention, cache_root=None):
        return [bicubic_pair(image, self.scale, convention) for _, image in images]

    def validation_baseline(self, inp, convention):
        # An 'upsampled' input is the bicubic image already.
        return imresize(inp, self.scale).numpy() if convention == "lr" else inp

    def evaluation_pair(self, path, truth):
        lr, hr = bicubic_pair(truth, self.scale, "lr")
        return lr.astype(np.float32) / 255.0, hr

    def restore_baseline(self, pixels):
        return imresize(pixels, self.scale).numpy()


TASK = SuperResolution
