"""Embeddings of a whole data set, computed once in batches and cached by file hash.

A rerun with another threshold, target or gallery size is then instant; a changed pack or pipeline setting
changes the cache key, so a stale embedding is never reused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gatematch.atomicfile import write_atomic
from gatematch.benchmarks.dataset import Dataset
from gatematch.errors import BadImageError
from gatematch.facepipeline import FacePipeline
from gatematch.images import load_image
from gatematch.modelstore import user_cache_dir


@dataclass(frozen=True)
class EmbeddedSet:
    """One row per sample; `acquired` is False where no face was found (failure to acquire)."""

    identities: np.ndarray  # (N,) str
    embeddings: np.ndarray  # (N, dim) float32; zero rows where not acquired
    acquired: np.ndarray  # (N,) bool
    quality_passed: np.ndarray  # (N,) bool

    @property
    def fta_rate(self) -> float:
        return float(1.0 - self.acquired.mean()) if len(self.acquired) else 0.0


def default_cache_dir() -> Path:
    return user_cache_dir() / "embeddings"


def cache_key(pipeline: FacePipeline) -> str:
    """Everything that changes an embedding: the models' hashes and the pipeline settings that matter."""
    config = pipeline.config
    settings = {
        "models": pipeline.pack.model_hashes,
        "flip": config.flip,
        "detector": [
            config.detector.score_threshold,
            config.detector.nms_threshold,
            config.detector.min_face_size,
        ],
        "selection": "primary-v2",
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


def embed_dataset(
    dataset: Dataset,
    pipeline: FacePipeline,
    cache_dir: Path | None = None,
    batch_size: int = 16,
    progress: bool = True,
) -> EmbeddedSet:
    dim = pipeline.embedding_size
    cache_file = (cache_dir or default_cache_dir()) / f"{pipeline.pack.name}-{cache_key(pipeline)}.npz"
    cached: dict[str, tuple[np.ndarray, bool, bool]] = {}
    if cache_file.exists():
        with np.load(cache_file) as data:
            for digest, vector, ok, passed in zip(
                data["sha256"], data["embeddings"], data["acquired"], data["quality_passed"], strict=True
            ):
                cached[str(digest)] = (vector, bool(ok), bool(passed))
    todo = [s for s in dict.fromkeys(s.sha256 for s in dataset.samples) if s not in cached]
    paths = {s.sha256: s.path for s in dataset.samples}
    bar = tqdm(total=len(todo), desc=f"embedding ({pipeline.pack.name})", unit="img", disable=not progress)
    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        images, readable = [], []
        for digest in batch:
            try:
                images.append(load_image(paths[digest], pipeline.config.limits))
                readable.append(digest)
            except BadImageError:
                cached[digest] = (np.zeros(dim, np.float32), False, False)
        for digest, analysis in zip(readable, pipeline.analyze_batch(images), strict=True):
            face = analysis.primary()
            if face is None or face.embedding is None:
                cached[digest] = (np.zeros(dim, np.float32), False, False)
            else:
                cached[digest] = (face.embedding, True, bool(face.quality and face.quality.passed))
        bar.update(len(batch))
    bar.close()
    if todo:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        digests = list(cached)
        arrays = {
            "sha256": np.array(digests),
            "embeddings": np.stack([cached[d][0] for d in digests]).astype(np.float32),
            "acquired": np.array([cached[d][1] for d in digests]),
            "quality_passed": np.array([cached[d][2] for d in digests]),
        }
        write_atomic(cache_file, lambda out: np.savez(out, **arrays))
    rows = [cached[s.sha256] for s in dataset.samples]
    return EmbeddedSet(
        identities=np.array([s.identity for s in dataset.samples]),
        embeddings=np.stack([r[0] for r in rows]).astype(np.float32)
        if rows
        else np.zeros((0, dim), np.float32),
        acquired=np.array([r[1] for r in rows], dtype=bool),
        quality_passed=np.array([r[2] for r in rows], dtype=bool),
    )
