"""Comparison protocols over an embedded data set: all-pairs 1:1 verification and NIST-style flight simulation.

They turn embeddings into score sets; the error rates themselves come from `metrics`, so the protocol and the
arithmetic can each be checked on their own.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields

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
    traveler failed to enroll, is a miss at every threshold (`mated_failed`); a non-mated probe without a face is
    a correct rejection (`nonmated_failed`). Every search keeps its departure (for the spread over departures)
    and its probe's identity (for subgroup breakdowns).
    """

    departures: int
    mated_scores: np.ndarray  # score of the mate's gallery entry, per search that ran
    mated_ranks: np.ndarray  # 1-based rank of the mate among the gallery
    mated_departure: np.ndarray
    mated_identity: np.ndarray
    nonmated_top: np.ndarray  # best gallery score of each non-mated search that ran
    nonmated_departure: np.ndarray
    nonmated_identity: np.ndarray
    failed_mated_departure: np.ndarray  # one entry per mated search that could not run
    failed_mated_identity: np.ndarray
    failed_nonmated_departure: np.ndarray  # one entry per non-mated search whose probe had no face
    failed_nonmated_identity: np.ndarray

    @property
    def mated_failed(self) -> np.ndarray:
        """Failed mated searches per departure."""
        return np.bincount(self.failed_mated_departure, minlength=self.departures)

    @property
    def nonmated_failed(self) -> np.ndarray:
        """Failed non-mated searches per departure."""
        return np.bincount(self.failed_nonmated_departure, minlength=self.departures)

    @classmethod
    def concat(cls, parts: Sequence[FlightSearches]) -> FlightSearches:
        """The searches of several parts (e.g. one per departure) as one set; `departures` is the first part's."""
        arrays = {
            f.name: np.concatenate([getattr(part, f.name) for part in parts])
            for f in fields(cls)
            if f.name != "departures"
        }
        return cls(departures=parts[0].departures, **arrays)

    def departure(self, index: int) -> FlightSearches:
        """The searches of one departure (renumbered as departure 0 of 1)."""
        if not 0 <= index < self.departures:
            raise DatasetError(f"departure {index} is not among the {self.departures} simulated")
        return self._subset(
            1,
            self.mated_departure == index,
            self.nonmated_departure == index,
            self.failed_mated_departure == index,
            self.failed_nonmated_departure == index,
            renumber=True,
        )

    def probes_of(self, identities: Collection[str]) -> FlightSearches:
        """The searches whose probe shows one of `identities` (a subgroup), in every departure."""
        wanted = np.asarray(sorted(identities))
        return self._subset(
            self.departures,
            np.isin(self.mated_identity, wanted),
            np.isin(self.nonmated_identity, wanted),
            np.isin(self.failed_mated_identity, wanted),
            np.isin(self.failed_nonmated_identity, wanted),
        )

    def _subset(
        self,
        departures: int,
        mated: np.ndarray,
        nonmated: np.ndarray,
        failed_mated: np.ndarray,
        failed_nonmated: np.ndarray,
        renumber: bool = False,
    ) -> FlightSearches:
        def tags(values: np.ndarray) -> np.ndarray:
            return np.zeros_like(values) if renumber else values

        return FlightSearches(
            departures=departures,
            mated_scores=self.mated_scores[mated],
            mated_ranks=self.mated_ranks[mated],
            mated_departure=tags(self.mated_departure[mated]),
            mated_identity=self.mated_identity[mated],
            nonmated_top=self.nonmated_top[nonmated],
            nonmated_departure=tags(self.nonmated_departure[nonmated]),
            nonmated_identity=self.nonmated_identity[nonmated],
            failed_mated_departure=tags(self.failed_mated_departure[failed_mated]),
            failed_mated_identity=self.failed_mated_identity[failed_mated],
            failed_nonmated_departure=tags(self.failed_nonmated_departure[failed_nonmated]),
            failed_nonmated_identity=self.failed_nonmated_identity[failed_nonmated],
        )


def simulate_flights(
    embedded: EmbeddedSet, gallery_size: int, departures: int, seed: int = 0
) -> FlightSearches:
    """NIST paperless-travel style: per departure a random gallery of `gallery_size` identities enrolled with
    their first image (by file name order), one random other image of each as a mated probe, and one random
    image of every identity left out as a non-mated probe.
    """
    if departures < 1:
        raise DatasetError(f"at least one departure must be simulated, got {departures}")
    rng = np.random.default_rng(seed)
    identities = np.unique(embedded.identities)
    if not 0 < gallery_size < len(identities):
        raise DatasetError(
            f"gallery size {gallery_size} must leave non-mated identities among {len(identities)}"
        )
    rows = {name: np.flatnonzero(embedded.identities == name) for name in identities}
    if min(len(r) for r in rows.values()) < 2:
        raise DatasetError("every identity needs at least two images (one to enroll, one to search)")
    vectors, acquired = embedded.embeddings, embedded.acquired
    per_departure = []
    for departure in range(departures):
        chosen = rng.permutation(len(identities))
        enrolled, absent = identities[chosen[:gallery_size]], identities[chosen[gallery_size:]]
        enroll_rows = np.array([rows[name][0] for name in enrolled])
        gallery = vectors[enroll_rows[acquired[enroll_rows]]]  # a traveler who failed to enroll is not in it
        probes = np.array([rng.choice(rows[name][1:]) for name in enrolled])
        runs = acquired[probes] & acquired[enroll_rows]
        scores = vectors[probes[runs]] @ gallery.T
        mate_column = np.cumsum(acquired[enroll_rows])[runs] - 1
        mate = scores[np.arange(len(mate_column)), mate_column]
        non_probes = np.array([rng.choice(rows[name]) for name in absent])
        found = acquired[non_probes]
        tops = vectors[non_probes[found]] @ gallery.T
        per_departure.append(
            FlightSearches(
                departures=departures,
                mated_scores=mate,
                mated_ranks=1 + (scores > mate[:, None]).sum(axis=1),
                mated_departure=np.full(len(mate), departure),
                mated_identity=enrolled[runs],
                # -inf: an empty gallery (every enrollment failed) returns no candidate, never a false positive
                nonmated_top=tops.max(axis=1) if gallery.size else np.full(int(found.sum()), -np.inf),
                nonmated_departure=np.full(int(found.sum()), departure),
                nonmated_identity=absent[found],
                failed_mated_departure=np.full(int((~runs).sum()), departure),
                failed_mated_identity=enrolled[~runs],
                failed_nonmated_departure=np.full(int((~found).sum()), departure),
                failed_nonmated_identity=absent[~found],
            )
        )
    return FlightSearches.concat(per_departure)
