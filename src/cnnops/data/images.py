"""The one image decode function. Ingest, training, evaluation and serving all call it, so the
model always sees the same uint8 array for the same bytes; everything after it is inside the model.
"""

from __future__ import annotations

import functools
import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnops.core.errors import ImageDecodeError

# Container formats cnnops accepts, by what Pillow detects in the bytes (never by file extension).
ACCEPTED_FORMATS = frozenset({"JPEG", "PNG", "BMP", "GIF", "WEBP"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"})
COLOUR_MODES = ("L", "RGB")
DEFAULT_MAX_PIXELS = 40_000_000
_GREY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image: `pixels` is HxWxC uint8; the rest describes the file (size after EXIF turn)."""

    pixels: np.ndarray
    format: str
    source_mode: str
    width: int
    height: int

    @property
    def natural_mode(self) -> str:
        """ "L" for grey-family images, "RGB" for everything else: the dataset's mode is built from it."""
        return "L" if self.source_mode in _GREY_MODES else "RGB"


def decode_image(
    data: bytes,
    mode: str | None = None,
    size: tuple[int, int] | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DecodedImage:
    """Decode image bytes: EXIF transpose, convert to `mode` ("L"/"RGB"; None keeps the natural one),
    and fit to `size` (height, width) so a batch of images shares the model's input shape.

    Raises ImageDecodeError with a short reason for anything that is not a usable image.
    """
    if not data:
        raise ImageDecodeError("empty file")
    if mode is not None and mode not in COLOUR_MODES:
        raise ValueError(f"mode must be one of {COLOUR_MODES}, got {mode!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as opened:
                if opened.format not in ACCEPTED_FORMATS:
                    raise ImageDecodeError(f"unsupported image format {opened.format}")
                width, height = opened.size
                if width * height > max_pixels:
                    raise ImageDecodeError(f"{width}x{height} pixels is over the limit of {max_pixels}")
                opened.load()
                source_mode, fmt = opened.mode, opened.format
                img = ImageOps.exif_transpose(opened)
                width, height = img.size
                target = mode or ("L" if source_mode in _GREY_MODES else "RGB")
                img = _convert(img, target)
                if size is not None and img.size != (size[1], size[0]):
                    img = img.resize((size[1], size[0]), Image.Resampling.BILINEAR)
                pixels = np.asarray(img, dtype=np.uint8)
    except ImageDecodeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ImageDecodeError(f"decompression bomb: {err}") from None
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageDecodeError(f"corrupt image: {err}") from None
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    return DecodedImage(pixels, fmt, source_mode, width, height)


def perceptual_hash(pixels: np.ndarray) -> str:
    """64-bit DCT hash (pHash) as 16 hex digits: near-identical images (re-encoded, resized,
    slightly brightened) differ in a few bits, unrelated ones in about half of them."""
    grey = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels).convert("L")
    small = np.asarray(grey.resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float64)
    basis = _dct_basis()
    low = (basis @ small @ basis.T).ravel()  # the 8x8 lowest frequencies of the 2-D DCT
    bits = low > np.partition(low[1:], 31)[31]  # above the median, the DC term (brightness) left out
    return np.packbits(bits).tobytes().hex()


@functools.cache
def _dct_basis(size: int = 32, keep: int = 8) -> np.ndarray:
    """The first `keep` rows of the orthonormal DCT-II matrix for `size` points."""
    k = np.arange(keep)[:, None]
    n = np.arange(size)[None, :]
    basis = np.cos(np.pi * (2 * n + 1) * k / (2 * size)) * np.sqrt(2 / size)
    basis[0] /= np.sqrt(2)
    return basis


def sha256_bytes(data: bytes) -> str:
    """Content hash used for duplicate detection and the dataset fingerprint."""
    return hashlib.sha256(data).hexdigest()


def _convert(img: Image.Image, mode: str) -> Image.Image:
    """Convert any Pillow mode to L or RGB: transparency over white, 16-bit scaled, not clipped."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float64)
        peak = 65535.0 if img.mode.startswith("I") else max(float(arr.max()), 1.0)
        img = Image.fromarray(np.clip(arr / peak * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert(mode)
