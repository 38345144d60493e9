"""Wall time and peak memory of the accuracy protocols on a large synthetic set, read from a real store.

    python -m gatematch.benchmarks.protocol_scale --images 100000 --identities 20000 --dim 512

Synthetic templates (identity centres on the sphere plus noise, so genuine cosines sit near real ones) are
written into an `EmbeddingStore` in a temporary folder, read back memory-mapped exactly as `bench accuracy`
reads real ones, and scored by the same `score_embedded` (sampled 1:1, vectorised flight simulation, rates and
intervals) plus the calibration table. Identity sizes are 1 + Poisson, so some identities have a single image.
The store is written by a child process, so the peak RSS printed (one JSON object, with per-stage seconds) is
that of reading and scoring alone.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from gatematch.benchmarks.accuracy import AccuracySettings, score_embedded
from gatematch.benchmarks.calibration import CalibrationTable
from gatematch.benchmarks.embedding_store import EmbeddedBatch, EmbeddingStore, record_dtype
from gatematch.benchmarks.embeddings import EmbeddedSet
from gatematch.benchmarks.protocols import DEFAULT_IMPOSTOR_PAIRS
from gatematch.process import configure_process

GENUINE_NOISE = (
    1.1  # noise norm relative to the centre: genuine cosine about 0.45, like MobileFaceNet in the wild
)
WRITE_BLOCK = 8192


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def synthetic_store(
    folder: Path, images: int, identities: int, dim: int, seed: int
) -> tuple[np.ndarray, list[str]]:
    """Write `images` templates of about `identities` people into a store; returns (labels, digests)."""
    rng = np.random.default_rng(seed)
    sizes = 1 + rng.poisson(max(images / identities - 1, 0), identities)
    labels = np.repeat(np.arange(identities), sizes)[:images]
    labels = np.concatenate([labels, rng.integers(0, identities, images - len(labels))])
    labels.sort()
    digests = [f"{k:064x}" for k in range(images)]
    centres = rng.standard_normal((identities, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    store = EmbeddingStore(folder, dim)
    with store.writer(WRITE_BLOCK) as writer:
        for start in range(0, images, WRITE_BLOCK):
            block = labels[start : start + WRITE_BLOCK]
            noise = rng.standard_normal((len(block), dim)).astype(np.float32)
            vectors = centres[block] + GENUINE_NOISE * noise / np.sqrt(dim)
            vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
            ok = np.ones(len(block), bool)
            writer.add(EmbeddedBatch(np.array(digests[start : start + len(block)]), vectors, ok, ok))
    return np.array([f"id{k:07d}" for k in labels]), digests


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--identities", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--gallery-size", type=int, default=420)
    parser.add_argument("--departures", type=int, default=40)
    parser.add_argument("--impostor-pairs", type=int, default=DEFAULT_IMPOSTOR_PAIRS)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    configure_process()
    settings = AccuracySettings(
        gallery_size=args.gallery_size,
        departures=args.departures,
        seed=args.seed,
        impostor_pairs=args.impostor_pairs,
    )
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="gatematch-protocols-") as tmp:
        start = time.perf_counter()
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
            job = child.submit(synthetic_store, Path(tmp), args.images, args.identities, args.dim, args.seed)
            labels, digests = job.result()
        times["write_store_s"] = time.perf_counter() - start
        rss_before = peak_rss_mib()
        start = time.perf_counter()
        rows = EmbeddingStore(Path(tmp), args.dim).rows(digests)
        embedded = EmbeddedSet(labels, rows.templates, rows.acquired, rows.quality_passed)
        times["open_store_s"] = time.perf_counter() - start
        start = time.perf_counter()
        scored = score_embedded(embedded, settings, progress=args.progress)
        times["protocols_s"] = time.perf_counter() - start
        start = time.perf_counter()
        CalibrationTable.from_impostor_scores(
            scored.scores.impostor, embedder="synthetic", embedder_sha256="0" * 64, dataset="synthetic"
        )
        times["calibration_s"] = time.perf_counter() - start
    verification, identification = scored.rates["verification"], scored.rates["identification"]
    result = {
        "images": args.images,
        "identities": int(np.unique(labels).size),
        "single_image_identities": identification["single_image_identities"],
        "dim": args.dim,
        "cores": os.cpu_count(),
        "genuine_comparisons": verification["genuine_comparisons"],
        "impostor_comparisons": verification["impostor_comparisons"],
        "impostor_population": verification["impostor_population"],
        "impostor_sampled": verification["impostor_sampled"],
        "mated_searches": identification["mated_searches"],
        "nonmated_searches": identification["nonmated_searches"],
        "fnmr_at_fmr_1e-4": verification["fnmr_at_fmr"][-1]["fnmr"],
        "fnir_at_fpir_0.003": identification["fnir_at_fpir"][0]["fnir"],
        **{name: round(seconds, 2) for name, seconds in times.items()},
        "peak_rss_mib_before_protocols": round(rss_before, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "store_mib": round(args.images * record_dtype(args.dim).itemsize / 2**20, 1),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
