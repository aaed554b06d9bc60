"""Image reading/writing: modes, 16 bits, alpha, EXIF orientation, bad files, atomic writes."""

import doctest
import os

import numpy as np
import pytest
from PIL import Image, ImageOps

from pnen_tf.image_io import (ImageReadError, _orient, list_images, read_image, to_integers,
                              write_image)


@pytest.mark.parametrize("channels,alpha", [(1, False), (3, False), (3, True), (1, True)])
@pytest.mark.parametrize("bit_depth", [8, 16])
def test_round_trip_keeps_values_mode_and_depth(tmp_path, channels, alpha, bit_depth):
    rng = np.random.default_rng(channels + bit_depth)
    top = 2**bit_depth - 1
    pixels = rng.integers(0, top + 1, (5, 7, channels)) / top
    a = rng.integers(0, top + 1, (5, 7, 1)) / top if alpha else None
    write_image(tmp_path / "x.png", pixels, a, bit_depth)
    image = read_image(tmp_path / "x.png")
    assert image.bit_depth == bit_depth
    # gray + alpha is stored as RGBA (OpenCV's encoders take gray, BGR or BGRA)
    expected = pixels if channels == 3 or not alpha else np.repeat(pixels, 3, -1)
    np.testing.assert_array_equal(to_integers(image.pixels, bit_depth),
                                  to_integers(expected, bit_depth))
    if alpha:
        np.testing.assert_array_equal(to_integers(image.alpha, bit_depth),
                                      to_integers(a, bit_depth))
    else:
        assert image.alpha is None


def test_sixteen_bit_values_survive(tmp_path):
    pixels = np.array([[[1000], [65535]]]) / 65535
    write_image(tmp_path / "g.png", pixels, bit_depth=16)
    assert Image.open(tmp_path / "g.png").mode.startswith("I")  # really 16 bits on disk
    np.testing.assert_array_equal(to_integers(read_image(tmp_path / "g.png").pixels, 16),
                                  [[[1000], [65535]]])


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow_exif_transpose(orientation):
    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    image = Image.fromarray(a)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.info["exif"] = exif.tobytes()
    expected = np.asarray(ImageOps.exif_transpose(image))
    np.testing.assert_array_equal(_orient(a[..., None], orientation)[..., 0], expected)


def test_exif_orientation_is_applied_when_reading(tmp_path):
    a = np.zeros((20, 40, 3), np.uint8)
    a[:, 20:] = 255  # right half white
    exif = Image.new("RGB", (1, 1)).getexif()
    exif[0x0112] = 6  # stored sideways: display rotated 90 degrees clockwise
    Image.fromarray(a).save(tmp_path / "photo.jpg", exif=exif.tobytes(), quality=95)
    pixels = read_image(tmp_path / "photo.jpg").pixels
    assert pixels.shape == (40, 20, 3)
    assert pixels[30:, :, :].mean() > 0.9 and pixels[:10].mean() < 0.1  # white now at bottom


@pytest.mark.parametrize("make,problem", [
    (lambda p: None, "no such file"),
    (lambda p: p.write_bytes(b""), "empty file"),
    (lambda p: p.write_text("not an image"), "not an image"),
    (lambda p: p.write_bytes(_png_bytes(p)[:70]), "truncated"),
])
def test_bad_files_raise_one_clear_error_naming_the_file(tmp_path, make, problem):
    path = tmp_path / "bad.png"
    make(path)
    with pytest.raises(ImageReadError, match=problem) as info:
        read_image(path)
    assert str(path) in str(info.value)


def _png_bytes(path):
    write_image(path, np.random.default_rng(0).random((16, 16, 3)))
    return path.read_bytes()


def test_write_is_atomic_and_leaves_no_temporary_files(tmp_path):
    path = tmp_path / "x.png"
    write_image(path, np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match="16-bit"):
        write_image(tmp_path / "x.jpg", np.zeros((4, 4, 3)), bit_depth=16)
    with pytest.raises(ValueError, match=r"\[H, W, 1\]"):
        write_image(path, np.zeros((4, 4, 2)))
    assert os.listdir(tmp_path) == ["x.png"]
    assert read_image(path).pixels.shape == (4, 4, 3)


def test_list_images_by_extension_sorted(tmp_path):
    for name in ("b.PNG", "a.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "dir.png").mkdir()
    assert [os.path.basename(p) for p in list_images(tmp_path)] == ["a.jpg", "b.PNG"]


def test_docstring_examples_run():
    import pnen_tf.image_io as module

    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def _png_header_only(path, width, height):
    """A PNG whose header claims `width` x `height` pixels (a decompression bomb's header)."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
                     + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


def test_a_decompression_bomb_is_an_image_read_error_naming_the_file(tmp_path):
    path = tmp_path / "bomb.png"
    _png_header_only(path, 30000, 30000)
    with pytest.raises(ImageReadError, match="too large to decode safely") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_an_animation_is_refused_not_cut_to_its_first_frame(tmp_path):
    frames = [Image.new("RGB", (6, 5), colour) for colour in ("red", "blue", "green")]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "still.gif")
    with pytest.raises(ImageReadError, match="3 frames") as info:
        read_image(tmp_path / "anim.gif")
    assert str(tmp_path / "anim.gif") in str(info.value)
    assert read_image(tmp_path / "still.gif").pixels.shape == (5, 6, 3)
    # Folder runs list GIFs, so an animation is reported rather than silently skipped.
    assert [os.path.basename(p) for p in list_images(tmp_path)] == ["anim.gif", "still.gif"]


def test_written_images_get_the_usual_permissions(tmp_path):
    mask = os.umask(0)
    os.umask(mask)
    write_image(tmp_path / "x.png", np.zeros((4, 4, 3)))
    assert (tmp_path / "x.png").stat().st_mode & 0o777 == 0o666 & ~mask
