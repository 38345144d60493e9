"""Coverage-guided fuzzing (atheris, i.e. libFuzzer) of what the service does with a request before the models:
image decoding, and each request message's conversion into data-plane types.

    python tests/fuzz/fuzz_inputs.py TARGET [libFuzzer options] [CORPUS_DIR ...]
    python tests/fuzz/fuzz_inputs.py images -runs=10000 -seed=1          # what CI runs (tests/test_fuzz.py)
    python tests/fuzz/fuzz_inputs.py frame -max_total_time=1800 corpus/  # a longer run, corpus kept

Targets (the server's limits: 3840 x 2160 pixels, 16 MiB):
  images   bytes -> decode_image, and open_frame with three regions revealed (the region decoder, _jpegregion.c);
           seeded with small real encodings (baseline and progressive JPEG, PNG 8/16-bit, grey and alpha, WebP),
           so mutations keep enough structure to reach the decoders
  raw      RawImage fields (any size, channels, pixel type, order, byte count) -> RawPixels.to_bgr
  frame    a Frame from fuzzed fields (ids, capture time, sequence, encoded or raw image) -> frame_problem,
           image_of, stream_frame, then the frame's image through the data plane's decode and budget sizing
  request  MatchRequest bytes as gRPC hands them over (unparsable bytes never reach a servicer) -> as frame
  gallery  a GalleryHeader from fuzzed fields -> load_header
A finding is any exception other than the typed errors the service maps to a gRPC status (GatematchError), a
decoded image that is not H x W x 3 uint8 within the limits, or a conversion that raises where it must not.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["gatematch"]):
    from gatematch.errors import GatematchError
    from gatematch.images import ImageLimits, JpegFrame, decode_image, megapixels, open_frame
    from gatematch.service.config import MatchConfig, ServerConfig
    from gatematch.service.converters import frame_problem, image_of, load_header, stream_frame
    from gatematch.service.dataplane import RawPixels
    from gatematch.v1 import gallery_pb2, match_pb2

import cv2
import numpy as np
from google.protobuf.message import DecodeError

LIMITS = ImageLimits(max_pixels=MatchConfig().max_pixels, max_bytes=ServerConfig().max_message_bytes)
# The largest frame within the limits, 3840 x 2160, decoded as 16-bit BGRA and converted, takes about 160 MB.
MAX_INPUT_MB = 300
MAX_TEXT = 300  # a little over what the audit log records, so both sides of that limit are reached


def check_image(image: np.ndarray) -> None:
    if not (image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3):
        raise AssertionError(f"decoded to {image.dtype} {image.shape}, not H x W x 3 uint8")
    if image.shape[0] * image.shape[1] > LIMITS.max_pixels:
        raise AssertionError(f"decoded {image.shape} past the pixel limit")


def reset_peak() -> None:
    """Make the peak resident size the current one (Linux's /proc/PID/clear_refs, 5), so that the peak read
    after an input is that input's alone, whatever came before it."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_mb() -> float:
    """The peak resident size since the last reset_peak (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kilobytes
    raise RuntimeError("no VmHWM in /proc/self/status")


def current_mb() -> float:
    return int(Path("/proc/self/statm").read_text().split()[1]) * resource.getpagesize() / 2**20


def through_data_plane(image: bytes | RawPixels) -> None:
    """What DataPlane sizes and decodes for a frame: typed errors only, and no input that takes more memory at
    its peak than a frame within the limits can (libFuzzer's own RSS check, once a second, names whatever
    input runs when it looks, often a later one: this check names the input that did it)."""
    reset_peak()
    before = current_mb()
    if not isinstance(image, RawPixels):
        megapixels(image)  # sizing for the budget: never raises
    with contextlib.suppress(GatematchError):
        check_image(image.to_bgr(LIMITS) if isinstance(image, RawPixels) else decode_image(image, LIMITS))
    if not isinstance(image, RawPixels):
        with contextlib.suppress(GatematchError):
            reveal_regions(open_frame(image, LIMITS), image[-8:])
    grown = peak_mb() - before
    if grown > MAX_INPUT_MB:
        raise AssertionError(f"one input took {grown:.0f} MB at its peak (at most {MAX_INPUT_MB} MB)")


def reveal_regions(frame: np.ndarray | JpegFrame, choice: bytes) -> None:
    """A camera stream's frame as the focus reads it: a window and a face's context elsewhere (placed by the
    input's last bytes, so that mutations move them), then all of it."""
    if isinstance(frame, JpegFrame):
        height, width = frame.shape[:2]
        values = choice.ljust(8, b"\0")
        corners = [(values[i] * width // 256, values[i + 1] * height // 256) for i in range(0, 8, 2)]
        for (x1, y1), (x2, y2) in (corners[0:2], corners[2:4]):
            frame.reveal((min(x1, x2), min(y1, y2), max(x1, x2) + 1, max(y1, y2) + 1))
        frame = frame.reveal((0, 0, width, height))
    check_image(frame)


def fuzz_images(data: bytes) -> None:
    through_data_plane(data)


def fuzz_raw(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    width = fdp.ConsumeIntInRange(0, 5000) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 2**32 - 1)
    height = fdp.ConsumeIntInRange(0, 5000) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 2**32 - 1)
    channels = fdp.ConsumeIntInRange(0, 6)
    dtype = fdp.PickValueInList(["uint8", "uint16", "float32", "float64", "int8", "", "type 7"])
    rgb = fdp.ConsumeBool()
    needed = width * height * channels * {"uint16": 2, "float32": 4}.get(dtype, 1)
    # Near the needed size when that is small (off by a few bytes, or exact), anything up to 4 KiB otherwise.
    size = (
        max(needed + fdp.ConsumeIntInRange(-3, 3), 0)
        if needed <= 64 * 64 * 16
        else fdp.ConsumeIntInRange(0, 4096)
    )
    pixels = fdp.ConsumeBytes(size)
    through_data_plane(RawPixels(pixels + bytes(size - len(pixels)), width, height, channels, dtype, rgb))


def _text(fdp: atheris.FuzzedDataProvider) -> str:
    return fdp.ConsumeUnicodeNoSurrogates(fdp.ConsumeIntInRange(0, MAX_TEXT))


def _frame(fdp: atheris.FuzzedDataProvider) -> match_pb2.Frame:
    frame = match_pb2.Frame(camera_id=_text(fdp), gate_id=_text(fdp), flight_id=_text(fdp))
    frame.sequence = fdp.ConsumeIntInRange(0, 2**64 - 1)
    if fdp.ConsumeBool():
        frame.captured_at.seconds = fdp.ConsumeIntInRange(-(2**63), 2**63 - 1)
        frame.captured_at.nanos = fdp.ConsumeIntInRange(-(2**31), 2**31 - 1)
    kind = fdp.ConsumeIntInRange(0, 2)
    if kind == 1:
        raw = frame.image.raw
        raw.width = fdp.ConsumeIntInRange(0, 2**32 - 1) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 64)
        raw.height = (
            fdp.ConsumeIntInRange(0, 2**32 - 1) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 64)
        )
        raw.channels = (
            fdp.ConsumeIntInRange(0, 2**32 - 1) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 5)
        )
        raw.dtype = (
            fdp.ConsumeIntInRange(-(2**31), 2**31 - 1) if fdp.ConsumeBool() else fdp.ConsumeIntInRange(0, 4)
        )
        raw.channel_order = fdp.ConsumeIntInRange(0, 3)
        raw.pixels = fdp.ConsumeBytes(fdp.ConsumeIntInRange(0, 64 * 64 * 4 * 4))
    elif kind == 2:
        frame.image.encoded = fdp.ConsumeBytes(fdp.remaining_bytes())
    return frame


def convert_frame(frame: match_pb2.Frame) -> None:
    """The conversions the servicers apply (service/converters.py): they must not raise (a problem is
    returned, or carried by the frame)."""
    problem = frame_problem(frame)
    if problem is not None and not isinstance(problem, GatematchError):
        raise AssertionError(f"frame_problem returned {problem!r}")
    received = stream_frame(frame)
    if (received.problem is None) != (problem is None):
        raise AssertionError("stream_frame and frame_problem disagree")
    through_data_plane(image_of(frame))


def fuzz_frame(data: bytes) -> None:
    convert_frame(_frame(atheris.FuzzedDataProvider(data)))


def fuzz_request(data: bytes) -> None:
    try:
        request = match_pb2.MatchRequest.FromString(data)
    except DecodeError:
        return  # gRPC refuses unparsable bytes before any servicer sees them
    convert_frame(request.frame)


def fuzz_gallery(data: bytes) -> None:
    fdp = atheris.FuzzedDataProvider(data)
    header = gallery_pb2.GalleryHeader(flight_id=_text(fdp), pack=_text(fdp), embedder=_text(fdp))
    header.embedder_sha256 = _text(fdp)
    header.embedding_size = fdp.ConsumeIntInRange(0, 2**32 - 1)
    if fdp.ConsumeBool():
        header.departure_utc.seconds = fdp.ConsumeIntInRange(-(2**63), 2**63 - 1)
        header.departure_utc.nanos = fdp.ConsumeIntInRange(-(2**31), 2**31 - 1)
    if fdp.ConsumeBool():
        header.retention.seconds = fdp.ConsumeIntInRange(-(2**63), 2**63 - 1)
        header.retention.nanos = fdp.ConsumeIntInRange(-(2**31), 2**31 - 1)
    with contextlib.suppress(GatematchError):
        load_header(header)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "images": fuzz_images,
    "raw": fuzz_raw,
    "frame": fuzz_frame,
    "request": fuzz_request,
    "gallery": fuzz_gallery,
}


def _encodings() -> dict[str, bytes]:
    """Small real encodings, so mutations keep enough structure to reach the decoders."""
    rng = np.random.default_rng(0)
    image = cv2.resize(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8), (32, 24))
    encodings = {
        "baseline.jpg": cv2.imencode(".jpg", image)[1],
        "progressive.jpg": cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1],
        "grey.jpg": cv2.imencode(".jpg", image[:, :, 0])[1],
        "rgb.png": cv2.imencode(".png", image)[1],
        "sixteen.png": cv2.imencode(".png", image.astype(np.uint16) * 257)[1],
        "alpha.png": cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_BGR2BGRA))[1],
        "grey.png": cv2.imencode(".png", image[:, :, 0])[1],
        "lossy.webp": cv2.imencode(".webp", image)[1],
        "lossless.webp": cv2.imencode(".webp", image, [cv2.IMWRITE_WEBP_QUALITY, 101])[1],
    }
    return {name: encoded.tobytes() for name, encoded in encodings.items()}


def write_seeds(target: str, folder: Path) -> None:
    encodings = _encodings()
    if target == "images":
        seeds = encodings
    else:  # request: whole MatchRequests around the same images, encoded and raw
        seeds = {}
        for name, data in encodings.items():
            frame = match_pb2.Frame(camera_id="cam-1", gate_id="A1", flight_id="GM101", sequence=7)
            frame.captured_at.seconds = 1_900_000_000
            frame.image.encoded = data
            seeds[name] = match_pb2.MatchRequest(frame=frame, max_candidates=3).SerializeToString()
        raw = match_pb2.RawImage(pixels=bytes(range(256)) * 9, width=32, height=24, channels=3)
        seeds["raw"] = match_pb2.MatchRequest(
            frame=match_pb2.Frame(image=match_pb2.Image(raw=raw))
        ).SerializeToString()
    for name, data in seeds.items():
        (folder / name).write_bytes(data)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in TARGETS:
        raise SystemExit(f"usage: {sys.argv[0]} {{{','.join(TARGETS)}}} [libFuzzer options] [CORPUS_DIR ...]")
    target = sys.argv.pop(1)
    args = sys.argv
    with tempfile.TemporaryDirectory(prefix=f"gatematch-fuzz-{target}-") as seeds:
        if target in ("images", "request") and not any(not a.startswith("-") for a in args[1:]):
            write_seeds(target, Path(seeds))
            args = [*args, seeds]  # libFuzzer's corpus: the seeds, and what it finds (gone with the folder)
        atheris.Setup(args, TARGETS[target])
        atheris.Fuzz()


if __name__ == "__main__":
    main()
