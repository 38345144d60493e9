"""JPEG decode time of real video frames: gatematch's strict decode against OpenCV's, the decoder it replaced.

`decode_image` walks the JPEG's markers (scan count), then decodes with libjpeg-turbo through simplejpeg in
strict mode; before issue 10 it handed the bytes to `cv2.imdecode`, which fills corrupt data with grey. Both are
timed on the same frames (centre-cropped and resized from the videos, JPEG quality 90, as `gatematch camera`
sends them), interleaved so that a busy machine slows both alike, one thread (as one inference worker decodes).

    python -m gatematch.benchmarks.decode --video ../shared/video/hieubkvn123_biden.mp4 --size 640x480 --size 1280x720
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from gatematch.benchmarks.overhead import stats
from gatematch.errors import ConfigError, GatematchError
from gatematch.images import decode_image, encode_jpeg
from gatematch.video import sampled_frames


def opencv_decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)


def measure(frames: list[bytes], repeats: int) -> dict[str, object]:
    """Per-frame decode times of both decoders, and whether they gave the same pixels."""
    times: dict[str, list[float]] = {"strict": [], "opencv": []}
    for data in frames:  # warm-up, and the pixels must agree
        if not np.array_equal(decode_image(data), opencv_decode(data)):
            raise ConfigError("the strict decoder and OpenCV disagree on a frame's pixels")
    for _ in range(repeats):
        for data in frames:
            for name, decode in (("strict", decode_image), ("opencv", opencv_decode)):
                start = time.perf_counter()
                decode(data)
                times[name].append(time.perf_counter() - start)
    result: dict[str, object] = {name: stats(samples).__dict__ for name, samples in times.items()}
    # Medians compare the decoders; on a shared machine a preempted call inflates the mean and the tail.
    result["ratio_p50"] = round(float(np.median(times["strict"]) / np.median(times["opencv"])), 3)
    result["ratio_mean"] = round(float(np.mean(times["strict"]) / np.mean(times["opencv"])), 3)
    result["frames"] = len(frames)
    result["mean_bytes"] = int(np.mean([len(f) for f in frames]))
    return result


def parse_size(text: str) -> tuple[int, int]:
    width, _, height = text.partition("x")
    if not (width.isdigit() and height.isdigit()):
        raise argparse.ArgumentTypeError(f"size must be WIDTHxHEIGHT, got {text!r}")
    return int(width), int(height)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--video", type=Path, action="append", required=True, help="video(s) to take frames from"
    )
    parser.add_argument("--size", type=parse_size, action="append", help="frame size WxH (repeatable)")
    parser.add_argument("--frames", type=int, default=30, help="frames per video")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", type=Path, help="also write the result here")
    args = parser.parse_args(argv)
    results = {}
    for size in args.size or [(640, 480), (1280, 720)]:
        frames = [encode_jpeg(f) for video in args.video for f in sampled_frames(video, args.frames, size)]
        results[f"{size[0]}x{size[1]}"] = result = measure(frames, args.repeats)
        print(f"{size[0]}x{size[1]}: {result['frames']} frames, {result['mean_bytes']} bytes each on average")
        for name in ("strict", "opencv"):
            row = result[name]
            print(
                f"  {name:<7} p50 {row['p50_ms']:.3f} ms  p99 {row['p99_ms']:.3f} ms  mean {row['mean_ms']:.3f} ms"
            )
        print(f"  strict / opencv: {result['ratio_p50']:.3f}x at p50, {result['ratio_mean']:.3f}x mean")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    try:
        raise SystemExit(main())
    except GatematchError as exc:
        raise SystemExit(f"decode: error: {exc}") from None
