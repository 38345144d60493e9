"""Flight simulation bookkeeping on small hand-made embedded sets: every search is counted once, failures are
where the conventions say, and departures and subgroups partition the searches."""

from __future__ import annotations

import numpy as np
import pytest

from gatematch.benchmarks import metrics
from gatematch.benchmarks.embeddings import EmbeddedSet
from gatematch.benchmarks.protocols import simulate_flights, verification_scores
from gatematch.errors import DatasetError

IDENTITIES = [f"p{i}" for i in range(8)]
PER_IDENTITY = 3


def embedded_set(failed_rows: tuple[int, ...] = ()) -> EmbeddedSet:
    """Orthogonal identity directions, three images each: every mate is found at rank 1 with score ~1."""
    rng = np.random.default_rng(1)
    labels = np.repeat(IDENTITIES, PER_IDENTITY)
    vectors = np.eye(16, dtype=np.float32)[np.repeat(np.arange(len(IDENTITIES)), PER_IDENTITY)]
    vectors += 0.05 * rng.standard_normal(vectors.shape).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    acquired = np.ones(len(labels), bool)
    acquired[list(failed_rows)] = False
    vectors[~acquired] = 0
    return EmbeddedSet(labels, vectors, acquired, acquired.copy())


def names(searches, codes: np.ndarray) -> set[str]:
    return set(searches.names[codes].tolist())


def test_every_search_is_counted_once_and_clean_mates_are_rank_one():
    searches = simulate_flights(embedded_set(), gallery_size=5, departures=4, seed=3)
    assert searches.mated_ranks.size == 5 * 4 and searches.nonmated_top.size == 3 * 4
    assert (searches.mated_ranks == 1).all() and searches.mated_failed.tolist() == [0, 0, 0, 0]
    assert searches.mated_scores.min() > searches.nonmated_top.max()
    for d in range(4):  # a probe is never in its own departure's gallery as a non-mate
        mates = names(searches, searches.mated_identity[searches.mated_departure == d])
        strangers = names(searches, searches.nonmated_identity[searches.nonmated_departure == d])
        assert len(mates) == 5 and len(strangers) == 3 and not mates & strangers


def test_failed_enrollment_and_probe_failures_are_counted_not_scored():
    # p0 cannot enroll (its first image failed); p1's other images all failed (any mated probe of p1 fails).
    searches = simulate_flights(embedded_set(failed_rows=(0, 4, 5)), gallery_size=7, departures=3, seed=0)
    total_mated = searches.mated_ranks.size + searches.mated_failed.sum()
    assert total_mated == 7 * 3
    failed = names(searches, searches.failed_mated_identity)
    assert failed <= {"p0", "p1"} and not {"p0", "p1"} & names(searches, searches.mated_identity)
    assert searches.mated_failed.sum() == searches.failed_mated_identity.size
    points = metrics.fnir_at_fpir(
        searches.mated_scores,
        searches.mated_ranks,
        searches.nonmated_top,
        [0.5],
        mated_failed=int(searches.mated_failed.sum()),
        nonmated_failed=int(searches.nonmated_failed.sum()),
    )
    assert points[0].fnir == pytest.approx(searches.mated_failed.sum() / total_mated)


def test_departures_and_subgroups_partition_the_searches():
    searches = simulate_flights(embedded_set(failed_rows=(7,)), gallery_size=5, departures=5, seed=2)
    parts = [searches.departure(d) for d in range(5)]
    assert sum(p.mated_ranks.size for p in parts) == searches.mated_ranks.size
    assert sum(int(p.mated_failed.sum()) for p in parts) == int(searches.mated_failed.sum())
    assert all(p.departures == 1 and set(p.mated_departure) <= {0} for p in parts)
    halves = [searches.probes_of(IDENTITIES[:4]), searches.probes_of(IDENTITIES[4:])]
    assert sum(h.nonmated_top.size for h in halves) == searches.nonmated_top.size
    assert sum(int(h.nonmated_failed.sum()) for h in halves) == int(searches.nonmated_failed.sum())
    assert names(halves[0], halves[0].mated_identity) <= set(IDENTITIES[:4])
    with pytest.raises(DatasetError, match="departure 5"):
        searches.departure(5)


def test_a_gallery_where_nobody_enrolled_gives_no_false_positive():
    first_images = tuple(range(0, len(IDENTITIES) * PER_IDENTITY, PER_IDENTITY))
    searches = simulate_flights(embedded_set(failed_rows=first_images), gallery_size=2, departures=1, seed=0)
    assert searches.mated_ranks.size == 0 and searches.mated_failed.tolist() == [2]
    assert searches.nonmated_top.size == 6 and np.isneginf(searches.nonmated_top).all()
    fpir, fnir = metrics.fpir_fnir(
        searches.mated_scores, searches.mated_ranks, searches.nonmated_top, [-1.0], mated_failed=2
    )
    assert fpir.tolist() == [0.0] and fnir.tolist() == [1.0]


def test_bad_protocols_are_refused():
    with pytest.raises(DatasetError, match="departure"):
        simulate_flights(embedded_set(), gallery_size=5, departures=0)
    with pytest.raises(DatasetError, match="non-mated"):
        simulate_flights(embedded_set(), gallery_size=8, departures=1)


def test_verification_pairs_cover_every_acquired_pair():
    scores = verification_scores(embedded_set(failed_rows=(2,)))
    n = len(IDENTITIES) * PER_IDENTITY - 1
    assert scores.genuine.size + scores.impostor.size == n * (n - 1) // 2
    assert scores.genuine.size == (len(IDENTITIES) - 1) * 3 + 1
