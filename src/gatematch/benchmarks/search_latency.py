"""Search latency of flight galleries: exact (flat inner product) vs approximate (HNSW), 420 to 1M templates.

Why synthetic templates: the question is how search cost grows with gallery size, which depends on the number
and size of vectors, not on faces. They are clustered like real templates (two per identity around an identity
centre, probes are new noisy samples of an enrolled identity), because uniform random vectors are the worst
case for HNSW and would understate its recall. Latency is per single probe (one gate, one face), measured
end-to-end through `Gallery.search` (best template per traveler, decision) as the service calls it.

    python -m gatematch.benchmarks.search_latency [--sizes 420,10000,100000,1000000] [--dim 128]
"""

from __future__ import annotations

import argparse
import json
import time

import faiss
import numpy as np

from gatematch.gallery import (
    HNSW_EF_CONSTRUCTION,
    HNSW_EF_SEARCH,
    HNSW_M,
    Gallery,
    ModelRef,
    OperatingPoint,
    build_index,
    in_memory_gallery,
)
from gatematch.process import SEARCH_THREADS, configure_process, faiss_threads

PER_IDENTITY = 2
NOISE = 0.04  # per-dimension noise: mated cosine ~0.8, like a good gate probe
EMBEDDER = ModelRef("synthetic", "0" * 64)
POINT = OperatingPoint(threshold=0.5)


def clustered(n: int, dim: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """`n` unit templates, PER_IDENTITY per identity, and the identity centres."""
    centres = rng.standard_normal((max(n // PER_IDENTITY, 1), dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    owners = np.arange(n) // PER_IDENTITY
    vectors = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 100_000):  # in chunks: bounded temporary memory at 1M
        stop = min(start + 100_000, n)
        block = centres[owners[start:stop]] + NOISE * rng.standard_normal(
            (stop - start, dim), dtype=np.float32
        )
        vectors[start:stop] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return vectors, centres


def snapshot(index: faiss.Index, vectors: np.ndarray) -> Gallery:
    owners = [str(i // PER_IDENTITY) for i in range(len(vectors))]
    return in_memory_gallery(vectors, owners, EMBEDDER, name="BENCH", index=index)


def index_mib(index: faiss.Index) -> float:
    """What a replica holds in memory for the index: its serialised size (vectors, plus HNSW's graph)."""
    return round(faiss.serialize_index(index).nbytes / 2**20, 3)


def time_searches(gallery: Gallery, probes: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Per-probe wall times (ms) and the top traveler of each probe."""
    for probe in probes[:20]:  # warm caches and allocators
        gallery.search(probe, EMBEDDER, None, point=POINT)
    times, tops = [], []
    for probe in probes:
        start = time.perf_counter_ns()
        result = gallery.search(probe, EMBEDDER, None, point=POINT)
        times.append((time.perf_counter_ns() - start) / 1e6)
        tops.append(result.candidates[0].traveler_id)
    return np.asarray(times), tops


def run(sizes: list[int], dim: int, queries: int, hnsw_max: int, seed: int) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        vectors, centres = clustered(n, dim, rng)
        picks = rng.integers(0, len(centres), size=queries)
        probes = centres[picks] + NOISE * rng.standard_normal((queries, dim), dtype=np.float32)
        probes /= np.linalg.norm(probes, axis=1, keepdims=True)
        row: dict[str, object] = {"templates": n, "dim": dim}

        start = time.perf_counter()
        flat = snapshot(build_index(vectors, "flat"), vectors)
        row["flat_build_s"] = round(time.perf_counter() - start, 2)
        row["flat_mib"] = index_mib(flat.index)
        flat_ms, exact = time_searches(flat, probes)
        row |= {"flat_p50_ms": round(float(np.percentile(flat_ms, 50)), 4)}
        row |= {"flat_p99_ms": round(float(np.percentile(flat_ms, 99)), 4)}
        row["flat_rank1"] = round(float(np.mean([t == str(p) for t, p in zip(exact, picks, strict=True)])), 4)
        del flat

        if n <= hnsw_max:
            start = time.perf_counter()
            with faiss_threads():  # builds are offline: use every core
                hnsw = snapshot(build_index(vectors, "hnsw"), vectors)
            row["hnsw_build_s"] = round(time.perf_counter() - start, 2)
            row["hnsw_mib"] = index_mib(hnsw.index)
            hnsw_ms, approx = time_searches(hnsw, probes)
            row |= {"hnsw_p50_ms": round(float(np.percentile(hnsw_ms, 50)), 4)}
            row |= {"hnsw_p99_ms": round(float(np.percentile(hnsw_ms, 99)), 4)}
            # recall of the approximate index: how often its top traveler is the exact search's top traveler
            row["hnsw_recall_at_1"] = round(
                float(np.mean([a == e for a, e in zip(approx, exact, strict=True)])), 4
            )
            del hnsw
        rows.append(row)
        print(json.dumps(row), flush=True)
        del vectors
    return rows


def table(rows: list[dict[str, object]]) -> str:
    columns = ["templates", "flat_p50_ms", "flat_p99_ms", "hnsw_p50_ms", "hnsw_p99_ms", "hnsw_recall_at_1"]
    columns += ["hnsw_build_s", "flat_mib", "hnsw_mib"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "-")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="420,10000,100000,1000000")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--hnsw-max", type=int, default=1_000_000, help="skip HNSW builds above this size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    configure_process()
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"faiss {faiss.__version__}, search threads {SEARCH_THREADS}, HNSW M={HNSW_M} ", end="")
    print(f"efConstruction={HNSW_EF_CONSTRUCTION} efSearch={HNSW_EF_SEARCH}")
    rows = run(sizes, args.dim, args.queries, args.hnsw_max, args.seed)
    print(table(rows))


if __name__ == "__main__":
    main()
