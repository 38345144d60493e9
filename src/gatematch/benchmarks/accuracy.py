"""The accuracy run behind `gatematch bench accuracy`: a labelled photo set -> 1:1 and 1:N error rates per pack.

Per pack: embed every image once (kept in a resumable store keyed by file hash, on this machine or a Ray
cluster), score 1:1 pairs (all of them, or a seeded sample of impostor pairs sized to the lowest FMR target),
simulate departures (open-set 1:N as NIST's paperless-travel tests do), fold failures to acquire/enroll in,
break the rates down by subgroup when labels are given, and measure the calibration table galleries use for
thresholds and confidences. Identities with a single image are searched as non-mated probes only.
The arithmetic lives in `metrics`, the score sets in `protocols`; this module only wires them and states the
conventions the report quotes.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gatematch.benchmarks import metrics
from gatematch.benchmarks.calibration import measure_calibration
from gatematch.benchmarks.confidence import trials_needed, wilson_interval
from gatematch.benchmarks.dataset import Dataset
from gatematch.benchmarks.embedding_store import DEFAULT_CHUNK_SIZE
from gatematch.benchmarks.embeddings import EmbeddedSet, Engine, embed_dataset
from gatematch.benchmarks.protocols import (
    DEFAULT_IMPOSTOR_PAIRS,
    FlightSearches,
    VerificationScores,
    simulate_flights,
    verification_scores,
)
from gatematch.calibration import CalibrationTable
from gatematch.errors import DatasetError
from gatematch.facepipeline import FacePipeline

FMR_TARGETS = (1e-2, 1e-3, 1e-4)
FPIR_TARGETS = (0.003, 0.01)
DEFAULT_GALLERY_SIZE = 420
DEFAULT_DEPARTURES = 40
FAILED_PAIR_SCORE = -1.0  # the lowest cosine: an LFW pair with a failed capture is decided "different"
UNLABELLED = "unknown"

CONVENTIONS = {
    "scores": "cosine similarity of L2-normalised embeddings; a comparison matches when score >= threshold",
    "fta": "failure to acquire: share of all images whose photo gave no face (no template)",
    "fte": "failure to enroll: share of identities with two or more images whose enrollment photo (their "
    "first by file name) gave no face",
    "verification": "all pairs of acquired images (ISO/IEC 19795-1 FMR/FNMR over comparisons that ran); "
    "generalized_fmr/fnmr fold failures in as 19795-1 does for one attempt: GFNMR = FTE + (1-FTE)FTA + "
    "(1-FTE)(1-FTA)FNMR, GFMR = (1-FTE)(1-FTA)FMR, with both FTA and FTE = the image FTA rate because either "
    "side of an all-pairs comparison is an arbitrary image",
    "impostor_sampling": "when a set has more impostor pairs than the sample size (the --impostor-pairs budget, "
    "or what the lowest FMR target needs if more), impostor scores are a seeded uniform sample with "
    "replacement of that many pairs; genuine pairs are always all scored",
    "confidence": "ci95 = 95% Wilson score interval of a rate as errors / trials, trials taken as independent "
    "(all-pairs comparisons share photos, so their true interval is wider); pairs_needed = impostor "
    "comparisons for which the interval spans about +-30% of the target FMR (about 43 false matches)",
    "identification": "open-set, rank 1 (NIST FRVT): a mated search whose probe gave no face or whose traveler "
    "failed to enroll is a miss at every threshold (counts in FNIR and rank-1); a non-mated probe without a "
    "face is a correct rejection (counts in the FPIR denominator only); only identities with two or more "
    "images are enrolled, those with one are non-mated probes in every departure",
    "thresholds": "exact for the data: the smallest threshold meeting the target; supported=false when the "
    "target is below 1/n of the comparisons or searches that can produce a false positive",
    "spread": "per departure, at the threshold set on all departures pooled",
    "lfw": "10-fold View-2 accuracy, threshold chosen on 9 folds and applied to the 10th; a pair with an "
    "image that gave no face scores -1 (decided 'different')",
    "subgroups": "at the pooled thresholds: 1:1 pairs with both images in the group (within-group FMR), "
    "1:N searches whose probe is in the group",
}


@dataclass(frozen=True)
class AccuracySettings:
    gallery_size: int = DEFAULT_GALLERY_SIZE
    departures: int = DEFAULT_DEPARTURES
    seed: int = 0
    fmr_targets: tuple[float, ...] = FMR_TARGETS
    fpir_targets: tuple[float, ...] = FPIR_TARGETS
    impostor_pairs: int = DEFAULT_IMPOSTOR_PAIRS  # all impostor pairs up to this many, else a sample


@dataclass(frozen=True)
class PackRun:
    """One pack's results: the JSON-ready summary and the raw score sets the plots are drawn from."""

    pack: str
    summary: dict
    scores: VerificationScores
    searches: FlightSearches


def check_dataset(dataset: Dataset, settings: AccuracySettings) -> None:
    """Refuse a protocol the data set cannot carry before minutes of embedding are spent on it."""
    counts: dict[str, int] = {}
    for sample in dataset.samples:
        counts[sample.identity] = counts.get(sample.identity, 0) + 1
    if len(counts) < 2:
        raise DatasetError(
            f"{dataset.root} has {len(counts)} identity: a benchmark needs at least 2 identities "
            "(travelers on the flight and people who are not)"
        )
    enrollable = sum(1 for n in counts.values() if n >= 2)
    if not 0 < settings.gallery_size <= min(enrollable, len(counts) - 1):
        raise DatasetError(
            f"gallery size {settings.gallery_size} must be between 1 and {min(enrollable, len(counts) - 1)}: "
            f"{dataset.root} has {len(counts)} identities, {enrollable} of them with two or more images (one "
            "to enroll, one to search), and some must stay out as non-mated searches"
        )
    if settings.departures < 1:
        raise DatasetError(f"at least one departure must be simulated, got {settings.departures}")


def read_labels(path: Path, identities: Sequence[str]) -> dict[str, dict[str, str]]:
    """attribute -> {identity -> value} from a CSV with an `identity` column (else the first) and any others.

    Every identity of the data set must have a row: a silently unlabelled identity would bias every subgroup.
    An empty cell reads as "unknown".
    """
    try:
        with Path(path).open(newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read labels file {path}: {exc}") from exc
    if not rows or len(rows[0]) < 2:
        raise DatasetError(f"{path}:1: header must name an identity column and at least one attribute")
    header = [name.strip() for name in rows[0]]
    key = header.index("identity") if "identity" in header else 0
    attributes = [i for i in range(len(header)) if i != key]
    labels: dict[str, dict[str, str]] = {header[i]: {} for i in attributes}
    seen: set[str] = set()
    for line, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise DatasetError(f"{path}:{line}: expected {len(header)} columns, got {len(row)}")
        identity = row[key].strip()
        if identity in seen:
            raise DatasetError(f"{path}:{line}: identity '{identity}' is labelled twice")
        seen.add(identity)
        for i in attributes:
            labels[header[i]][identity] = row[i].strip() or UNLABELLED
    missing = sorted(set(identities) - seen)
    if missing:
        raise DatasetError(
            f"{path}: {len(missing)} identities of the data set have no row, e.g. {missing[:3]}"
        )
    return labels


def _spread(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values, dtype=np.float64)
    return {
        "min": float(array.min()),
        "median": float(np.median(array)),
        "max": float(array.max()),
        "std": float(array.std()),
    }


def enrollment_failures(embedded: EmbeddedSet) -> float:
    """FTE: enrollable identities (two or more images) whose first image, the one `simulate_flights`
    enrolls, gave no template."""
    _, first, counts = np.unique(embedded.identities, return_index=True, return_counts=True)
    enrolled = first[counts >= 2]
    return float(1.0 - embedded.acquired[enrolled].mean()) if enrolled.size else 0.0


def single_image_identities(embedded: EmbeddedSet) -> int:
    return int((np.unique(embedded.identities, return_counts=True)[1] < 2).sum())


def _interval(errors: int, trials: int) -> list[float]:
    return list(wilson_interval(errors, trials))


def verification_summary(
    scores: VerificationScores, fta: float, targets: Sequence[float]
) -> dict[str, object]:
    points = metrics.fnmr_at_fmr(scores.genuine, scores.impostor, targets)
    eer_rate, eer_threshold = metrics.eer(scores.genuine, scores.impostor)
    rows = []
    n_genuine, n_impostor = int(scores.genuine.size), int(scores.impostor.size)
    for point in points:
        gfmr, gfnmr = metrics.generalized_verification_rates(point.fmr, point.fnmr, fta, fte=fta)
        rows.append(
            {
                "target": point.target,
                "threshold": point.threshold,
                "fmr": point.fmr,
                "fnmr": point.fnmr,
                "supported": point.supported,
                "generalized_fmr": float(gfmr),
                "generalized_fnmr": float(gfnmr),
                "fmr_ci95": _interval(round(point.fmr * n_impostor), n_impostor),
                "fnmr_ci95": _interval(round(point.fnmr * n_genuine), n_genuine),
                "pairs_needed": trials_needed(point.target),
            }
        )
    return {
        "genuine_comparisons": n_genuine,
        "impostor_comparisons": n_impostor,
        "impostor_population": scores.impostor_population,
        "impostor_sampled": scores.sampled,
        "fnmr_at_fmr": rows,
        "eer": eer_rate,
        "eer_threshold": eer_threshold,
    }


def _rates_at(searches: FlightSearches, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return metrics.fpir_fnir(
        searches.mated_scores,
        searches.mated_ranks,
        searches.nonmated_top,
        thresholds,
        mated_failed=int(searches.mated_failed.sum()),
        nonmated_failed=int(searches.nonmated_failed.sum()),
    )


def _rank1(searches: FlightSearches) -> float:
    return metrics.rank1_rate(searches.mated_ranks, int(searches.mated_failed.sum()))


def identification_summary(
    searches: FlightSearches, gallery_size: int, targets: Sequence[float]
) -> dict[str, object]:
    mated_failed, nonmated_failed = int(searches.mated_failed.sum()), int(searches.nonmated_failed.sum())
    points = metrics.fnir_at_fpir(
        searches.mated_scores,
        searches.mated_ranks,
        searches.nonmated_top,
        targets,
        mated_failed=mated_failed,
        nonmated_failed=nonmated_failed,
    )
    per_departure = [searches.departure(i) for i in range(searches.departures)]
    thresholds = np.array([p.threshold for p in points])
    departure_fnir = np.array([_rates_at(d, thresholds)[1] for d in per_departure])  # (departures, targets)
    mated = int(searches.mated_ranks.size) + mated_failed
    nonmated = int(searches.nonmated_top.size) + nonmated_failed
    return {
        "gallery_size": gallery_size,
        "departures": searches.departures,
        "mated_searches": mated,
        "nonmated_searches": nonmated,
        "mated_failed": mated_failed,
        "nonmated_failed": nonmated_failed,
        "fnir_at_fpir": [
            {
                "target": p.target,
                "threshold": p.threshold,
                "fpir": p.fpir,
                "fnir": p.fnir,
                "supported": p.supported,
                "fnir_spread": _spread(departure_fnir[:, k]),
                "fpir_ci95": _interval(round(p.fpir * nonmated), nonmated),
                "fnir_ci95": _interval(round(p.fnir * mated), mated),
            }
            for k, p in enumerate(points)
        ],
        "rank1": _rank1(searches),
        "rank1_spread": _spread([_rank1(d) for d in per_departure]),
    }


def subgroup_summary(
    embedded: EmbeddedSet,
    searches: FlightSearches,
    labels: dict[str, dict[str, str]],
    verification: dict,
    identification: dict,
    settings: AccuracySettings,
) -> dict[str, dict[str, dict[str, object]]]:
    """Per attribute and value, the rates at the pooled thresholds (None where the group has no such trials)."""
    fmr_thresholds = np.array([row["threshold"] for row in verification["fnmr_at_fmr"]])
    fpir_thresholds = np.array([row["threshold"] for row in identification["fnir_at_fpir"]])
    result: dict[str, dict[str, dict[str, object]]] = {}
    for attribute, mapping in labels.items():
        result[attribute] = {}
        for value in sorted(set(mapping.values())):
            members = [identity for identity, v in mapping.items() if v == value]
            keep = np.isin(embedded.identities, members)
            if not keep.any():
                continue
            group = embedded.subset(keep)
            scores = _verification_scores(group, settings, progress=False)
            row: dict[str, object] = {
                "identities": int(np.unique(group.identities).size),
                "images": int(keep.sum()),
                "fta_rate": group.fta_rate,
                "fmr": None,
                "fnmr": None,
                "fpir": None,
                "fnir": None,
                "rank1": None,
            }
            if scores.genuine.size and scores.impostor.size:
                fmr, fnmr = metrics.fmr_fnmr(scores.genuine, scores.impostor, fmr_thresholds)
                row["fmr"], row["fnmr"] = fmr.tolist(), fnmr.tolist()
            probes = searches.probes_of(members)
            mated = probes.mated_ranks.size + int(probes.mated_failed.sum())
            nonmated = probes.nonmated_top.size + int(probes.nonmated_failed.sum())
            if mated and nonmated:
                fpir, fnir = _rates_at(probes, fpir_thresholds)
                row["fpir"], row["fnir"] = fpir.tolist(), fnir.tolist()
            if mated:
                row["rank1"] = _rank1(probes)
            result[attribute][value] = row
    return result


def pair_rows(dataset: Dataset, pairs: Sequence[metrics.Pair]) -> tuple[np.ndarray, np.ndarray]:
    """The sample rows of each pair's two images; a pair naming an image the data set lacks is refused
    (the CLI calls this before embedding, so a wrong pairs file costs no model time)."""
    rows = {s.path.relative_to(dataset.root).as_posix(): i for i, s in enumerate(dataset.samples)}

    def row_of(path: Path) -> int:
        relative = path.relative_to(dataset.root).as_posix()
        if relative not in rows:
            raise DatasetError(f"pairs file names {relative}, which is not an image of {dataset.root}")
        return rows[relative]

    return np.array([row_of(p.path1) for p in pairs]), np.array([row_of(p.path2) for p in pairs])


def lfw_summary(dataset: Dataset, embedded: EmbeddedSet, pairs: Sequence[metrics.Pair]) -> dict[str, object]:
    first, second = pair_rows(dataset, pairs)
    usable = embedded.acquired[first] & embedded.acquired[second]
    cosine = np.einsum("ij,ij->i", embedded.embeddings[first], embedded.embeddings[second])
    scores = np.where(usable, cosine, np.float32(FAILED_PAIR_SCORE))
    same = np.array([p.same for p in pairs])
    accuracy, std, thresholds = metrics.kfold_accuracy(scores, same, np.array([p.fold for p in pairs]))
    return {
        "pairs": len(pairs),
        "folds": int(np.unique([p.fold for p in pairs]).size),
        "failed_pairs": int((~usable).sum()),
        "accuracy": accuracy,
        "std": std,
        "thresholds": thresholds.tolist(),
    }


def _verification_scores(
    embedded: EmbeddedSet, settings: AccuracySettings, progress: bool
) -> VerificationScores:
    return verification_scores(
        embedded,
        impostor_pairs=settings.impostor_pairs,
        lowest_fmr=min(settings.fmr_targets),
        seed=settings.seed,
        progress=progress,
    )


@dataclass(frozen=True)
class ScoredSet:
    """What the protocols make of an embedded set: summaries (JSON-ready) and the raw score sets."""

    rates: dict[str, object]
    scores: VerificationScores
    searches: FlightSearches


def score_embedded(
    embedded: EmbeddedSet,
    settings: AccuracySettings,
    *,
    labels: dict[str, dict[str, str]] | None = None,
    progress: bool = True,
) -> ScoredSet:
    """Everything after embedding: 1:1 and 1:N protocols, their rates, subgroups when labelled."""
    fta = embedded.fta_rate
    scores = _verification_scores(embedded, settings, progress)
    searches = simulate_flights(embedded, settings.gallery_size, settings.departures, settings.seed, progress)
    verification = verification_summary(scores, fta, settings.fmr_targets)
    identification = identification_summary(searches, settings.gallery_size, settings.fpir_targets)
    identification["single_image_identities"] = single_image_identities(embedded)
    acquired = embedded.acquired
    rates: dict[str, object] = {
        "images": int(acquired.size),
        "fta_rate": fta,
        "fte_rate": enrollment_failures(embedded),
        "quality_pass_rate": float(embedded.quality_passed[acquired].mean()) if acquired.any() else 0.0,
        "verification": verification,
        "identification": identification,
    }
    if labels:
        rates["subgroups"] = subgroup_summary(
            embedded, searches, labels, verification, identification, settings
        )
    return ScoredSet(rates, scores, searches)


def evaluate_pack(
    dataset: Dataset,
    pipeline: FacePipeline,
    settings: AccuracySettings,
    *,
    engine: tuple[str, Engine] | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    pairs: Sequence[metrics.Pair] | None = None,
    labels: dict[str, dict[str, str]] | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> PackRun:
    """One pack's run; `engine` is (name, engine) to embed elsewhere than in this process."""
    pack = pipeline.pack
    engine_name, embed_with = engine or ("local", None)
    embedding = embed_dataset(
        dataset, pipeline, cache_dir, engine=embed_with, chunk_size=chunk_size, progress=progress
    )
    scored = score_embedded(embedding.embedded, settings, labels=labels, progress=progress)
    if pairs:
        scored.rates["verification"]["lfw_accuracy"] = lfw_summary(dataset, embedding.embedded, pairs)
    summary: dict[str, object] = {
        "pack": pack.name,
        "commercial_use": pack.commercial_use,
        "embedder": {
            "name": pack.embedder.name,
            "sha256": pack.embedder.sha256,
            "dim": pipeline.embedding_size,
        },
        "models": pack.model_hashes,
        "embedding_s": round(embedding.seconds, 1),
        "embedding": {"engine": engine_name, **embedding.summary},
        **scored.rates,
    }
    return PackRun(pack.name, summary, scored.scores, scored.searches)


def calibration_table(run: PackRun, dataset: Dataset) -> CalibrationTable:
    """The table galleries read: this pack's impostor scores, traceable to the data set's fingerprint."""
    embedder = run.summary["embedder"]
    return measure_calibration(
        run.scores.impostor,
        embedder=embedder["name"],
        embedder_sha256=embedder["sha256"],
        dataset=f"{dataset.root.name} (fingerprint {dataset.fingerprint[:16]}, {len(dataset.samples)} images, "
        f"pack {run.pack})",
    )
