"""JPEG compression artifact removal at quality 10, 20, 30 or 40 (MemNet's protocol).

The image is encoded as a baseline JPEG at that quality with the IJG library's standard
quantisation tables (Pillow's encoder: libjpeg's `jpeg_set_quality`), decoded, and restored;
a gray image is encoded as a gray JPEG, an RGB one as a colour JPEG (4:2:0). The same code
makes the training pairs (once per whole image, so the 8x8 block grid is the image's own) and
the evaluation pairs. Measured on Y for RGB images and on the image itself for gray ones, no
shave; the baseline is the decoded JPEG image itself.
"""

import io

import numpy as np
from PIL import Image

from training.tasks.base import Task

QUALITIES = (10, 20, 30, 40)


def jpeg_roundtrip(image_uint8, quality):
    """The uint8 [H, W, C] image (C = 1 or 3) encoded as JPEG at `quality` and decoded."""
    image = np.asarray(image_uint8)
    gray = image.shape[-1] == 1
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if gray else image).save(buffer, "JPEG", quality=int(quality))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return np.asarray(decoded.convert("L" if gray else "RGB")).reshape(image.shape)


class JpegDeblocking(Task):
    name = "jpeg"
    help = "JPEG artifact removal"
    baseline = "jpeg"
    neutral = {"quality": None}
    setting = "quality"
    suffix = "q{quality}"
    fit_flags = {"--quality": dict(type=int, choices=QUALITIES, default=QUALITIES[0],
                                   help="JPEG quality of the inputs (--task jpeg)")}
    evaluate_flags = {"--quality": dict(type=int, help="JPEG quality (1-100; MemNet: 10-40)")}

    @classmethod
    def facts(cls, config):
        return {"quality": config["quality"]}

    @classmethod
    def valid_setting(cls, value):
        return value is not None and 1 <= value <= 100

    @property
    def test_y_channel(self):
        return True

    def training_pairs(self, images, convention, cache_root=None):
        quality = self.settings["quality"]
        return [(jpeg_roundtrip(image, quality), image) for _, image in images]

    def evaluation_pair(self, path, truth):
        inp = jpeg_roundtrip(truth, self.settings["quality"])
        return inp.astype(np.float32) / 255.0, truth


TASK = JpegDeblocking
