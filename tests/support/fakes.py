"""A stand-in for FacePipeline, so the data plane and the stream scheduler can be tested without models.

A frame is a tiny raw image whose first pixel names a scripted scene; the fake pipeline answers each scene with
the faces the test wrote for it (box, template, quality, liveness, look). Everything around it is real: the gallery
store (SQLite + FAISS), the calibration table, the worker pool, the data plane, the scheduler and its focus
(windows are honoured: a face whose centre is outside the window asked for is not found).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from gatematch.detect import Detection
from gatematch.facepipeline import Analysis, Face, FaceWork, PipelineConfig, Skip
from gatematch.gallery_store import GalleryDraft, GalleryStore, TemplateRecord, TravelerRecord, open_store
from gatematch.images import Window
from gatematch.quality import QualityReport
from gatematch.service.dataplane import DataPlane, RawPixels
from gatematch.service.flow import WorkerPool
from support.synthetic import DEPARTURE, DIM, EMBEDDER, calibration

FRAME_SIZE = (640, 480)
MIN_FACE_PX = 10  # the fake detector misses smaller faces (at the scale it looks at)


@dataclass(frozen=True)
class FakeFace:
    box: tuple[float, float, float, float]
    template: np.ndarray | None  # None: no landmarks, nothing to embed
    quality_passed: bool = True
    liveness: float | None = None  # P(real); None when liveness is off
    score: float = 0.95
    look: int = 0  # what the face looks like (its aligned crop): one number per person


def crop_of(look: int) -> np.ndarray:
    """The aligned crop of a face that looks like `look`: the same pixels for the same number."""
    return np.random.default_rng(look).integers(0, 256, (112, 112, 3), dtype=np.uint8)


def at(x: float, y: float = 140.0, size: float = 160.0) -> tuple[float, float, float, float]:
    return (x, y, x + size, y + size)


@dataclass
class FakePipeline:
    """Answers `analyze_batch` from a script: scene number (the frame's first pixel) -> faces."""

    scenes: dict[int, list[FakeFace]]
    config: PipelineConfig = field(default_factory=PipelineConfig)
    calls: int = 0
    windows: list[Window | None] = field(default_factory=list)  # every detection's window, in order
    embedded: int = 0  # faces embedded
    any_size: bool = False  # windows and coarse looks cost less (as YuNet's); coarse ones miss small faces
    scale: float = 1.0  # the detector's input pixels per frame pixel (Detector.scale_of)
    _fakes: dict[int, FakeFace] = field(default_factory=dict)

    @property
    def detector(self) -> SimpleNamespace:
        return SimpleNamespace(any_size=self.any_size, scale_of=lambda width, height: self.scale)

    pack = SimpleNamespace(
        name="synthetic",
        embedder=SimpleNamespace(name=EMBEDDER.name, sha256=EMBEDDER.sha256),
        model_hashes={EMBEDDER.name: EMBEDDER.sha256},
    )
    embedding_size = DIM

    def with_quality(self, _thresholds: object) -> FakePipeline:
        return self

    def analyze_batch(self, images: list[np.ndarray]) -> list[Analysis]:
        return [self.analyze_detected(image, self.detect(image)) for image in images]

    def detect(self, image: np.ndarray, window: Window | None = None, coarse: float = 1.0) -> list[Detection]:
        self.calls += 1
        self.windows.append(window if coarse == 1.0 else ("coarse", window))
        found = []
        for fake in self.scenes[int(image[0, 0, 0])]:
            box = np.asarray(fake.box, np.float32)
            cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
            if window is not None and not (window[0] <= cx < window[2] and window[1] <= cy < window[3]):
                continue
            if (box[2] - box[0]) * coarse < MIN_FACE_PX:
                continue
            landmarks = np.zeros((5, 2), np.float32) if fake.template is not None else None
            detection = Detection(box, landmarks, fake.score)
            self._fakes[id(detection)] = fake
            found.append(detection)
        return found

    def analyze_detected(
        self, image: np.ndarray, detections: list[Detection], work: FaceWork | None = None
    ) -> Analysis:
        out = []
        for index, detection in enumerate(detections):
            fake = self._fakes.pop(id(detection))
            if detection.landmarks is None:
                out.append(Face(detection, None, None, fake.liveness))
            elif work is not None and not (
                work.aligns(index, detection) and work.assess(index, detection, crop_of(fake.look))
            ):
                out.append(Face(detection, None, None, None, Skip.ASSESSMENT))
            elif work is not None and not work.embed(index, detection, report(fake), fake.liveness):
                out.append(Face(detection, report(fake), None, fake.liveness, Skip.EMBEDDING))
            else:
                self.embedded += 1
                out.append(Face(detection, report(fake), fake.template, fake.liveness))
        return Analysis(tuple(out), FRAME_SIZE, {"detect": 0.0})


def report(fake: FakeFace) -> QualityReport:
    width = float(fake.box[2] - fake.box[0])
    return QualityReport(
        passed=fake.quality_passed,
        reasons=() if fake.quality_passed else ("face too blurred",),
        inter_eye_px=width * 0.4,
        yaw_deg=0.0,
        pitch_deg=0.0,
        sharpness=100.0,
        brightness=120.0,
        contrast=50.0,
        detector_score=fake.score,
        lightqnet=0.6,
    )


def frame(scene: int) -> RawPixels:
    """A 640x480 frame showing scripted scene number `scene` (0-255)."""
    width, height = FRAME_SIZE
    return RawPixels(bytes([scene]) * (width * height * 3), width, height, 3)


def write_gallery(
    store: GalleryStore,
    centres: np.ndarray,
    flight: str = "GM101",
    *,
    departure: datetime = DEPARTURE,
    direction: str = "departure",
    prefix: str = "T",
) -> None:
    """The flight's gallery in a real store: traveler <prefix><i> enrolled with centres[i]."""
    templates = tuple(
        TemplateRecord(f"{prefix}{i:03d}", f"synthetic:{i}", f"{i:064x}", {}, vector)
        for i, vector in enumerate(centres)
    )
    store.write(
        GalleryDraft(
            flight_id=flight,
            departure=departure,
            pack="synthetic",
            model_hashes={EMBEDDER.name: EMBEDDER.sha256},
            embedder=EMBEDDER,
            dim=DIM,
            travelers=tuple(TravelerRecord(t.traveler_id) for t in templates),
            templates=templates,
            failures=(),
            content_hash=f"{flight}-{len(centres)}-{prefix}",
            direction=direction,
        ),
        now=departure - timedelta(hours=2),  # the store refuses departures years ahead of its clock
    )


def data_plane(
    root: Path,
    pipeline: FakePipeline,
    *,
    frame_budget_s: float = 0.5,
    max_candidates: int = 5,
    timezone: tzinfo = UTC,
) -> DataPlane:
    """A data plane over the fake pipeline, a real store under `root` and a real two-worker pool."""
    store = open_store(root, retention=timedelta(days=365 * 10))
    return DataPlane(
        pipeline,  # type: ignore[arg-type]
        store,
        calibration(),
        WorkerPool(2, 8),
        target_fpir=0.003,
        max_candidates=max_candidates,
        frame_budget_s=frame_budget_s,
        timezone=timezone,
    )
