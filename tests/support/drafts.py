"""Synthetic galleries for store tests: clustered unit vectors (milliseconds to build, no model needed)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from gatematch.gallery import EnrollmentFailure, ModelRef, OperatingPoint
from gatematch.gallery_store import GalleryDraft, TemplateRecord, TravelerRecord

DIM = 128
EMBEDDER = ModelRef("mobilefacenet_128d", "a" * 64)
DEPARTURE = datetime(2030, 5, 1, 18, 30, tzinfo=UTC)
BEFORE = DEPARTURE - timedelta(hours=2)
RAW = OperatingPoint(threshold=0.5)


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def draft(
    travelers: int = 20, per_traveler: int = 2, seed: int = 0, flight: str = "GM101", tag: str = "T"
) -> tuple[GalleryDraft, np.ndarray]:
    """A gallery of `travelers` identities, each `per_traveler` noisy templates around its own centre."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(travelers, DIM)))
    templates = []
    for t in range(travelers):
        for p in range(per_traveler):
            vector = unit(centres[t] + 0.04 * rng.normal(size=DIM))
            templates.append(
                TemplateRecord(
                    f"{tag}{t:04d}", f"/photos/{tag}{t:04d}_{p}.jpg", f"{t:064x}", {"score": 0.9}, vector
                )
            )
    result = GalleryDraft(
        flight_id=flight,
        departure=DEPARTURE,
        pack="default",
        model_hashes={EMBEDDER.name: EMBEDDER.sha256},
        embedder=EMBEDDER,
        dim=DIM,
        travelers=(
            *(TravelerRecord(f"{tag}{t:04d}", "passport") for t in range(travelers)),
            TravelerRecord("NOFACE"),
        ),
        templates=tuple(templates),
        failures=(EnrollmentFailure("NOFACE", "/photos/noface.jpg", "no_face", "no face detected"),),
        content_hash=f"{tag}-{seed}-{travelers}-{per_traveler}",
    )
    return result, centres


def probe_of(centres: np.ndarray, traveler: int, seed: int = 99) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return unit(centres[traveler] + 0.04 * rng.normal(size=DIM))
