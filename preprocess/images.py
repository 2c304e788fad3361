"""Decode, validate and normalise one image file with Pillow (no TensorFlow: runs in worker processes).

Every image is decoded once here so that training never meets a file it cannot read. Whatever comes
in (JPEG, PNG with alpha, first frame of a GIF, grayscale, CMYK JPEG, 16-bit PNG) goes out as 8-bit
RGB: transparent pixels are composited onto white (stickers are drawn for a white chat background,
and a black composite would turn dark line art invisible), and images larger than `max_side` are
shrunk once here so training never decodes more pixels than it uses. An untouched RGB/grayscale
JPEG keeps its original bytes (no second lossy pass); anything else is re-encoded losslessly as PNG,
or as JPEG at quality 95 when the source was a JPEG.
"""

from __future__ import annotations

import dataclasses
import io
import os
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

# We apply our own pixel limit with a clear message; Pillow's own check would raise or warn first.
Image.MAX_IMAGE_PIXELS = None

DEFAULT_MAX_PIXELS = 40_000_000
_EXIF_ORIENTATION = 0x0112
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


class ImageError(Exception):
    """An image that cannot be used; the message is the reason written to rejects.csv."""


@dataclasses.dataclass(frozen=True)
class ImageOptions:
    max_side: int | None = None
    max_pixels: int = DEFAULT_MAX_PIXELS
    png_compress_level: int = 3


def normalize_image_bytes(data: bytes, options: ImageOptions = ImageOptions()) -> tuple[bytes, str]:
    """Returns (bytes to store, "jpeg" | "png"), or raises ImageError with the reason."""
    if not data:
        raise ImageError("empty file (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError("not a recognised image format") from None
    except Exception as error:  # Pillow raises many types for damaged headers.
        raise ImageError(f"cannot open image: {error}") from None

    width, height = image.size
    if width <= 0 or height <= 0:
        raise ImageError(f"invalid image size {width}x{height}")
    if width * height > options.max_pixels:
        raise ImageError(
            f"{width}x{height} = {width * height} pixels exceeds the limit of {options.max_pixels} "
            "(possible decompression bomb)"
        )
    source_format = image.format
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. palette transparency notes; errors still raise
            image.seek(0)  # first frame of animations
            image.load()
    except Exception as error:
        raise ImageError(f"truncated or corrupt image data ({error})") from None

    converted = _to_rgb(image)
    oriented = _apply_exif_orientation(converted, image)
    resized = _shrink(oriented, options.max_side)

    untouched = resized is image and source_format == "JPEG" and image.mode in ("RGB", "L")
    if untouched:
        return data, "jpeg"
    buffer = io.BytesIO()
    if source_format == "JPEG":
        resized.save(buffer, format="JPEG", quality=95)
        return buffer.getvalue(), "jpeg"
    resized.save(buffer, format="PNG", compress_level=options.png_compress_level)
    return buffer.getvalue(), "png"


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode -> RGB (or L, which TensorFlow expands to RGB; kept to spare a re-encode)."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(image)), mode="L").convert("RGB")
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode in ("RGB", "L"):
        return image
    return image.convert("RGB")  # P, 1, CMYK (Pillow undoes Adobe's inverted CMYK), YCbCr, LAB...


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    """Scales 16/32-bit or float grayscale to 0..255 instead of clipping it (Pillow's convert clips)."""
    values = pixels.astype(np.float64)
    top = 65535.0 if values.max(initial=0) > 255 else 255.0
    if pixels.dtype.kind == "f":
        top = max(values.max(initial=0), 1.0)
    return np.clip(np.rint(values * (255.0 / top)), 0, 255).astype(np.uint8)


def _apply_exif_orientation(converted: Image.Image, original: Image.Image) -> Image.Image:
    """Camera JPEGs store rotation in EXIF; TensorFlow's decoder ignores it, so apply it once here."""
    try:
        orientation = original.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # unreadable EXIF is not a reason to drop an image
        return converted
    transpose = _ORIENTATION_TRANSPOSE.get(orientation)
    return converted.transpose(transpose) if transpose is not None else converted


def _shrink(image: Image.Image, max_side: int | None) -> Image.Image:
    if not max_side or max(image.size) <= max_side:
        return image
    scale = max_side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)


def file_signature(path: str) -> tuple[int, int]:
    """(size, mtime_ns) of a file, or (-1, -1) when missing: what input fingerprints are built from."""
    try:
        stat = os.stat(path)
    except OSError:
        return (-1, -1)
    return (stat.st_size, stat.st_mtime_ns)


def load_images(paths: list[str], options: ImageOptions) -> list[tuple[bytes | None, str] | str]:
    """Worker entry point: each path -> (bytes, format), or the reason it was rejected.

    Bytes come back as None when the file is stored untouched (a plain JPEG): the parent then reads
    the file itself, which costs far less than pickling every image through a pipe. Never raises
    for one bad image: a single broken file must not take down a chunk of good ones.
    """
    results: list[tuple[bytes | None, str] | str] = []
    for path in paths:
        try:
            with open(path, "rb") as handle:
                original = handle.read()
        except FileNotFoundError:
            results.append("file not found")
            continue
        except OSError as error:
            results.append(f"cannot read file: {error.strerror or error}")
            continue
        try:
            encoded, image_format = normalize_image_bytes(original, options)
            results.append((None if encoded is original else encoded, image_format))
        except ImageError as error:
            results.append(str(error))
        except Exception as error:  # a Pillow bug on one odd file is still a per-row rejection
            results.append(f"unexpected error decoding image: {type(error).__name__}: {error}")
    return results
