"""Image intake: bytes or arrays in, one BGR uint8 array out, with limits checked before decoding.

Gate cameras and enrollment systems send JPEG/PNG/WebP bytes or raw arrays in many layouts. Everything past
this module sees exactly one layout (H x W x 3, uint8, BGR), so detectors never branch on input kinds.
What decoding costs is bounded from the markers first: the pixel limit from the header (a decompression bomb),
the number of progressive scans from a walk over the JPEG's markers (a scan bomb: each scan costs a pass over
every block, however few bytes it holds), the PNG chunk lengths from a walk over its chunks (OpenCV allocates
what a length claims). JPEGs are decoded strictly (libjpeg-turbo through simplejpeg, every
libjpeg warning an error): a frame with corrupt or missing data is refused, never filled in with grey.

A camera stream's frame may be opened instead (`open_frame`): a baseline JPEG then becomes a `JpegFrame`, whose
pixels are decoded region by region as the work on it reaches them (the followed faces' window, a face's
alignment, its liveness context), through our libjpeg-turbo extension (`_jpegregion.c`): the same pixels as the
whole decode, at a fraction of its cost when the faces are small in the frame.
"""

from __future__ import annotations

import functools
import re
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import simplejpeg

from gatematch.errors import BadImageError, ImageTooLargeError

try:
    from gatematch import _jpegregion
except ImportError:  # built where no compiler or libjpeg headers were found: frames are decoded whole
    _jpegregion = None

Window = tuple[int, int, int, int]  # x1, y1, x2, y2: a region of a frame, in the frame's pixels


@dataclass(frozen=True)
class ImageLimits:
    max_pixels: int = 40_000_000
    max_bytes: int = 40 * 1024 * 1024


DEFAULT_LIMITS = ImageLimits()
# Encoders write 1 scan (baseline) or about 10 (libjpeg's progressive script: 10 for colour, 6 for grey); a
# valid progression may have up to 2,700, and each costs a pass over the image: 2,649 scans of a 2400 x 2400
# black image (84 KB) took 4-6 s to decode on the 2-core box. 100 scans bound a frame's decode to about 10
# times that of a baseline frame of its size.
MAX_JPEG_SCANS = 100
# OpenCV's PNG reader allocates what a chunk's length field says before reading the chunk: a 45-byte PNG claiming
# a 4 GB IDAT took 4 GB (found by the fuzz run). Chunks are therefore walked first; encoders write chunks of 8 KB
# or more (libpng's IDAT size), so a frame under the 16 MiB message limit has a few thousand at most, and the
# walk over 65,536 stays under about 30 ms.
MAX_PNG_CHUNKS = 65_536
# In entropy-coded data 0xFF is followed by 0x00 (stuffing) or a restart marker; anything else starts a marker.
_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7]")


def _jpeg_markers(data: bytes, count_scans: bool) -> tuple[tuple[int, int] | None, int]:
    """(width, height) from the SOFn marker (None if the stream ends before it) and, with `count_scans`, the
    number of scans (else the walk stops at the size).

    Walks marker segments by their lengths and skips each scan's entropy-coded data to the next marker; stops
    (and raises) past MAX_JPEG_SCANS, so the walk itself is bounded too."""
    size, scans, pos = None, 0, 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise BadImageError("corrupt JPEG: marker expected")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:  # end of image
            break
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            raise BadImageError(f"corrupt JPEG: marker 0x{marker:02X} has length {length}")
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and size is None:
            if pos + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            size = (width, height)
            if not count_scans:
                break
        pos += 2 + length
        if marker == 0xDA:  # start of scan: its entropy-coded data runs to the next marker
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise BadImageError(
                    f"JPEG has over {MAX_JPEG_SCANS} scans (each one a pass over the whole image): refused "
                    "before decoding"
                )
            found = _MARKER_AFTER_SCAN.search(data, pos)
            if found is None:
                break
            pos = found.start()
    return size, scans


def jpeg_scans(data: bytes) -> int:
    """Number of scans of a JPEG (1 for baseline); BadImageError over MAX_JPEG_SCANS."""
    return _jpeg_markers(data, count_scans=True)[1]


def _check_png_chunks(data: bytes) -> None:
    """Every chunk inside the data up to IEND, at most MAX_PNG_CHUNKS of them; BadImageError otherwise.

    Lengths only: libpng checks each chunk's CRC and contents itself."""
    pos, chunks = 8, 0
    while pos + 8 <= len(data):
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise BadImageError(f"PNG has over {MAX_PNG_CHUNKS} chunks: refused before decoding")
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        if pos + 12 + length > len(data):
            name = kind.decode("ascii", "replace") if kind.isalpha() else kind.hex()
            raise BadImageError(
                f"truncated PNG: chunk {name} at byte {pos} declares {length} bytes, past the end of the "
                f"{len(data)}-byte image"
            )
        if kind == b"IEND":
            return
        pos += 12 + length
    raise BadImageError("truncated PNG: the IEND chunk that ends the image is missing")


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
        return "jpeg", _jpeg_markers(data, count_scans=False)[0]
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        if len(data) < 24:
            return "png", None
        width, height = struct.unpack(">II", data[16:24])
        return "png", (width, height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp", _webp_size(data)
    raise BadImageError("unsupported image format: expected JPEG, PNG or WebP bytes")


def megapixels(data: bytes) -> float:
    """Width x height / 1e6 from the header, what decoding costs grow with; 0 when the header is unreadable
    (such bytes are refused before any decoding)."""
    try:
        _, size = encoded_size(data)
    except BadImageError:
        return 0.0
    return size[0] * size[1] / 1e6 if size else 0.0


def _check_pixels(width: int, height: int, limits: ImageLimits) -> None:
    if width <= 0 or height <= 0:
        raise BadImageError(f"image has no pixels ({width}x{height})")
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(
            f"image is {width}x{height} = {width * height} pixels, over the limit of {limits.max_pixels}"
        )


def _checked(data: bytes, limits: ImageLimits) -> tuple[str, tuple[int, int], int]:
    """(format, (width, height), JPEG scans) of bytes that may be decoded: every check that needs no decoding."""
    if not data:
        raise BadImageError("image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ImageTooLargeError(f"image is {len(data)} bytes, over the limit of {limits.max_bytes}")
    fmt, size = encoded_size(data)
    if size is None:
        raise BadImageError(f"truncated {fmt.upper()}: the header ends before the image size")
    _check_pixels(*size, limits)
    # Truncation is checked before decoding: libpng would print its own error line first. A JPEG cut short
    # (end marker missing) is named as such here; one cut short and terminated again, or otherwise damaged, is
    # reported by the strict decoder (libjpeg alone fills the gap with grey and warns: half a face must not
    # match).
    if fmt == "png":
        _check_png_chunks(data)
    scans = 0
    if fmt == "jpeg":
        if not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
            raise BadImageError("truncated JPEG: the end-of-image marker is missing")
        scans = jpeg_scans(data)
    return fmt, size, scans


def decode_image(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode JPEG/PNG/WebP bytes into BGR uint8, refusing oversized images before decoding them."""
    data = bytes(data)
    return _decode(data, _checked(data, limits)[0], limits)


def _decode(data: bytes, fmt: str, limits: ImageLimits) -> np.ndarray:
    if fmt == "jpeg":
        try:
            return simplejpeg.decode_jpeg(data, "BGR", strict=True)
        except ValueError as exc:  # libjpeg's message: no path, no pixel data
            raise BadImageError(f"corrupt JPEG: {exc}") from None
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise BadImageError(f"corrupt or truncated {fmt.upper()}: it could not be decoded")
    return to_bgr(decoded, limits)


# Each region decode reads the entropy-coded data of every row above it again: a region over more of the frame
# than this is decoded whole (and a frame decoded whole is never decoded again).
WHOLE_SHARE = 0.5
# Narrower than this, a region is widened: libjpeg upsamples a one-sample-wide chroma crop another way (box, not
# fancy), which changes its pixels.
MIN_REGION_WIDTH = 32


class JpegFrame:
    """A baseline JPEG frame decoded region by region (`reveal`), as the work on it reaches its pixels.

    `pixels` has the frame's shape, but only the regions revealed hold its pixels (the rest is black: never a
    previous frame's, whatever a reader that forgot to reveal might read), so every reader reveals first what it
    reads; `shape` is the frame's, as for an array. Decoding is as strict as `decode_image`'s over the rows up
    to the region's last: every libjpeg warning there is an error. Data below that row is not read at all (a
    whole-frame search reveals, and so checks, all of it).
    """

    def __init__(self, data: bytes, width: int, height: int):
        self._data = data
        self.pixels = np.zeros((height, width, 3), np.uint8)
        self.decoded: Window | None = None  # the region whose pixels are exact
        self.seconds = 0.0  # spent decoding so far

    @property
    def shape(self) -> tuple[int, ...]:
        return self.pixels.shape

    def reveal(self, region: Window) -> np.ndarray:
        """`pixels`, exact at least over `region` (clipped to the frame)."""
        height, width = self.pixels.shape[:2]
        x1, y1 = max(region[0], 0), max(region[1], 0)
        x2, y2 = min(region[2], width), min(region[3], height)
        if x2 <= x1 or y2 <= y1:
            return self.pixels
        if self.decoded is not None:
            d1, e1, d2, e2 = self.decoded
            if d1 <= x1 and e1 <= y1 and x2 <= d2 and y2 <= e2:
                return self.pixels
            x1, y1, x2, y2 = min(x1, d1), min(y1, e1), max(x2, d2), max(y2, e2)
        if (x2 - x1) * (y2 - y1) > WHOLE_SHARE * width * height:
            x1, y1, x2, y2 = 0, 0, width, height
        if x2 - x1 < MIN_REGION_WIDTH:
            x1 = max(min(x1, width - MIN_REGION_WIDTH), 0)
            x2 = min(x1 + MIN_REGION_WIDTH, width)
        start = time.perf_counter()
        try:
            # a pixel more on each side: the chroma upsampling differs at a cut edge (libjpeg widens the
            # columns further, to its block grid)
            first, last = _jpegregion.decode_region(
                self._data, self.pixels, width, height, max(x1 - 1, 0), y1, min(x2 + 1, width), y2
            )
        except ValueError as exc:
            raise BadImageError(f"corrupt JPEG: {exc}") from None
        except NotImplementedError:  # neither greyscale nor three components: decoded whole, as ever
            self.pixels[:] = _decode(self._data, "jpeg", DEFAULT_LIMITS)
            first, last, y1, y2 = 0, width, 0, height
        finally:
            self.seconds += time.perf_counter() - start
        self.decoded = (first + (first > 0), y1, last - (last < width), y2)
        return self.pixels


def open_frame(data: bytes, limits: ImageLimits = DEFAULT_LIMITS) -> np.ndarray | JpegFrame:
    """A frame to analyse: a baseline JPEG as a `JpegFrame` (where the region decoder was built), anything
    else decoded whole. The same checks as `decode_image`, before any decoding."""
    data = bytes(data)
    fmt, (width, height), scans = _checked(data, limits)
    # a progressive JPEG is decoded whole: each of its regions would read every scan again
    if fmt != "jpeg" or scans != 1 or not decodes_by_region():
        return _decode(data, fmt, limits)
    return JpegFrame(data, width, height)


@functools.cache
def decodes_by_region() -> bool:
    """Whether `open_frame` decodes by region here: the decoder was built, and its regions hold simplejpeg's
    pixels. Both wrap libjpeg-turbo, in versions that may differ (Debian's and simplejpeg's own), so that is
    checked, once, on a small textured frame; else every frame is decoded whole."""
    if _jpegregion is None:
        return False
    texture = np.random.default_rng(0).integers(0, 256, (72, 88, 3), np.uint8)
    data = encode_jpeg(cv2.GaussianBlur(texture, (5, 5), 0))
    whole = _decode(data, "jpeg", DEFAULT_LIMITS)
    for x1, y1, x2, y2 in ((0, 0, 88, 72), (17, 9, 61, 50), (40, 30, 88, 72)):
        frame = JpegFrame(data, 88, 72)
        try:
            pixels = frame.reveal((x1, y1, x2, y2))
        except BadImageError:
            return False
        if not np.array_equal(pixels[y1:y2, x1:x2], whole[y1:y2, x1:x2]):
            return False
    return True


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise BadImageError("frame could not be JPEG-encoded")
    return encoded.tobytes()


def reveal(image: np.ndarray | JpegFrame, region: Window) -> np.ndarray:
    """The frame's pixels, exact at least over `region`: an array is all decoded, a JpegFrame reveals it."""
    return image.reveal(region) if isinstance(image, JpegFrame) else image


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
