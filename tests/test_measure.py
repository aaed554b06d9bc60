"""The multiply-accumulate counter behind the cost benchmark counts what a block computes."""

import numpy as np

from benchmarks.measure import count_macs
from pnen_tf.layers import PyramidNonLocalBlock


def test_count_macs_of_a_pyramid_block_follows_its_equations():
    batch, height, width, channels = 2, 12, 16, 8
    block = PyramidNonLocalBlock(scales=(2, 4))  # official: queries and keys C/2, values C
    with count_macs() as macs:
        block(np.zeros((batch, height, width, channels), "float32"))

    pixels = batch * height * width
    conv = attention = 0
    for stride in (2, 4):
        keys_per_image = (height // stride) * (width // stride)
        conv += pixels * channels * (channels // 2)  # 1x1 query
        conv += batch * keys_per_image * 9 * channels * (channels // 2 + channels)  # 3x3 key, value
        attention += pixels * keys_per_image * (channels // 2 + channels)  # q.k and p.v, eq. (11)
    conv += pixels * (2 * channels) * channels  # 1x1 projection of the concatenated branches
    assert macs == {"conv": conv, "attention": attention}


def test_the_paper_variant_embeds_its_shared_query_once():
    batch, height, width, channels = 1, 8, 8, 4
    block = PyramidNonLocalBlock(scales=(2, 4), variant="paper")  # query m = C, values C/2
    with count_macs() as macs:
        block(np.zeros((batch, height, width, channels), "float32"))
    pixels = batch * height * width
    conv = pixels * channels * channels  # the one shared 1x1 query
    for stride in (2, 4):
        keys = batch * (height // stride) * (width // stride)
        conv += keys * stride * stride * channels * (channels + channels // 2)  # s x s key, value
    conv += pixels * channels * channels  # 1x1 psi on the two branches' C/2 + C/2 channels
    assert macs["conv"] == conv


def test_macs_counted_by_tracing_equal_those_of_a_call():
    from benchmarks.measure import traced_macs
    from pnen_tf import models

    model = models.build("pnen", channels=8, num_groups=2)
    image = np.zeros((1, 24, 20, 3), "float32")
    with count_macs() as macs:
        model(image)
    assert traced_macs(model, image.shape) == macs["conv"] + macs["attention"] > 0


def test_peak_anon_sees_memory_freed_before_the_block_ends():
    import time

    from benchmarks.measure import PeakAnon, anon_gb

    start = anon_gb()
    with PeakAnon() as peak:
        block = np.ones(2**27 // 8)  # 128 MiB, touched; numpy returns it to the system on del
        time.sleep(0.05)
        del block
    assert anon_gb() < start + 0.06  # gone again: only the sampling thread saw it
    assert peak.gb >= start + 0.12
