"""How much a camera-focus window changes a face: landmarks and template from the window the focus would give
the face (`service.focus.grown_window`) against the same face detected in the whole frame.

A window differs from the whole frame only near its edge (detect.py), but YuNet looks far around a face, so
what a window cuts off can move the landmarks and with them the template. DESIGN.md's window figures
(`margin`, `max_margin_px`) come from `gatematch bench window-fidelity` (benchmarks/cli.py):

    gatematch bench window-fidelity ../shared/faces/celeba_wild --every 2 --max-margin-px 96

Each path is a folder of photos (searched recursively) or a video file (sampled at `--fps`). The best-scored
face of each image is measured; `cap_binds` is the subset grown by `max_margin_px` rather than by `margin`
widths, and `fills_frame` counts faces the stream would detect in the whole frame instead (over
`max_window_share`: nothing to measure there).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gatematch.client import PHOTO_SUFFIXES
from gatematch.detect import Detection
from gatematch.facepipeline import FacePipeline
from gatematch.images import load_image
from gatematch.service.config import FocusConfig
from gatematch.service.focus import fills_frame, grown_by, grown_window
from gatematch.video import read_frames

SAME_FACE = (
    0.3  # a window's detection is the whole frame's face when no corner moved by this share of its width
)


@dataclass(frozen=True)
class FaceFidelity:
    width_px: float  # the face's width in the detector's input pixels
    cap_binds: bool
    fills_frame: (
        bool  # the stream would run the whole frame instead (service.focus.fills_frame): nothing differs
    )
    landmark_shift: float | None = None  # largest landmark move, per 100 px of face width; None: not found
    cosine: float | None = None  # window template . whole-frame template


def images_of(paths: Sequence[Path], every: int, fps: float) -> Iterator[np.ndarray]:
    """Every `every`-th photo of each folder (sorted) and every `every`-th frame of each video at `fps`."""
    for path in paths:
        if path.is_dir():
            photos = sorted(p for p in path.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES)
            yield from (load_image(photo) for photo in photos[::every])
        else:
            yield from itertools.islice(read_frames(path, fps), 0, None, every)


def measure_face(pipeline: FacePipeline, config: FocusConfig, image: np.ndarray) -> FaceFidelity | None:
    """The best-scored face of the image in its focus window against the whole frame; None when the whole frame
    has no face with landmarks."""
    whole = [d for d in pipeline.detect(image) if d.landmarks is not None]
    if not whole:
        return None
    face = whole[0]
    height, width = image.shape[:2]
    scale = pipeline.detector.scale_of(width, height)
    window = grown_window(config, [tuple(float(v) for v in face.box)], width, height, scale)
    binds = grown_by(config, face.width, scale) < config.margin * face.width
    if window is None or fills_frame(config, window, width, height):
        return FaceFidelity(face.width * scale, binds, fills_frame=True)
    found = [
        d
        for d in pipeline.detect(image, window)
        if d.landmarks is not None and float(np.abs(d.box - face.box).max()) < SAME_FACE * face.width
    ]
    if not found:
        return FaceFidelity(face.width * scale, binds, fills_frame=False)
    return FaceFidelity(
        face.width * scale,
        binds,
        False,
        float(np.abs(found[0].landmarks - face.landmarks).max()) / face.width * 100,
        float(_template(pipeline, image, found[0]) @ _template(pipeline, image, face)),
    )


def _template(pipeline: FacePipeline, image: np.ndarray, detection: Detection) -> np.ndarray:
    embedding = pipeline.analyze_detected(image, [detection]).faces[0].embedding
    if embedding is None:
        raise ValueError(f"pack '{pipeline.pack.name}' has no embedder: nothing to compare")
    return embedding


def summary(faces: list[FaceFidelity]) -> dict[str, object]:
    found = [f for f in faces if f.cosine is not None]
    shifts = np.array([f.landmark_shift for f in found])
    cosines = np.array([f.cosine for f in found])
    return {
        "faces": len(faces),
        "found_in_window": len(found),
        "median_width_px": round(float(np.median([f.width_px for f in faces])), 1) if faces else None,
        "landmark_shift_per_100px": {f"p{q}": round(float(np.percentile(shifts, q)), 2) for q in (50, 95)}
        if found
        else None,
        "template_cosine": {f"p{q}": round(float(np.percentile(cosines, q)), 4) for q in (1, 5, 50)}
        if found
        else None,
    }


def measure(pipeline: FacePipeline, config: FocusConfig, images: Iterator[np.ndarray]) -> dict[str, object]:
    measured = [one for image in images if (one := measure_face(pipeline, config, image)) is not None]
    faces = [f for f in measured if not f.fills_frame]
    return {
        "margin": config.margin,
        "max_margin_px": config.max_margin_px,
        "max_window_share": config.max_window_share,
        "all": summary(faces),
        "cap_binds": summary([f for f in faces if f.cap_binds]),
        "fills_frame": len(measured) - len(faces),
    }
