"""Comparison protocols over an embedded data set: 1:1 verification and NIST-style flight simulation.

They turn embeddings into score sets; the error rates themselves come from `metrics`, so the protocol and the
arithmetic can each be checked on their own. Both scale with bounded memory: templates are gathered in blocks
(they may live on disk, see `embedding_store`), and a 1:1 run with more impostor pairs than it needs samples
them (seeded) instead of scoring all N^2 / 2. A small set, where all pairs fit, is scored exactly as before.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from tqdm import tqdm

from gatematch.benchmarks.confidence import trials_needed
from gatematch.errors import DatasetError

if TYPE_CHECKING:  # the protocols only read an EmbeddedSet; importing it would load the face pipeline
    from gatematch.benchmarks.embeddings import EmbeddedSet

DEFAULT_IMPOSTOR_PAIRS = 10_000_000  # all pairs up to this many; a 40 MB score array, ~25x FMR 1e-4's need
WORK_ITEMS = 1 << 22  # floats per temporary score block (16 MiB): what bounds the protocols' working memory
SAMPLING_STREAM = 1  # impostor sampling draws from its own seeded stream, apart from the flight simulation's


@dataclass(frozen=True)
class VerificationScores:
    genuine: np.ndarray  # cosine of every pair of acquired samples of the same identity
    impostor: np.ndarray  # cosine of impostor pairs: all of them, or a uniform sample (`sampled`)
    impostor_population: int  # impostor pairs among the acquired samples
    sampled: bool  # True: `impostor` is a seeded uniform sample, with replacement, of the population


def impostor_sample_size(impostor_pairs: int, lowest_fmr: float) -> int:
    """Impostor pairs a run scores when it cannot score them all: the budget, or what the lowest FMR target
    needs (`confidence.trials_needed`) when that is more."""
    return max(impostor_pairs, trials_needed(lowest_fmr))


def _codes(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels, return_inverse=True)[1].astype(np.int64)


def _upper_pairs(vectors: np.ndarray, codes: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(genuine, impostor) scores of all pairs i < j, a block of rows at a time, in row-major order."""
    n = len(vectors)
    block = max(1, WORK_ITEMS // max(n, 1))
    columns = np.arange(n)
    for start in range(0, n, block):
        rows = columns[start : start + block]
        scores = vectors[rows] @ vectors.T
        upper = columns[None, :] > rows[:, None]
        same = codes[rows][:, None] == codes[None, :]
        yield scores[upper & same], scores[upper & ~same]


def verification_scores(
    embedded: EmbeddedSet,
    *,
    impostor_pairs: int = DEFAULT_IMPOSTOR_PAIRS,
    lowest_fmr: float = 1e-4,
    seed: int = 0,
    progress: bool = False,
) -> VerificationScores:
    """Genuine: all pairs of acquired samples of one identity. Impostor: all pairs of acquired samples of
    different identities when there are at most `impostor_sample_size(...)` of them, else that many pairs
    drawn uniformly (seeded). Samples without a face count only in the FTA rate.
    """
    keep = np.flatnonzero(embedded.acquired)
    codes = _codes(embedded.identities[keep])
    counts = np.bincount(codes)
    n = len(keep)
    genuine_count = int((counts * (counts - 1) // 2).sum())
    population = n * (n - 1) // 2 - genuine_count
    wanted = impostor_sample_size(impostor_pairs, lowest_fmr)
    if population <= wanted:
        vectors = embedded.embeddings[keep]
        parts = list(
            tqdm(_upper_pairs(vectors, codes), desc="1:1 all pairs", unit="block", disable=not progress)
        )
        genuine = np.concatenate([g for g, _ in parts]) if parts else np.empty(0, np.float32)
        impostor = np.concatenate([i for _, i in parts]) if parts else np.empty(0, np.float32)
        return VerificationScores(genuine, impostor, population, sampled=False)
    genuine = _genuine_scores(embedded, keep, codes, counts, progress)
    impostor = _sampled_impostor_scores(embedded, keep, codes, wanted, seed, progress)
    return VerificationScores(genuine, impostor, population, sampled=True)


def _genuine_scores(
    embedded: EmbeddedSet, keep: np.ndarray, codes: np.ndarray, counts: np.ndarray, progress: bool
) -> np.ndarray:
    """All same-identity pairs, identity by identity, gathering the templates of many identities at once."""
    grouped = keep[np.argsort(codes, kind="stable")]  # acquired rows, identity by identity
    ends = np.cumsum(counts)
    starts = ends - counts
    rows_per_gather = max(1, WORK_ITEMS // embedded.embeddings.shape[1])
    parts = []
    with tqdm(total=len(grouped), desc="1:1 genuine pairs", unit="img", disable=not progress) as bar:
        first = 0
        while first < len(counts):
            last = max(first + 1, int(np.searchsorted(ends, starts[first] + rows_per_gather, side="right")))
            vectors = embedded.embeddings[grouped[starts[first] : ends[last - 1]]]
            for identity in range(first, last):
                if counts[identity] > 1:
                    own = vectors[starts[identity] - starts[first] : ends[identity] - starts[first]]
                    parts += [g for g, _ in _upper_pairs(own, np.zeros(len(own), np.int64))]
            bar.update(ends[last - 1] - starts[first])
            first = last
    return np.concatenate(parts) if parts else np.empty(0, np.float32)


def _sampled_impostor_scores(
    embedded: EmbeddedSet, keep: np.ndarray, codes: np.ndarray, wanted: int, seed: int, progress: bool
) -> np.ndarray:
    """`wanted` pairs drawn uniformly among impostor pairs: ordered (i, j) uniform over the acquired samples,
    redrawn when both show one identity (which drops i == j too); every unordered impostor pair is then
    equally likely. Drawn with replacement, so the scores are independent trials for the binomial interval."""
    rng = np.random.default_rng([seed, SAMPLING_STREAM])
    block = max(1, WORK_ITEMS // (2 * embedded.embeddings.shape[1]))  # pairs drawn and scored at a time
    out = np.empty(wanted, np.float32)
    done = 0
    with tqdm(total=wanted, desc="1:1 impostor sample", unit="pair", disable=not progress) as bar:
        while done < wanted:
            first = rng.integers(0, len(keep), block)
            second = rng.integers(0, len(keep), block)
            differ = codes[first] != codes[second]
            first, second = first[differ][: wanted - done], second[differ][: wanted - done]
            a, b = embedded.embeddings[keep[first]], embedded.embeddings[keep[second]]
            out[done : done + len(first)] = np.einsum("ij,ij->i", a, b)
            done += len(first)
            bar.update(len(first))
    return out


@dataclass(frozen=True)
class FlightSearches:
    """Open-set searches of one or more simulated departures.

    Searches that could not run are counted, not scored: a mated search whose probe had no face, or whose
    traveler failed to enroll, is a miss at every threshold (`mated_failed`); a non-mated probe without a face is
    a correct rejection (`nonmated_failed`). Every search keeps its departure (for the spread over departures)
    and its probe's identity (for subgroup breakdowns) as an index into `names`: at a million searches, names
    repeated per search would cost more than the scores.
    """

    departures: int
    names: np.ndarray  # identity names; the *_identity arrays index into it
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
        wanted = np.flatnonzero(np.isin(self.names, list(identities)))
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
            names=self.names,
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


def _flight_blocks(departures: int, gallery: int, probes: int, dim: int) -> tuple[int, int]:
    """(departures, probes) per block so a block's templates and scores stay near WORK_ITEMS floats."""
    per_departure = max(1, WORK_ITEMS // (gallery * dim))
    across = min(departures, per_departure)
    return across, max(1, min(probes, WORK_ITEMS // (across * (gallery + dim))))


def simulate_flights(
    embedded: EmbeddedSet, gallery_size: int, departures: int, seed: int = 0, progress: bool = False
) -> FlightSearches:
    """NIST paperless-travel style: per departure a random gallery of `gallery_size` identities enrolled with
    their first image (by file name order), one random other image of each as a mated probe, and one random
    image of every identity left out as a non-mated probe.

    Only identities with two or more images can be enrolled (one to enroll, one to search); identities with a
    single image are always left out, so they are non-mated probes of every departure. The random draws are
    made departure by departure (the same stream as ever: a given seed gives the same galleries and probes);
    the scoring is vectorised over departures, in blocks that bound memory.
    """
    if departures < 1:
        raise DatasetError(f"at least one departure must be simulated, got {departures}")
    names, codes, counts = np.unique(embedded.identities, return_inverse=True, return_counts=True)
    enrollable = np.flatnonzero(counts >= 2)
    single = np.flatnonzero(counts < 2)
    if not 0 < gallery_size <= len(enrollable) or gallery_size >= len(names):
        raise DatasetError(
            f"gallery size {gallery_size} must be between 1 and {min(len(enrollable), len(names) - 1)}: "
            f"{len(enrollable)} identities have two or more images (one to enroll, one to search) and at least "
            f"one of the {len(names)} must stay out as non-mated searches"
        )
    grouped = np.argsort(codes, kind="stable")  # rows identity by identity, in file name order
    starts = np.cumsum(counts) - counts
    rng = np.random.default_rng(seed)
    enrolled, enroll_rows, probe_rows, absent, absent_rows = [], [], [], [], []
    for _ in range(departures):
        chosen = enrollable[rng.permutation(len(enrollable))]
        mates, others = chosen[:gallery_size], np.concatenate([chosen[gallery_size:], single])
        enrolled.append(mates)
        enroll_rows.append(grouped[starts[mates]])
        probe_rows.append(grouped[starts[mates] + 1 + rng.integers(0, counts[mates] - 1)])
        absent.append(others)
        absent_rows.append(grouped[starts[others] + rng.integers(0, counts[others])])
    enrolled, enroll_rows, probe_rows = np.array(enrolled), np.array(enroll_rows), np.array(probe_rows)
    absent, absent_rows = np.array(absent), np.array(absent_rows)
    acquired = embedded.acquired
    in_gallery = acquired[enroll_rows]  # a traveler who failed to enroll is not in the gallery
    mated_scores, mated_ranks = _mated_searches(embedded, enroll_rows, probe_rows, in_gallery, progress)
    tops = _nonmated_tops(embedded, enroll_rows, absent_rows, in_gallery, progress)
    runs = acquired[probe_rows] & in_gallery
    found = acquired[absent_rows]
    departure = np.broadcast_to(np.arange(departures, dtype=np.int32)[:, None], enrolled.shape)
    other_departure = np.broadcast_to(np.arange(departures, dtype=np.int32)[:, None], absent.shape)
    return FlightSearches(
        departures=departures,
        names=names,
        mated_scores=mated_scores[runs],
        mated_ranks=mated_ranks[runs],
        mated_departure=departure[runs],
        mated_identity=enrolled[runs].astype(np.int32),
        nonmated_top=tops[found],
        nonmated_departure=other_departure[found],
        nonmated_identity=absent[found].astype(np.int32),
        failed_mated_departure=departure[~runs],
        failed_mated_identity=enrolled[~runs].astype(np.int32),
        failed_nonmated_departure=other_departure[~found],
        failed_nonmated_identity=absent[~found].astype(np.int32),
    )


def _scored_blocks(
    embedded: EmbeddedSet,
    enroll_rows: np.ndarray,
    probe_rows: np.ndarray,
    in_gallery: np.ndarray,
    desc: str,
    progress: bool,
) -> Iterator[tuple[slice, slice, np.ndarray]]:
    """(departure slice, probe slice, scores) per block: each probe against its own departure's gallery,
    -inf where the traveler failed to enroll (not in the gallery)."""
    departures, gallery = enroll_rows.shape
    probes = probe_rows.shape[1]
    across, per_block = _flight_blocks(departures, gallery, probes, embedded.embeddings.shape[1])
    with tqdm(total=departures * probes, desc=desc, unit="search", disable=not progress) as bar:
        for d in range(0, departures, across):
            ds = slice(d, min(d + across, departures))
            galleries = embedded.embeddings[enroll_rows[ds].ravel()].reshape(
                -1, gallery, embedded.embeddings.shape[1]
            )
            for p in range(0, probes, per_block):
                ps = slice(p, min(p + per_block, probes))
                block = probe_rows[ds, ps]
                vectors = embedded.embeddings[block.ravel()].reshape(*block.shape, -1)
                scores = np.empty((*block.shape, gallery), np.float32)
                for k in range(len(block)):  # one GEMM per departure: faster than a stacked matmul here
                    np.matmul(vectors[k], galleries[k].T, out=scores[k])
                scores[~np.broadcast_to(in_gallery[ds][:, None, :], scores.shape)] = -np.inf
                yield ds, ps, scores
                bar.update(block.size)


def _mated_searches(
    embedded: EmbeddedSet,
    enroll_rows: np.ndarray,
    probe_rows: np.ndarray,
    in_gallery: np.ndarray,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Per (departure, traveler): the mate's score (column k for traveler k) and its 1-based rank."""
    mate_scores = np.empty(probe_rows.shape, np.float32)
    ranks = np.empty(probe_rows.shape, np.int32)
    for ds, ps, scores in _scored_blocks(
        embedded, enroll_rows, probe_rows, in_gallery, "1:N mated", progress
    ):
        columns = np.arange(ps.start, ps.stop)
        mate = scores[:, np.arange(len(columns)), columns]
        mate_scores[ds, ps] = mate
        ranks[ds, ps] = 1 + (scores > mate[..., None]).sum(axis=2)
    return mate_scores, ranks


def _nonmated_tops(
    embedded: EmbeddedSet,
    enroll_rows: np.ndarray,
    absent_rows: np.ndarray,
    in_gallery: np.ndarray,
    progress: bool,
) -> np.ndarray:
    """Per (departure, non-mated probe): the best gallery score; -inf when nobody enrolled (no candidate)."""
    tops = np.empty(absent_rows.shape, np.float32)
    for ds, ps, scores in _scored_blocks(
        embedded, enroll_rows, absent_rows, in_gallery, "1:N non-mated", progress
    ):
        tops[ds, ps] = scores.max(axis=2)
    return tops
