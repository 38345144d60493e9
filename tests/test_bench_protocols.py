"""Flight simulation bookkeeping on small hand-made embedded sets: every search is counted once, failures are
where the conventions say, and departures and subgroups partition the searches."""

from __future__ import annotations

import numpy as np
import pytest

from gatematch.benchmarks import metrics
from gatematch.benchmarks.confidence import trials_needed, wilson_interval
from gatematch.benchmarks.embedding_store import EmbeddedBatch, EmbeddingStore
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


def reference_flights(embedded: EmbeddedSet, gallery_size: int, departures: int, seed: int) -> dict:
    """The protocol as first written, one departure and one identity at a time (no single-image identities):
    the vectorised simulation must make the same draws, so the same searches with the same scores (to float
    rounding: BLAS may round a dot product differently when the matrices around it have other shapes)."""
    rng = np.random.default_rng(seed)
    identities = np.unique(embedded.identities)
    rows = {name: np.flatnonzero(embedded.identities == name) for name in identities}
    vectors, acquired = embedded.embeddings, embedded.acquired
    out: dict[str, list] = {"mated": [], "ranks": [], "tops": [], "failed_mated": [], "failed_nonmated": []}
    for _ in range(departures):
        chosen = rng.permutation(len(identities))
        enrolled, absent = identities[chosen[:gallery_size]], identities[chosen[gallery_size:]]
        enroll_rows = np.array([rows[name][0] for name in enrolled])
        gallery = vectors[enroll_rows[acquired[enroll_rows]]]
        probes = np.array([rng.choice(rows[name][1:]) for name in enrolled])
        runs = acquired[probes] & acquired[enroll_rows]
        scores = vectors[probes[runs]] @ gallery.T
        mate = scores[np.arange(runs.sum()), np.cumsum(acquired[enroll_rows])[runs] - 1]
        non_probes = np.array([rng.choice(rows[name]) for name in absent])
        found = acquired[non_probes]
        out["mated"] += mate.tolist()
        out["ranks"] += (1 + (scores > mate[:, None]).sum(axis=1)).tolist()
        out["tops"] += (vectors[non_probes[found]] @ gallery.T).max(axis=1).tolist()
        out["failed_mated"] += enrolled[~runs].tolist()
        out["failed_nonmated"] += absent[~found].tolist()
    return out


def test_flight_simulation_makes_the_same_draws_and_scores_as_the_per_departure_protocol():
    embedded = embedded_set(failed_rows=(0, 5, 10, 11))
    for seed, gallery_size in ((0, 5), (7, 3), (11, 7)):
        searches = simulate_flights(embedded, gallery_size=gallery_size, departures=6, seed=seed)
        expected = reference_flights(embedded, gallery_size, 6, seed)
        assert searches.mated_scores == pytest.approx(expected["mated"], abs=1e-6)
        assert searches.mated_ranks.tolist() == expected["ranks"]
        assert searches.nonmated_top == pytest.approx(expected["tops"], abs=1e-6)
        assert searches.names[searches.failed_mated_identity].tolist() == expected["failed_mated"]
        assert searches.names[searches.failed_nonmated_identity].tolist() == expected["failed_nonmated"]


def test_single_image_identities_are_non_mated_probes_in_every_departure_and_never_enrolled():
    base = embedded_set()
    singles = EmbeddedSet(
        np.array(["solo_a", "solo_b"]),
        np.eye(16, dtype=np.float32)[[9, 10]],
        np.ones(2, bool),
        np.ones(2, bool),
    )
    embedded = EmbeddedSet(
        *(
            np.concatenate([getattr(base, f), getattr(singles, f)])
            for f in ("identities", "embeddings", "acquired", "quality_passed")
        )
    )
    searches = simulate_flights(embedded, gallery_size=8, departures=3, seed=0)  # every enrollable identity
    assert searches.mated_ranks.size == 8 * 3 and (searches.mated_ranks == 1).all()
    for d in range(3):
        assert names(searches, searches.nonmated_identity[searches.nonmated_departure == d]) == {
            "solo_a",
            "solo_b",
        }
    assert not {"solo_a", "solo_b"} & names(searches, searches.mated_identity)
    with pytest.raises(DatasetError, match="gallery size 9 must be between 1 and 8"):
        simulate_flights(embedded, gallery_size=9, departures=1)


def test_small_sets_score_all_pairs_exactly_as_one_matrix_would():
    embedded = embedded_set(failed_rows=(4,))
    keep = np.flatnonzero(embedded.acquired)
    vectors, labels = embedded.embeddings[keep], embedded.identities[keep]
    upper = np.triu_indices(len(keep), k=1)
    all_pairs = (vectors @ vectors.T)[upper]
    same = labels[upper[0]] == labels[upper[1]]
    scores = verification_scores(embedded)
    assert not scores.sampled and scores.impostor_population == (~same).sum()
    assert np.array_equal(scores.genuine, all_pairs[same]) and np.array_equal(
        scores.impostor, all_pairs[~same]
    )


def large_set(identities: int = 300, per_identity: int = 4, dim: int = 32) -> EmbeddedSet:
    rng = np.random.default_rng(5)
    centres = rng.standard_normal((identities, dim)).astype(np.float32)
    labels = np.repeat(np.arange(identities), per_identity)
    vectors = centres[labels] + rng.standard_normal((labels.size, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ok = np.ones(labels.size, bool)
    return EmbeddedSet(np.array([f"id{k:04d}" for k in labels]), vectors, ok, ok)


def test_large_sets_sample_impostor_pairs_whose_rates_agree_with_all_pairs():
    embedded = large_set()
    exact = verification_scores(embedded)
    sampled = verification_scores(embedded, impostor_pairs=50_000, lowest_fmr=0.01, seed=3)
    assert not exact.sampled and sampled.sampled and sampled.impostor.size == 50_000
    assert sampled.impostor_population == exact.impostor.size == 1200 * 1199 // 2 - 300 * 6
    assert np.allclose(np.sort(sampled.genuine), np.sort(exact.genuine), atol=1e-6)
    for fmr in (0.1, 0.01, 0.002):
        threshold = np.quantile(exact.impostor, 1 - fmr)
        true_rate = (exact.impostor >= threshold).mean()
        low, high = wilson_interval(int((sampled.impostor >= threshold).sum()), sampled.impostor.size)
        assert low <= true_rate <= high
    again = verification_scores(embedded, impostor_pairs=50_000, lowest_fmr=0.01, seed=3)
    other = verification_scores(embedded, impostor_pairs=50_000, lowest_fmr=0.01, seed=4)
    assert np.array_equal(again.impostor, sampled.impostor) and not np.array_equal(
        other.impostor, sampled.impostor
    )
    needs_more = verification_scores(embedded, impostor_pairs=1000, lowest_fmr=1e-3, seed=3)
    assert needs_more.impostor.size == trials_needed(1e-3)  # the budget grows to what the target needs


def test_protocols_read_stored_templates_as_they_read_memory(tmp_path):
    embedded = large_set(identities=60)
    store = EmbeddingStore(tmp_path, 32)
    digests = [f"{k:064x}" for k in range(len(embedded.identities))]
    with store.writer(chunk_size=50) as writer:
        for start in range(0, len(digests), 70):
            rows = slice(start, start + 70)
            writer.add(
                EmbeddedBatch(
                    np.array(digests[rows]),
                    embedded.embeddings[rows],
                    embedded.acquired[rows],
                    embedded.acquired[rows],
                )
            )
    store.write_chunk(
        EmbeddedBatch(
            np.array(digests[:5]), embedded.embeddings[:5], embedded.acquired[:5], embedded.acquired[:5]
        ).records(32)
    )
    rows = store.rows(digests)
    stored = EmbeddedSet(embedded.identities, rows.templates, rows.acquired, rows.quality_passed)
    for a, b in (
        (verification_scores(embedded), verification_scores(stored)),
        (
            verification_scores(embedded, impostor_pairs=500, lowest_fmr=0.1),
            verification_scores(stored, impostor_pairs=500, lowest_fmr=0.1),
        ),
    ):
        assert np.allclose(a.genuine, b.genuine, atol=1e-6) and np.allclose(a.impostor, b.impostor, atol=1e-6)
    one, two = simulate_flights(embedded, 20, 5, seed=1), simulate_flights(stored, 20, 5, seed=1)
    assert np.allclose(one.mated_scores, two.mated_scores, atol=1e-6) and np.array_equal(
        one.mated_ranks, two.mated_ranks
    )
    assert np.allclose(one.nonmated_top, two.nonmated_top, atol=1e-6)
