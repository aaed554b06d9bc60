"""Reading and writing images of any mode as float32 in [0, 1], with the facts to write them back.

Pillow identifies and fully decodes every file (so a truncated file or a text file named
`.png` fails here with a clear message) and applies the EXIF orientation. Pillow reduces
16-bit colour PNGs to 8 bits, so those (and 16-bit grayscale, for uniformity) are decoded by
OpenCV instead, keeping all 16 bits. Alpha is split from the colour channels: restoration
works on gray or RGB, alpha rides along.
"""

import dataclasses
import os

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from pnen_tf._atomic import write_atomically

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_EXIF_ORIENTATION = 0x0112


class ImageReadError(ValueError):
    """A file that cannot be read as an image; the message names the file and the problem."""


@dataclasses.dataclass
class LoadedImage:
    """Pixels plus what is needed to write an image like the one that was read.

    Attributes:
        pixels: float32 [H, W, C] in [0, 1], C = 1 (gray) or 3 (RGB), orientation applied.
        alpha: float32 [H, W, 1] in [0, 1], or None.
        bit_depth: 8 or 16 (bits per channel in the file).
        mode: Pillow's name for the file's mode ('L', 'RGB', 'RGBA', 'P', 'I;16', ...).
    """

    pixels: np.ndarray
    alpha: np.ndarray | None
    bit_depth: int
    mode: str


def _png_bit_depth(path):
    """Bits per channel from a PNG's IHDR chunk (byte 24 of the file), or None if not a PNG."""
    with open(path, "rb") as f:
        head = f.read(25)
    return head[24] if len(head) == 25 and head.startswith(_PNG_SIGNATURE) else None


def _open_checked(path):
    if not os.path.exists(path):
        raise ImageReadError(f"{path}: no such file")
    if not os.path.isfile(path):
        raise ImageReadError(f"{path}: not a file")
    if os.path.getsize(path) == 0:
        raise ImageReadError(f"{path}: empty file (0 bytes)")
    try:
        image = Image.open(path)
        image.load()
    except UnidentifiedImageError:
        raise ImageReadError(f"{path}: not an image file Pillow can identify") from None
    except Image.DecompressionBombError as error:  # its size comes from the header alone
        raise ImageReadError(f"{path}: too large to decode safely ({error})") from None
    except (OSError, SyntaxError, ValueError) as error:
        # Pillow's decoding errors carry no errno; the system's (permissions, I/O) do.
        problem = (f"cannot read it ({error.strerror})" if getattr(error, "errno", None)
                   else f"truncated or corrupt image ({error})")
        raise ImageReadError(f"{path}: {problem}") from None
    frames = getattr(image, "n_frames", 1)
    if frames > 1:  # restoring the first frame alone would silently drop the others
        raise ImageReadError(f"{path}: {frames} frames (an animation or a multi-page file); "
                             "only single images are restored: save each frame as a file")
    return image


def _orient(array, orientation):
    """Apply an EXIF orientation (1-8) to an [H, W, C] array, as `ImageOps.exif_transpose`."""
    flips = {2: (False, True, False), 3: (True, True, False), 4: (True, False, False),
             5: (False, False, True), 6: (False, True, True), 7: (True, True, True),
             8: (True, False, True)}
    flip_rows, flip_cols, transpose = flips.get(orientation, (False, False, False))
    if transpose:
        array = array.transpose(1, 0, 2)
    if flip_rows:
        array = array[::-1]
    if flip_cols:
        array = array[:, ::-1]
    return np.ascontiguousarray(array)


def _decode_16bit(path, orientation):
    data = cv2.imdecode(np.fromfile(path, np.uint8), cv2.IMREAD_UNCHANGED)
    if data is None:
        raise ImageReadError(f"{path}: 16-bit PNG that OpenCV cannot decode")
    data = data[..., None] if data.ndim == 2 else data
    channels = data.shape[-1]
    if channels >= 3:  # OpenCV decodes to BGR(A)
        data = data[..., [2, 1, 0, 3][:channels]]
    return _orient(data, orientation)


def _decode_8bit(image):
    image = ImageOps.exif_transpose(image)
    has_alpha = "A" in image.getbands() or "transparency" in image.info
    gray = image.mode in ("1", "L", "LA", "I", "I;16", "F")
    target = ("LA" if has_alpha else "L") if gray else ("RGBA" if has_alpha else "RGB")
    data = np.asarray(image.convert(target))
    return data[..., None] if data.ndim == 2 else data


def read_image(path):
    """Read an image file into a `LoadedImage`; raises `ImageReadError` naming the file.

    Example:
        >>> import numpy as np, tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "x.png")
        >>> write_image(path, np.full((2, 3, 1), 0.5, np.float32))
        >>> image = read_image(path)
        >>> image.pixels.shape, image.bit_depth, round(float(image.pixels[0, 0, 0]), 3)
        ((2, 3, 1), 8, 0.502)
    """
    path = os.fspath(path)
    image = _open_checked(path)
    mode = image.mode
    if _png_bit_depth(path) == 16:
        data, bit_depth = _decode_16bit(path, image.getexif().get(_EXIF_ORIENTATION, 1)), 16
    else:
        data, bit_depth = _decode_8bit(image), 8
    values = data.astype(np.float32) / np.float32(2**bit_depth - 1)
    colour = 1 if values.shape[-1] in (1, 2) else 3
    alpha = values[..., colour:] if values.shape[-1] in (2, 4) else None
    return LoadedImage(values[..., :colour], alpha, bit_depth, mode)


def to_integers(pixels, bit_depth=8):
    """Clip to [0, 1] and round to uint8 or uint16 (`bit_depth` 8 or 16)."""
    top = 2**bit_depth - 1
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    return np.round(np.clip(np.asarray(pixels, np.float64), 0.0, 1.0) * top).astype(dtype)


def write_image(path, pixels, alpha=None, bit_depth=8):
    """Write float [H, W, C] pixels in [0, 1] (C = 1 or 3) and optional alpha atomically.

    The file goes to a temporary name beside `path` and is renamed over it, so readers never
    see a half-written image (`pnen_tf._atomic`). The format follows the extension; 16 bits
    need PNG or TIFF.
    """
    path = os.fspath(path)
    pixels = np.asarray(pixels)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[-1] not in (1, 3):
        raise ValueError(f"{path}: expected [H, W, 1] or [H, W, 3] pixels, got {pixels.shape}")
    ext = os.path.splitext(path)[1].lower()
    if bit_depth == 16 and ext not in (".png", ".tif", ".tiff"):
        raise ValueError(f"{path}: 16-bit images need a .png or .tif name")
    if alpha is not None:
        # OpenCV's encoders take gray, BGR or BGRA: gray with alpha is written as RGBA.
        pixels = np.concatenate([np.broadcast_to(pixels, pixels.shape[:2] + (3,)), alpha], -1)
    data = to_integers(pixels, bit_depth)
    bgr = data if data.shape[-1] == 1 else data[..., [2, 1, 0, 3][: data.shape[-1]]]
    ok, encoded = cv2.imencode(ext, bgr)
    if not ok:
        raise ValueError(f"{path}: OpenCV cannot encode a {ext!r} image")
    write_atomically(path, encoded.tobytes())


IMAGE_EXTENSIONS = (".png", ".bmp", ".jpg", ".jpeg", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm")


def list_images(folder):
    """Image files (by extension, case-insensitive) directly inside `folder`, sorted by name."""
    names = sorted(n for n in os.listdir(folder) if n.lower().endswith(IMAGE_EXTENSIONS))
    return [os.path.join(folder, n) for n in names if os.path.isfile(os.path.join(folder, n))]
