"""Gallery store costs on either backend: writing a version, the first load (index read, decrypted and
deserialised), the per-frame load of a cached snapshot, a delta (one traveler removed: the version read back,
merged and written again), a camera frame's look-up of its gate's run-time assignments, a key rotation
(reseal) with --encrypt, and, with PostgreSQL, how long a second replica takes to follow a new version, a
delta, a gate assignment and a purge.

Synthetic clustered templates (as in search_latency): the question is what the store adds, not faces.

    python -m gatematch.benchmarks.store_latency --store DIR_OR_POSTGRESQL_URL [--travelers 420] [--repeats 5]
        [--encrypt]

It writes and purges galleries of flight BENCHSTORE in that store; use a store of its own.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime, timedelta

import numpy as np

from gatematch.benchmarks.search_latency import clustered
from gatematch.gallery import ModelRef
from gatematch.gallery_delta import apply_delta
from gatematch.gallery_store import (
    GalleryDraft,
    GalleryStore,
    TemplateRecord,
    TravelerRecord,
    is_database_url,
    open_store,
)
from gatematch.process import configure_process
from gatematch.template_crypto import Keyring, TemplateKey, generate_key

FLIGHT = "BENCHSTORE"
EMBEDDER = ModelRef("synthetic", "0" * 64)
DIM = 128
PER_FRAME_LOADS = 2000


def synthetic_draft(travelers: int, seed: int, departure: datetime) -> GalleryDraft:
    vectors, _ = clustered(2 * travelers, DIM, np.random.default_rng(seed))
    templates = tuple(
        TemplateRecord(f"P{i // 2:05d}", f"photo{i}", f"{i:064x}", {"score": 0.9}, vector)
        for i, vector in enumerate(vectors)
    )
    return GalleryDraft(
        flight_id=FLIGHT,
        departure=departure,
        pack="benchmark",
        model_hashes={EMBEDDER.name: EMBEDDER.sha256},
        embedder=EMBEDDER,
        dim=DIM,
        travelers=tuple(TravelerRecord(f"P{t:05d}") for t in range(travelers)),
        templates=templates,
        failures=(),
        content_hash=f"bench-{seed}-{travelers}",
    )


def percentile_ms(seconds: list[float], q: float) -> float:
    return round(float(np.percentile(seconds, q)) * 1000, 3)


def wait_until(condition, timeout: float = 10.0) -> float:
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > timeout:
            return float("inf")
        time.sleep(0.001)
    return time.perf_counter() - start


def measure(location: str, travelers: int, repeats: int, key: TemplateKey | None) -> dict[str, object]:
    departure = (datetime.now(UTC) + timedelta(hours=6)).replace(second=0, microsecond=0)
    store: GalleryStore = open_store(location, key)
    writes, first_loads, follows, purges = [], [], [], []
    # the keys the reseals below rotate through (a replica holds them all, as after `gatematch keys create`)
    rotation = [key, *(TemplateKey.from_base64(generate_key()) for _ in range(repeats))] if key else []
    follower = (
        open_store(location, Keyring(rotation) if key else None, follow=True)
        if is_database_url(location)
        else None
    )
    try:
        for repeat in range(repeats):
            gallery_draft = synthetic_draft(travelers, repeat, departure)
            start = time.perf_counter()
            gid = store.write(gallery_draft).info.gallery_id
            writes.append(time.perf_counter() - start)
            if follower is not None:
                version = repeat + 1
                follows.append(
                    wait_until(lambda v=version: [g.version for g in follower.galleries(FLIGHT)] == [v])
                )
            start = time.perf_counter()
            open_store(location, key).load(gid)  # a fresh store: nothing cached
            first_loads.append(time.perf_counter() - start)
        per_frame = []
        for reader in filter(None, (store, follower)):
            reader.load(gid)
            times = []
            for _ in range(PER_FRAME_LOADS):
                start = time.perf_counter()
                reader.galleries(FLIGHT)
                reader.load(gid)
                times.append(time.perf_counter() - start)
            per_frame.append(times)
        deltas, delta_follows = [], []
        for repeat in range(repeats):
            start = time.perf_counter()
            version = apply_delta(store, gid, None, [f"P{repeat:05d}"]).info.version
            deltas.append(time.perf_counter() - start)
            if follower is not None:
                delta_follows.append(
                    wait_until(lambda v=version: [g.version for g in follower.galleries(FLIGHT)] == [v])
                )
        now = datetime.now(UTC)
        gate_lookups: list[list[float]] = [[], []]  # this store's, the replica's
        gate_follows = []
        for repeat in range(repeats):
            gate = f"BENCH{repeat}"
            made = store.assign_gate(
                gate, FLIGHT, now - timedelta(minutes=1), now + timedelta(hours=1), "bench"
            )
            if follower is not None:
                gate_follows.append(wait_until(lambda g=gate: bool(follower.gate_assignments(gate_id=g))))
            for reader, times in zip(filter(None, (store, follower)), gate_lookups, strict=False):
                for _ in range(PER_FRAME_LOADS // 10):
                    start = time.perf_counter()
                    reader.gate_assignments(gate_id=gate)
                    times.append(time.perf_counter() - start)
            store.release_gate(made.assignment.assignment_id, "bench")
        reseals = []  # key rotation: the current version sealed again under a newer key
        for newest in range(2, len(rotation) + 1):
            rotating = open_store(location, Keyring(rotation[:newest]))
            start = time.perf_counter()
            rotating.reseal(gid)
            reseals.append(time.perf_counter() - start)
        if follower is not None:
            store.purge(gid)
            purges.append(wait_until(lambda: not follower.galleries(FLIGHT)))
        else:
            store.purge(gid)
    finally:
        if follower is not None:
            follower.close()
    report: dict[str, object] = {
        "backend": "postgres" if is_database_url(location) else "sqlite",
        "travelers": travelers,
        "templates": 2 * travelers,
        "encrypted": key is not None,
        "write_ms_p50": percentile_ms(writes, 50),
        "first_load_ms_p50": percentile_ms(first_loads, 50),
        "per_frame_lookup_ms_p50": percentile_ms(per_frame[0], 50),
        "per_frame_lookup_ms_p99": percentile_ms(per_frame[0], 99),
        "delta_remove_one_ms_p50": percentile_ms(deltas, 50),
        "gate_assignment_lookup_ms_p50": percentile_ms(gate_lookups[0], 50),
    }
    if reseals:
        report["reseal_ms_p50"] = percentile_ms(reseals, 50)
    if follower is not None:
        report["replica_gate_assignment_lookup_ms_p50"] = percentile_ms(gate_lookups[1], 50)
        report["replica_follows_delta_ms_max"] = round(max(delta_follows) * 1000, 1)
        report["replica_follows_gate_assignment_ms_max"] = round(max(gate_follows) * 1000, 1)
        report["replica_per_frame_lookup_ms_p50"] = percentile_ms(per_frame[1], 50)
        report["replica_per_frame_lookup_ms_p99"] = percentile_ms(per_frame[1], 99)
        report["replica_follows_new_version_ms_max"] = round(max(follows) * 1000, 1)
        report["replica_follows_purge_ms"] = round(purges[0] * 1000, 1)
    return report


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", required=True, help="a folder (embedded store) or a postgresql:// URL")
    parser.add_argument("--travelers", type=int, default=420)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--encrypt", action="store_true", help="with a fresh TemplateKey (AES-GCM at rest)")
    args = parser.parse_args()
    configure_process()
    key = TemplateKey.from_base64(generate_key()) if args.encrypt else None
    print(json.dumps(measure(args.store, args.travelers, args.repeats, key), indent=2))


if __name__ == "__main__":
    main()
