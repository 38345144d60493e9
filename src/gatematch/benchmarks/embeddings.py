"""Embeddings of a whole data set, computed once and kept in a resumable store keyed by file hash.

A rerun with another threshold, target or gallery size is then instant, and a run that was killed resumes
with the images it had not reached; a changed pack or pipeline setting changes the cache key, so a stale
embedding is never reused. Where the images are embedded is an engine's job: here, in this process (`local`),
or on a Ray cluster (`gatematch.benchmarks.ray_engine`); both run `embed_images`, so they give the same
templates.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from gatematch.benchmarks.dataset import Dataset
from gatematch.benchmarks.embedding_store import (
    DEFAULT_CHUNK_SIZE,
    DIGEST,
    EmbeddedBatch,
    EmbeddingStore,
    StoredTemplates,
)
from gatematch.errors import BadImageError
from gatematch.facepipeline import FacePipeline
from gatematch.images import load_image
from gatematch.modelstore import user_cache_dir

LOCAL_BATCH_SIZE = 16

ImageItem = tuple[str, Path]  # (sha256, path) of one image to embed
Engine = Callable[[Sequence[ImageItem]], Iterator[EmbeddedBatch]]
"""Embeds images and yields their results in batches, in any order."""


@dataclass(frozen=True)
class EmbeddedSet:
    """One row per sample; `acquired` is False where no face was found (failure to acquire).

    `embeddings` is an in-memory matrix or `StoredTemplates` (rows gathered from the store on demand).
    """

    identities: np.ndarray  # (N,) str
    embeddings: np.ndarray | StoredTemplates  # (N, dim) float32; zero rows where not acquired
    acquired: np.ndarray  # (N,) bool
    quality_passed: np.ndarray  # (N,) bool

    @property
    def fta_rate(self) -> float:
        return float(1.0 - self.acquired.mean()) if len(self.acquired) else 0.0

    def subset(self, rows: np.ndarray) -> EmbeddedSet:
        """Some samples (an index array or mask); stored templates stay on disk."""
        embeddings = self.embeddings
        return EmbeddedSet(
            self.identities[rows],
            embeddings.select(rows) if isinstance(embeddings, StoredTemplates) else embeddings[rows],
            self.acquired[rows],
            self.quality_passed[rows],
        )


@dataclass(frozen=True)
class EmbeddingRun:
    embedded: EmbeddedSet
    new_images: int  # embedded by this run
    stored_images: int  # distinct images found in the store already
    seconds: float

    @property
    def summary(self) -> dict[str, object]:
        rate = self.new_images / self.seconds if self.new_images and self.seconds > 0 else None
        return {
            "new_images": self.new_images,
            "stored_images": self.stored_images,
            "images_per_s": None if rate is None else round(rate, 1),
        }


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


def embed_images(pipeline: FacePipeline, items: Sequence[ImageItem]) -> EmbeddedBatch:
    """Decode and embed some images with `pipeline`: the one embedding path every engine runs."""
    dim = pipeline.embedding_size
    embeddings = np.zeros((len(items), dim), np.float32)
    acquired, passed = np.zeros(len(items), bool), np.zeros(len(items), bool)
    images, readable = [], []
    for k, (_, path) in enumerate(items):
        try:
            images.append(load_image(Path(path), pipeline.config.limits))
            readable.append(k)
        except BadImageError:
            pass  # an unreadable image is a failure to acquire
    for k, analysis in zip(readable, pipeline.analyze_batch(images), strict=True):
        face = analysis.primary()
        if face is not None and face.embedding is not None:
            embeddings[k], acquired[k] = face.embedding, True
            passed[k] = bool(face.quality and face.quality.passed)
    return EmbeddedBatch(np.array([digest for digest, _ in items]), embeddings, acquired, passed)


def local_engine(pipeline: FacePipeline, batch_size: int = LOCAL_BATCH_SIZE) -> Engine:
    """Embeds in this process, `batch_size` images at a time, in the order given."""

    def run(items: Sequence[ImageItem]) -> Iterator[EmbeddedBatch]:
        for start in range(0, len(items), batch_size):
            yield embed_images(pipeline, items[start : start + batch_size])

    return run


def embed_dataset(
    dataset: Dataset,
    pipeline: FacePipeline,
    cache_dir: Path | None = None,
    *,
    engine: Engine | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = True,
) -> EmbeddingRun:
    """Embed the images the store lacks (with `engine`, default: local), then read every sample back."""
    store = EmbeddingStore(
        (cache_dir or default_cache_dir()) / f"{pipeline.pack.name}-{cache_key(pipeline)}",
        pipeline.embedding_size,
    )
    digests = [s.sha256 for s in dataset.samples]
    paths = dict(zip(digests, (s.path for s in dataset.samples), strict=True))  # one entry per distinct image
    distinct = list(paths)
    missing = ~np.isin(np.array(distinct, dtype=DIGEST), store.digests())
    todo = [(distinct[k], paths[distinct[k]]) for k in np.flatnonzero(missing)]
    start = time.perf_counter()
    if todo:
        with (
            store.writer(chunk_size) as writer,
            tqdm(
                total=len(todo), desc=f"embedding ({pipeline.pack.name})", unit="img", disable=not progress
            ) as bar,
        ):
            for batch in (engine or local_engine(pipeline))(todo):
                writer.add(batch)
                bar.update(len(batch))
    seconds = time.perf_counter() - start
    rows = store.rows(digests)
    embedded = EmbeddedSet(
        identities=np.array([s.identity for s in dataset.samples]),
        embeddings=rows.templates,
        acquired=rows.acquired,
        quality_passed=rows.quality_passed,
    )
    return EmbeddingRun(embedded, len(todo), len(distinct) - len(todo), seconds)
