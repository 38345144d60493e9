"""Frames of a video file, standing in for a gate camera: paced at a rate, or sampled across the file."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from gatematch.errors import BadImageError


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[cv2.VideoCapture]:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise BadImageError(f"cannot open video {path}")
    try:
        yield capture
    finally:
        capture.release()


def read_frames(path: Path, fps: float | None = None, seconds: float | None = None) -> Iterator[np.ndarray]:
    """BGR frames in order, thinned to `fps` (never above the video's own rate), up to `seconds` of video."""
    with _opened(path) as capture:
        native = capture.get(cv2.CAP_PROP_FPS) or 25.0
        step = native / min(fps or native, native)  # source frames per frame handed out
        index, next_source = 0, 0.0
        while seconds is None or index / native < seconds:
            ok, image = capture.read()
            if not ok:
                return
            index += 1
            if index - 1 >= next_source:
                next_source += step
                yield image


def native_fps(path: Path) -> float:
    with _opened(path) as capture:
        return capture.get(cv2.CAP_PROP_FPS) or 25.0


def sampled_frames(path: Path, count: int, size: tuple[int, int]) -> list[np.ndarray]:
    """`count` frames spread evenly over the video, centre-cropped to the aspect of `size` and resized to it."""
    frames = []
    with _opened(path) as capture:
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        for index in np.linspace(0, max(total - 1, 0), count).astype(int):
            capture.set(cv2.CAP_PROP_POS_FRAMES, int(index))
            ok, frame = capture.read()
            if not ok:
                continue
            height, width = frame.shape[:2]
            target_w = min(width, int(height * size[0] / size[1]))
            left = (width - target_w) // 2
            frames.append(cv2.resize(frame[:, left : left + target_w], size, interpolation=cv2.INTER_AREA))
    if not frames:
        raise BadImageError(f"no frames could be read from {path}")
    return frames
