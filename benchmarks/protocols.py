"""Comparison protocols over an embedded data set: all-pairs 1:1 verification and NIST-style flight simulation.

They turn embeddings into score sets; the error rates themselves come from `metrics`, so the protocol and the
arithmetic can each be checked on their own.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from gatematch.benchmarks.embeddings import EmbeddedSet
from gatematch.errors import DatasetError


@dataclass(frozen=True)
class VerificationScores:
    genuine: np.ndarray  # cosine of every pair of acquired samples of the same identity
    impostor: np.ndarray  # cosine of every pair of acquired samples of different identities


def verification_scores(embedded: EmbeddedSet) -> VerificationScores:
    """All pairs i < j among samples with a face; samples without one count only in the FTA rate."""
    keep = np.flatnonzero(embedded.acquired)
    vectors = embedded.embeddings[keep]
    labels = embedded.identities[keep]
    scores = vectors @ vectors.T
    upper = np.triu_indices(len(keep), k=1)
    same = labels[upper[0]] == labels[upper[1]]
    pair_scores = scores[upper]
    return VerificationScores(genuine=pair_scores[same], impostor=pair_scores[~same])


@dataclass(frozen=True)
class FlightSearches:
    """Open-set searches of one or more simulated departures.

    Searches that could not run are counted, not scored: a mated search whose probe had no face, or whose
    traveler failed to enrol, is a miss at every threshold (`mated_failed`); a non-mated probe without a face is
    a correct rejection (`nonmated_failed`). The per-departure arrays allow the spread over departures.
    """

    mated_scores: np.ndarray  # score of the mate's gallery entry, per search that ran
    mated_ranks: np.ndarray  # 1-based rank of the mate among the gallery
    mated_departure: np.ndarray
    nonmated_top: np.ndarray  # best gallery score of each non-mated search that ran
    nonmated_departure: np.ndarray
    mated_failed: np.ndarray  # per departure
    nonmated_failed: np.ndarray  # per departure

    def departure(self, index: int) -> FlightSearches:
        mated, nonmated = self.mated_departure == index, self.nonmated_departure == index
        return FlightSearches(
            self.mated_scores[mated],
            self.mated_ranks[mated],
            self.mated_departure[mated],
            self.nonmated_top[nonmated],
            self.nonmated_departure[nonmated],
            self.mated_failed[index : index + 1],
            self.nonmated_failed[index : index + 1],
        )


def simulate_flights(
    embedded: EmbeddedSet, gallery_size: int, departures: int, seed: int = 0
) -> FlightSearches:
    """NIST paperless-travel style: per departure a random gallery of `gallery_size` identities enrolled with
    their first image (by file name order), one random other image of each as a mated probe, and one random
    image of every identity left out as a non-mated probe.
    """
    rng = np.random.default_rng(seed)
    identities = np.unique(embedded.identities)
    if not 0 < gallery_size < len(identities):
        raise DatasetError(
            f"gallery size {gallery_size} must leave non-mated identities among {len(identities)}"
        )
    rows = {name: np.flatnonzero(embedded.identities == name) for name in identities}
    if min(len(r) for r in rows.values()) < 2:
        raise DatasetError("every identity needs at least two images (one to enrol, one to search)")
    vectors, acquired = embedded.embeddings, embedded.acquired
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("ms", "mr", "md", "ns", "nd")}
    mated_failed, nonmated_failed = [], []
    for departure in range(departures):
        chosen = rng.permutation(len(identities))
        enrolled, absent = identities[chosen[:gallery_size]], identities[chosen[gallery_size:]]
        enrol_rows = np.array([rows[name][0] for name in enrolled])
        gallery = vectors[enrol_rows[acquired[enrol_rows]]]  # a traveler who failed to enrol is not in it
        probes = np.array([rng.choice(rows[name][1:]) for name in enrolled])
        runs = acquired[probes] & acquired[enrol_rows]
        scores = vectors[probes[runs]] @ gallery.T
        mate_column = np.cumsum(acquired[enrol_rows])[runs] - 1
        mate = scores[np.arange(len(mate_column)), mate_column]
        parts["ms"].append(mate)
        parts["mr"].append(1 + (scores > mate[:, None]).sum(axis=1))
        parts["md"].append(np.full(len(mate), departure))
        mated_failed.append(int((~runs).sum()))
        non_probes = np.array([rng.choice(rows[name]) for name in absent])
        non_probes = non_probes[acquired[non_probes]]
        parts["ns"].append((vectors[non_probes] @ gallery.T).max(axis=1))
        parts["nd"].append(np.full(len(non_probes), departure))
        nonmated_failed.append(len(absent) - len(non_probes))
    return FlightSearches(
        mated_scores=np.concatenate(parts["ms"]),
        mated_ranks=np.concatenate(parts["mr"]),
        mated_departure=np.concatenate(parts["md"]),
        nonmated_top=np.concatenate(parts["ns"]),
        nonmated_departure=np.concatenate(parts["nd"]),
        mated_failed=np.array(mated_failed),
        nonmated_failed=np.array(nonmated_failed),
    )
