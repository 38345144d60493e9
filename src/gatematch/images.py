"""Image intake: bytes or arrays in, one BGR uint8 array out, with limits checked before decoding.

Gate cameras and enrollment systems send JPEG/PNG/WebP bytes or raw arrays in many layouts. Everything past
this module sees exactly one layout (H x W x 3, uint8, BGR), so detectors never branch on input kinds.
The pixel limit is read from the file header first: a decompression bomb is refused before it is decoded.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from gatematch.errors import BadImageError, ImageTooLargeError


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int = 40_000_000
    max_bytes: int = 40 * 1024 * 1024


DEFAULT_LIMITS = ImageLimits()
PNG_END = b"IEND\xaeB`\x82"  # the IEND chunk type and its fixed CRC: the last 8 bytes of every PNG


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from the first SOFn marker, or None if the stream ends before one."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise BadImageError("corrupt JPEG: marker expected")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if pos + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height
        pos += 2 + length
    return None


def _webp_size(data: bytes) -> tuple[int, int] | None:
    chunk = data[12:16]
    if chunk == b"VP8X" and len(data) >= 30:
        width = 1 + int.from_bytes(data[24:27], "little")
        height = 1 + int.from_bytes(data[27:30], "little")
        return width, height
    if chunk == b"VP8L" and len(data) >= 25:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8 " and len(data) >= 30:
        width, height = struct.unpack("<HH", data[26:30])
        return width & 0x3FFF, height & 0x3FFF
    return None


def encoded_size(data: bytes) -> tuple[str, tuple[int, int] | None]:
    """(format, (width, height)) read from the header alone; the size is None when the header is cut short."""
    if data.startswith(b"\xff\xd8"):
        return "jpeg", _jpeg_size(data)
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(data) < 24:
            return "png", None
        width, height = struct.unpack(">II", data[16:24])
        return "png", (width, height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp", _webp_size(data)
    raise BadImageError("unsupported image format: expected JPEG, PNG or WebP bytes")


def _check_pixels(width: int, height: int, limits: ImageLimits) -> None:
    if width <= 0 or height <= 0:
        raise BadImageError(f"image has no pixels ({width}x{height})")
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of {limits.max_pixels}"
        )


def decode_image(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode JPEG/PNG/WebP bytes into BGR uint8, refusing oversized images before decoding them."""
    if not data:
        raise BadImageError("image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(f"image is {len(data)} bytes, over the limit of {limits.max_bytes}")
    data = bytes(data)
    fmt, size = encoded_size(data)
    if size is None:
        raise BadImageError(f"truncated {fmt.upper()}: the header ends before the image size")
    _check_pixels(*size, limits)
    # Truncation is checked before decoding: libpng would print its own error line first, and libjpeg fills a
    # cut-off JPEG with grey and only warns (a probe must not be half a face).
    if fmt == "png" and PNG_END not in data:
        raise BadImageError("truncated PNG: the IEND chunk that ends the image is missing")
    if fmt == "jpeg" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise BadImageError("truncated JPEG: the end-of-image marker is missing")
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise BadImageError(f"corrupt or truncated {fmt.upper()}: it could not be decoded")
    return to_bgr(decoded, limits)


def to_bgr(array: np.ndarray, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Normalise a decoded array (gray, BGR, BGRA; uint8 or uint16; HxW or HxWxC) to contiguous BGR uint8."""
    if not isinstance(array, np.ndarray):
        raise BadImageError(f"expected a numpy array, got {type(array).__name__}")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise BadImageError(f"unsupported image shape {array.shape}: expected HxW, HxWx1, HxWx3 or HxWx4")
    _check_pixels(array.shape[1], array.shape[0], limits)
    if array.dtype == np.uint16:
        array = (array >> 8).astype(np.uint8)
    elif array.dtype in (np.float32, np.float64):
        if not np.isfinite(array).all():
            raise BadImageError("float image contains NaN or infinity")
        array = np.clip(array * 255.0 if array.max() <= 1.0 else array, 0, 255).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise BadImageError(f"unsupported pixel type {array.dtype}: expected uint8, uint16 or float")
    if array.ndim == 2:
        return cv2.cvtColor(array, cv2.COLOR_GRAY2BGR)
    if array.shape[2] == 4:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2BGR)
    return np.ascontiguousarray(array)


ImageInput = bytes | bytearray | memoryview | np.ndarray | str | Path


def load_image(source: ImageInput, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Any supported input (encoded bytes, decoded array, file path) as BGR uint8."""
    if isinstance(source, np.ndarray):
        return to_bgr(source, limits)
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise BadImageError(f"cannot read image {path}: {exc.strerror or exc}") from None
        if size > limits.max_bytes:
            raise ImageTooLargeError(f"{path} is {size} bytes, over the limit of {limits.max_bytes}")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise BadImageError(f"cannot read image {path}: {exc.strerror or exc}") from None
        try:
            return decode_image(data, limits)
        except BadImageError as exc:
            raise type(exc)(f"{path}: {exc}") from None
    if isinstance(source, bytes | bytearray | memoryview):
        return decode_image(bytes(source), limits)
    raise BadImageError(f"unsupported image input of type {type(source).__name__}")
