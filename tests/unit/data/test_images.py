import io

import numpy as np
import pytest
from PIL import Image

from cnnops.core.errors import ImageDecodeError
from cnnops.data.images import decode_image


def encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


def test_grey_png_keeps_one_channel_and_size():
    pixels = np.arange(6 * 10, dtype=np.uint8).reshape(6, 10)
    decoded = decode_image(encode(Image.fromarray(pixels)))
    assert decoded.pixels.shape == (6, 10, 1)
    assert decoded.natural_mode == "L"
    assert np.array_equal(decoded.pixels[:, :, 0], pixels)


def test_converts_to_requested_mode_and_size():
    decoded = decode_image(encode(Image.new("L", (10, 6), 7)), mode="RGB", size=(4, 5))
    assert decoded.pixels.shape == (4, 5, 3)
    assert decoded.pixels.dtype == np.uint8
    assert (decoded.pixels == 7).all()
    assert (decoded.width, decoded.height) == (10, 6)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (20, 10), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    decoded = decode_image(encode(img, "JPEG", exif=exif.tobytes()))
    assert decoded.pixels.shape == (20, 10, 3)


def test_sixteen_bit_is_scaled_not_clipped():
    pixels = np.array([[0, 32768, 65535]], dtype=np.uint16)
    decoded = decode_image(encode(Image.fromarray(pixels)))
    assert decoded.pixels[0, :, 0].tolist() == [0, 128, 255]


def test_transparency_is_composited_over_white():
    img = Image.new("RGBA", (2, 1), (0, 0, 0, 0))
    img.putpixel((1, 0), (0, 0, 0, 255))
    decoded = decode_image(encode(img), mode="L")
    assert decoded.pixels[0, :, 0].tolist() == [255, 0]


def test_cmyk_jpeg_becomes_rgb():
    decoded = decode_image(encode(Image.new("CMYK", (4, 4), (0, 255, 255, 0)), "JPEG"))
    assert decoded.pixels.shape == (4, 4, 3)
    assert decoded.natural_mode == "RGB"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty file"),
        (b"plain text, not pixels", "not an image"),
        (encode(Image.new("RGB", (64, 64)), "PNG")[:70], "corrupt image"),
        (encode(Image.new("RGB", (64, 64), (9, 9, 9)), "JPEG")[:200], "corrupt image"),
        (encode(Image.new("RGB", (8, 8)), "TIFF"), "unsupported image format TIFF"),
    ],
)
def test_bad_bytes_raise_a_reason(data, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        decode_image(data)


def test_pixel_limit_guards_against_bombs():
    with pytest.raises(ImageDecodeError, match="over the limit"):
        decode_image(encode(Image.new("L", (100, 100))), max_pixels=9_999)
