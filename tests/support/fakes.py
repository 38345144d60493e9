"""A stand-in for FacePipeline, so the data plane and the stream scheduler can be tested without models.

A frame is a tiny raw image whose first pixel names a scripted scene; the fake pipeline answers each scene with
the faces the test wrote for it (box, template, quality, liveness). Everything around it is real: the gallery
store (SQLite + FAISS), the calibration table, the worker pool, the data plane and the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from gatematch.detect import Detection
from gatematch.facepipeline import Analysis, Face, PipelineConfig
from gatematch.gallery_store import GalleryDraft, GalleryStore, TemplateRecord, TravelerRecord, open_store
from gatematch.quality import QualityReport
from gatematch.service.dataplane import DataPlane, RawPixels
from gatematch.service.flow import WorkerPool
from support.synthetic import DEPARTURE, DIM, EMBEDDER, calibration

FRAME_SIZE = (640, 480)


@dataclass(frozen=True)
class FakeFace:
    box: tuple[float, float, float, float]
    template: np.ndarray | None  # None: no landmarks, nothing to embed
    quality_passed: bool = True
    liveness: float | None = None  # P(real); None when liveness is off
    score: float = 0.95


def at(x: float, y: float = 140.0, size: float = 160.0) -> tuple[float, float, float, float]:
    return (x, y, x + size, y + size)


@dataclass
class FakePipeline:
    """Answers `analyze_batch` from a script: scene number (the frame's first pixel) -> faces."""

    scenes: dict[int, list[FakeFace]]
    config: PipelineConfig = field(default_factory=PipelineConfig)
    calls: int = 0

    pack = SimpleNamespace(
        name="synthetic",
        embedder=SimpleNamespace(name=EMBEDDER.name, sha256=EMBEDDER.sha256),
        model_hashes={EMBEDDER.name: EMBEDDER.sha256},
    )
    embedding_size = DIM

    def with_quality(self, _thresholds: object) -> FakePipeline:
        return self

    def analyze_batch(self, images: list[np.ndarray]) -> list[Analysis]:
        self.calls += len(images)
        return [self._analysis(self.scenes[int(image[0, 0, 0])]) for image in images]

    @staticmethod
    def _analysis(faces: list[FakeFace]) -> Analysis:
        out = []
        for fake in faces:
            box = np.asarray(fake.box, np.float32)
            width = float(box[2] - box[0])
            report = QualityReport(
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
            detection = Detection(box, np.zeros((5, 2), np.float32), fake.score)
            out.append(
                Face(detection, report if fake.template is not None else None, fake.template, fake.liveness)
            )
        return Analysis(tuple(out), FRAME_SIZE, {"detect": 0.0})


def frame(scene: int) -> RawPixels:
    """A frame showing scripted scene number `scene` (0-255)."""
    return RawPixels(bytes([scene]) * 64 * 3, 8, 8, 3)


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
