"""Image intake: every supported layout becomes BGR uint8; every bad input gets a typed, clear error."""

from __future__ import annotations

import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest

from gatematch.errors import BadImageError, ImageTooLargeError
from gatematch.images import (
    MAX_JPEG_SCANS,
    MAX_PNG_CHUNKS,
    ImageLimits,
    decode_image,
    encode_jpeg,
    encoded_size,
    jpeg_scans,
    load_image,
    to_bgr,
)
from gatematch.video import sampled_frames
from support.jpegs import cut_and_terminate, progressive_bomb, repeated_scan_bomb


@pytest.fixture(scope="module")
def photo(faces_dir) -> np.ndarray:
    return cv2.imread(str(faces_dir / "examples6" / "obama" / "obama.jpg"))


def _encode(image: np.ndarray, ext: str) -> bytes:
    ok, data = cv2.imencode(ext, image)
    assert ok
    return data.tobytes()


@pytest.mark.parametrize("ext", [".jpg", ".png", ".webp"])
def test_encoded_formats_decode_to_bgr(photo, ext):
    data = _encode(photo, ext)
    _, size = encoded_size(data)
    assert size == (photo.shape[1], photo.shape[0])
    decoded = decode_image(data)
    assert decoded.dtype == np.uint8 and decoded.shape == photo.shape
    # Lossy codecs differ a little; the content must be the same picture.
    assert np.abs(decoded.astype(int) - photo.astype(int)).mean() < 6


def test_layouts_normalise(photo):
    gray = cv2.cvtColor(photo, cv2.COLOR_BGR2GRAY)
    assert np.array_equal(to_bgr(gray)[:, :, 1], gray)
    assert np.array_equal(to_bgr(gray[:, :, None])[:, :, 2], gray)
    bgra = cv2.cvtColor(photo, cv2.COLOR_BGR2BGRA)
    assert np.array_equal(to_bgr(bgra), photo)
    sixteen = photo.astype(np.uint16) * 257
    assert np.array_equal(to_bgr(sixteen), photo)
    png16 = decode_image(_encode(sixteen, ".png"))
    assert np.array_equal(png16, photo)


def test_file_path_and_missing_file(tmp_path, photo):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), photo)
    assert load_image(path).shape == photo.shape
    with pytest.raises(BadImageError, match="cannot read image"):
        load_image(tmp_path / "missing.jpg")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"hello world, not an image", "unsupported image format"),
        (b"\xff\xd8\xff", "truncated JPEG"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "truncated PNG"),
    ],
)
def test_bad_bytes(data, message):
    with pytest.raises(BadImageError, match=message):
        decode_image(data)


def test_truncated_and_corrupt_encodings(photo):
    jpeg = _encode(photo, ".jpg")
    with pytest.raises(BadImageError, match="truncated"):
        decode_image(jpeg[: len(jpeg) // 2])
    png = _encode(photo, ".png")
    for cut in (png[: len(png) // 2], png[:-12]):  # cut mid-stream or just before IEND: refused before libpng
        with pytest.raises(BadImageError, match="truncated PNG"):
            decode_image(cut)
    corrupt = bytearray(png)
    corrupt[100:400] = b"\x00" * 300
    with pytest.raises(BadImageError, match="corrupt"):
        decode_image(bytes(corrupt))


def _png_header_only(width: int, height: int) -> bytes:
    ihdr = b"IHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n" + len(ihdr[4:]).to_bytes(4, "big") + ihdr + zlib.crc32(ihdr).to_bytes(4, "big")
    )


def test_oversized_refused_before_decoding():
    # A 100000 x 100000 header with no pixel data: refused from the header alone (decompression-bomb guard).
    with pytest.raises(ImageTooLargeError, match="over the limit"):
        decode_image(_png_header_only(100_000, 100_000))
    with pytest.raises(ImageTooLargeError):
        decode_image(b"\xff\xd8" + b"\x00" * 100, ImageLimits(max_bytes=50))


def test_limits_apply_to_arrays_and_files(photo, tmp_path):
    small = ImageLimits(max_pixels=1000)
    with pytest.raises(ImageTooLargeError):
        to_bgr(photo, small)
    path = tmp_path / "big.jpg"
    cv2.imwrite(str(path), photo)
    with pytest.raises(ImageTooLargeError, match=r"big\.jpg"):
        load_image(path, small)


@pytest.mark.parametrize(
    "array",
    [
        np.zeros((0, 10, 3), np.uint8),
        np.zeros((10, 10, 2), np.uint8),
        np.zeros((10,), np.uint8),
        np.zeros((10, 10, 3), np.int64),
        np.full((4, 4, 3), np.nan, np.float32),
    ],
)
def test_bad_arrays(array):
    with pytest.raises(BadImageError):
        to_bgr(array)


def test_every_shared_photo_decodes(faces_dir):
    paths = sorted(
        p for p in faces_dir.rglob("*") if p.is_file() and p.suffix.lower() in {".jpg", ".png", ".jpeg"}
    )
    assert len(paths) > 4000
    for path in paths[::7]:
        image = load_image(path)
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8


# -- hostile JPEGs (issue 10) --------------------------------------------------------------------------------


def test_a_progressive_scan_bomb_is_refused_from_its_markers():
    """Thousands of near-empty scans: seconds of decoding in a small file, refused before any decoding."""
    bomb, scans = progressive_bomb(2400, 2400)
    assert scans > 2000
    with pytest.raises(BadImageError, match=f"over {MAX_JPEG_SCANS} scans"):
        decode_image(bomb)
    with pytest.raises(BadImageError, match="scans"):
        decode_image(repeated_scan_bomb(640, 480, MAX_JPEG_SCANS + 1))


def test_progressive_jpegs_that_encoders_write_decode(photo):
    data = cv2.imencode(".jpg", photo, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()
    assert jpeg_scans(data) > 1
    assert np.abs(decode_image(data).astype(int) - photo.astype(int)).mean() < 6
    allowed, scans = progressive_bomb(64, 48, components=1, bits=1)
    assert scans <= MAX_JPEG_SCANS and decode_image(allowed).shape == (48, 64, 3)
    refused, scans = progressive_bomb(64, 48, components=1, bits=2)
    assert scans > MAX_JPEG_SCANS
    with pytest.raises(BadImageError, match="scans"):
        decode_image(refused)


def _real_jpegs(faces_dir, video_dir) -> list[tuple[str, bytes]]:
    photos = [(p.name, p.read_bytes()) for p in sorted((faces_dir / "examples6").rglob("*.jpg"))[:6]]
    frames = [
        (f"{video.name}#{i}", encode_jpeg(frame))
        for video in sorted(video_dir.glob("*.mp4"))
        for i, frame in enumerate(sampled_frames(video, 2, (1280, 720)))
    ]
    return photos + frames


@pytest.mark.parametrize("fraction", [0.2, 0.5, 0.8, 0.95, 0.99])
def test_a_real_jpeg_cut_short_and_terminated_is_corrupt_not_grey_filled(faces_dir, video_dir, fraction):
    """Issue 10: libjpeg fills what is missing with grey and only warns; the strict decoder reports it."""
    for name, data in _real_jpegs(faces_dir, video_dir):
        with pytest.raises(BadImageError, match="corrupt JPEG") as caught:
            decode_image(cut_and_terminate(data, fraction))
        assert "premature end" in str(caught.value), name


def test_strict_decoding_gives_opencvs_pixels(faces_dir, video_dir):
    for name, data in _real_jpegs(faces_dir, video_dir):
        expected = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert np.array_equal(decode_image(data), expected), name


# -- hostile PNGs --------------------------------------------------------------------------------------------

_PEAK_RSS_AFTER_DECODING = """
import resource, sys
from gatematch.errors import BadImageError
from gatematch.images import decode_image
try:
    decode_image(sys.stdin.buffer.read())
except BadImageError as exc:
    print(exc, file=sys.stderr)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


def _peak_rss_mb_decoding(data: bytes) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS_AFTER_DECODING], input=data, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return int(done.stdout), done.stderr.decode(errors="replace")


def _with_chunk_length(png: bytes, chunk: bytes, length: int) -> bytes:
    at = png.index(chunk) - 4
    return png[:at] + length.to_bytes(4, "big") + png[at + 4 :]


def test_a_png_chunk_that_claims_gigabytes_is_refused_without_allocating_them(photo):
    """Found by the CI fuzz run: OpenCV 5's PNG reader allocates what a chunk's length field says before reading
    it, so a 45-byte PNG made the process take 0.8-4 GB (a camera could take the server down with a few)."""
    small = _encode(cv2.resize(photo, (32, 24)), ".png")
    baseline_mb, _ = _peak_rss_mb_decoding(small)
    for chunk in (b"IDAT", b"IEND"):
        hostile = _with_chunk_length(small, chunk, 0xFFFF_FF00)
        with pytest.raises(BadImageError, match=f"truncated PNG: chunk {chunk.decode()}"):
            decode_image(hostile)
        peak_mb, message = _peak_rss_mb_decoding(hostile)
        assert peak_mb < baseline_mb + 100, (chunk, peak_mb, baseline_mb, message)


def test_a_png_of_tens_of_thousands_of_empty_chunks_is_refused_from_its_chunk_list(photo):
    png = _encode(cv2.resize(photo, (32, 24)), ".png")
    empty = (0).to_bytes(4, "big") + b"gmPd" + zlib.crc32(b"gmPd").to_bytes(4, "big")
    at = png.index(b"IDAT") - 4
    padded = png[:at] + empty * (MAX_PNG_CHUNKS + 1) + png[at:]
    with pytest.raises(BadImageError, match=f"over {MAX_PNG_CHUNKS} chunks"):
        decode_image(padded)
    assert decode_image(png[:at] + empty * 100 + png[at:]).shape == (24, 32, 3)


def test_what_follows_a_pngs_end_is_never_read(photo):
    """Bytes after IEND are not part of the image (the chunk walk stops there, and so does OpenCV 5): a chunk
    claiming gigabytes after the end, or plain trailing bytes, change neither the pixels nor the memory."""
    small = _encode(cv2.resize(photo, (32, 24)), ".png")
    baseline_mb, _ = _peak_rss_mb_decoding(small)
    claim = (0xFFFF_FF00).to_bytes(4, "big") + b"IDAT" + bytes(64)
    for trailing in (claim, b"garbage" * 100):
        assert np.array_equal(decode_image(small + trailing), decode_image(small))
        peak_mb, message = _peak_rss_mb_decoding(small + trailing)
        assert peak_mb < baseline_mb + 100, (peak_mb, baseline_mb, message)
