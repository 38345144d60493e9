"""Synthetic templates for fast unit tests: galleries, probes at an exact cosine, and a calibration table.

Random unit vectors in 128 dimensions are independent strangers to each other (cosine ~ N(0, 1/128)), so a
calibration table measured on them is exactly right for galleries made of them: the FPIR the code predicts is
the FPIR the test observes.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime

import numpy as np

from gatematch.benchmarks.calibration import measure_calibration
from gatematch.calibration import CalibrationTable
from gatematch.gallery import Gallery, ModelRef, in_memory_gallery

DIM = 128
EMBEDDER = ModelRef("synthetic-embedder", "5" * 64)
DEPARTURE = datetime(2030, 5, 1, 18, 30, tzinfo=UTC)


def unit(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float64)
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


# Each helper draws from its own stream, so equal seeds in two helpers never give the same vectors.
_STRANGERS, _DIRECTIONS, _TABLE = 1, 2, 3


def strangers(count: int, seed: int = 0, dim: int = DIM) -> np.ndarray:
    return unit(np.random.default_rng([_STRANGERS, seed]).standard_normal((count, dim)))


def at_cosine(target: np.ndarray, cosine: float, seed: int = 0) -> np.ndarray:
    """A unit vector whose cosine to `target` is exactly `cosine` (the rest in a random orthogonal direction)."""
    rng = np.random.default_rng([_DIRECTIONS, seed])
    direction = rng.standard_normal(target.shape[-1])
    direction -= (direction @ target) * target
    direction /= np.linalg.norm(direction)
    return unit(cosine * target + np.sqrt(max(1.0 - cosine**2, 0.0)) * direction)


@functools.cache
def calibration(impostors: int = 200_000, seed: int = 99, dim: int = DIM) -> CalibrationTable:
    """The 1:1 impostor score table of independent random unit vectors (cached: the same for every test)."""
    rng = np.random.default_rng([_TABLE, seed])
    scores = []
    for start in range(0, impostors, 50_000):
        count = min(50_000, impostors - start)
        a = unit(rng.standard_normal((count, dim), dtype=np.float32))
        b = unit(rng.standard_normal((count, dim), dtype=np.float32))
        scores.append(np.einsum("ij,ij->i", a, b))
    return measure_calibration(
        np.concatenate(scores),
        embedder=EMBEDDER.name,
        embedder_sha256=EMBEDDER.sha256,
        dataset="random unit vectors",
    )


def gallery(centres: np.ndarray, per_traveler: int = 1, flight: str = "GM101", prefix: str = "T") -> Gallery:
    """An in-memory gallery snapshot: traveler i enrolled with `per_traveler` copies of centres[i]."""
    owners = [f"{prefix}{i:03d}" for i in range(len(centres)) for _ in range(per_traveler)]
    return in_memory_gallery(np.repeat(centres, per_traveler, axis=0), owners, EMBEDDER, name=flight)
