"""Wall time and peak memory of the accuracy protocols on a large synthetic set, read from a real store.

    python -m gatematch.benchmarks.protocol_scale --images 100000 --identities 20000 --dim 512

Synthetic templates (identity centres on the sphere plus noise of a per-photo strength, so that genuine and
impostor scores overlap as real ones do) are
written into an `EmbeddingStore` in a temporary folder, read back memory-mapped exactly as `bench accuracy`
reads real ones, and scored by the same `score_embedded` (sampled 1:1, vectorised flight simulation, rates and
intervals) plus the calibration table. Identity sizes are 1 + Poisson, so some identities have a single image.
The store is written by a child process, so the peak RSS printed (one JSON object, with per-stage seconds) is
that of reading and scoring alone. Peak RSS counts the store's pages the protocols touched (memory-mapped
file pages: shared and reclaimable); the peak of anonymous memory, the process's own, is sampled apart.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from gatematch.benchmarks.accuracy import AccuracySettings, score_embedded
from gatematch.benchmarks.calibration import measure_calibration
from gatematch.benchmarks.embedding_store import EmbeddedBatch, EmbeddingStore, record_dtype
from gatematch.benchmarks.embeddings import EmbeddedSet
from gatematch.benchmarks.protocols import DEFAULT_IMPOSTOR_PAIRS
from gatematch.process import configure_process

NOISE_MEDIAN, NOISE_SPREAD = 1.2, 0.5  # noise norm / centre norm, log-normal: genuine cosines from ~0.9 to ~0
WRITE_BLOCK = 8192
SAMPLE_EVERY_S = 0.01


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class AnonymousPeak:
    """Samples RssAnon (Linux /proc) in a thread: the peak of the process's own memory, not mapped files."""

    def __init__(self) -> None:
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        status = Path("/proc/self/status")
        while not self._stop.wait(SAMPLE_EVERY_S):
            for line in status.read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.peak_kib = max(self.peak_kib, int(line.split()[1]))

    def __enter__(self) -> AnonymousPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


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
            noise = rng.standard_normal((len(block), dim)).astype(np.float32) / np.sqrt(dim)
            strength = rng.lognormal(np.log(NOISE_MEDIAN), NOISE_SPREAD, (len(block), 1)).astype(np.float32)
            vectors = centres[block] + strength * noise
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
        rss_before, cpu_before = peak_rss_mib(), cpu_s()
        with AnonymousPeak() as anonymous:
            start = time.perf_counter()
            rows = EmbeddingStore(Path(tmp), args.dim).rows(digests)
            embedded = EmbeddedSet(labels, rows.templates, rows.acquired, rows.quality_passed)
            times["open_store_s"] = time.perf_counter() - start
            start = time.perf_counter()
            scored = score_embedded(embedded, settings, progress=args.progress)
            times["protocols_s"] = time.perf_counter() - start
            start = time.perf_counter()
            measure_calibration(
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
        "cpu_s": round(cpu_s() - cpu_before, 1),
        "peak_rss_mib_before_protocols": round(rss_before, 1),
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "peak_anonymous_mib": round(anonymous.peak_kib / 1024, 1),
        "store_mib": round(args.images * record_dtype(args.dim).itemsize / 2**20, 1),
    }
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
