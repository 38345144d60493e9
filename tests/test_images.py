"""Image intake: every supported layout becomes BGR uint8; every bad input gets a typed, clear error."""

from __future__ import annotations

import zlib

import cv2
import numpy as np
import pytest

from gatematch.errors import BadImageError, ImageTooLargeError
from gatematch.images import (
    MAX_JPEG_SCANS,
    ImageLimits,
    decode_image,
    encoded_size,
    jpeg_scans,
    load_image,
    to_bgr,
)
from gatematch.video import encode_jpeg, sampled_frames
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
