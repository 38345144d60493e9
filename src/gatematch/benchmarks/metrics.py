"""Biometric error rates as pure numpy functions, in ISO/IEC 19795-1 terms.

Conventions used throughout (the report quotes them):
- Scores are similarities: higher means more alike. A comparison *matches* at threshold t when score >= t.
- Verification (1:1): FMR(t) = share of impostor comparisons with score >= t; FNMR(t) = share of genuine
  comparisons with score < t.
- Open-set identification (1:N, as NIST FRVT): FPIR(t) = share of non-mated searches whose top candidate
  scores >= t; FNIR(t, R) = share of mated searches whose mate is not returned at rank <= R with score >= t.
- Thresholds derived from a target rate are exact for the data: the smallest float threshold (in the scores'
  own precision) that meets the target. A target below 1/n (n = comparisons or searches that can produce a
  false positive) cannot be measured; the point is then flagged `supported=False`.
Everything works on sorted arrays with `searchsorted`, so millions of impostor scores cost one sort.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gatematch.errors import DatasetError, MetricInputError

# --------------------------------------------------------------------------------------------- input checks


def as_scores(values: object, name: str, *, allow_empty: bool = False) -> np.ndarray:
    """`values` as a 1-D float array of finite scores, or MetricInputError naming `name`.

    float32 input stays float32, so thresholds derived from it are exact in the precision the scores have.
    """
    array = np.asarray(values)
    if array.ndim != 1:
        raise MetricInputError(f"{name} must be a 1-D array of scores, got shape {array.shape}")
    if array.size == 0 and not allow_empty:
        raise MetricInputError(f"{name} is empty: an error rate needs at least one comparison")
    if not np.issubdtype(array.dtype, np.floating):
        if array.size and not np.issubdtype(array.dtype, np.number):
            raise MetricInputError(f"{name} must hold numbers, got dtype {array.dtype}")
        array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise MetricInputError(f"{name} holds NaN or infinite scores")
    return array


def _targets(values: float | Sequence[float], name: str) -> list[float]:
    """Target rates in [0, 1): a target of 1 or more asks for no decision at all."""
    targets = [float(v) for v in np.atleast_1d(np.asarray(values, dtype=np.float64))]
    bad = [t for t in targets if not 0.0 <= t < 1.0]
    if bad or not targets:
        raise MetricInputError(f"{name} must be rates in [0, 1), got {bad or 'nothing'}")
    return targets


def _allowed_count(target: float, total: int) -> int:
    """The largest k with k / total <= target, exactly (floor(target * total) can be off by one in floats)."""
    k = math.floor(target * total)
    while k > 0 and k / total > target:
        k -= 1
    while (k + 1) / total <= target:
        k += 1
    return k


def _threshold_allowing(descending: np.ndarray, allowed: int) -> float:
    """Smallest threshold that lets at most `allowed` of the scores (sorted high to low) reach it.

    That is the float just above the (allowed+1)-th highest score, so ties at that score are all excluded;
    with `allowed` >= len(scores) every score may pass and the lowest score is returned.
    """
    if allowed >= descending.size:
        return float(descending[-1])
    pivot = descending[allowed]
    return float(np.nextafter(pivot, np.inf, dtype=pivot.dtype))


def _thresholds_for_targets(
    negatives: np.ndarray, total: int, targets: float | Sequence[float]
) -> list[tuple[float, float, bool]]:
    """(target, threshold, supported) per target, from sorted scores that can only produce false positives.

    `total` may exceed len(negatives) when some trials (failed captures) can never be a false positive.
    """
    descending = negatives[::-1]
    return [
        (target, _threshold_allowing(descending, _allowed_count(target, total)), target * total >= 1.0)
        for target in _targets(targets, "targets")
    ]


def _as_thresholds(values: np.ndarray) -> np.ndarray:
    """Thresholds as a float array; +-inf are valid (accept all / reject all), NaN is not."""
    thresholds = np.asarray(values, dtype=np.float64)
    if np.isnan(thresholds).any():
        raise MetricInputError("thresholds must not be NaN")
    return thresholds


def _count_at_least(ascending: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of the sorted scores are >= each threshold."""
    return ascending.size - np.searchsorted(ascending, thresholds, side="left")


# ------------------------------------------------------------------------------------------- verification


@dataclass(frozen=True)
class VerificationPoint:
    """A verification operating point set from a target FMR on impostor scores.

    `supported` is False when target * n_impostor < 1: no impostor comparison may exceed the threshold, so the
    measured FMR (0) says nothing about rates that small; the threshold is then just above the top impostor.
    """

    target: float
    threshold: float
    fmr: float
    fnmr: float
    supported: bool


def fmr_fnmr(
    genuine: np.ndarray, impostor: np.ndarray, thresholds: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """FMR and FNMR at each threshold (match when score >= threshold)."""
    gen = np.sort(as_scores(genuine, "genuine"))
    imp = np.sort(as_scores(impostor, "impostor"))
    t = _as_thresholds(thresholds)
    fmr = _count_at_least(imp, t) / imp.size
    fnmr = np.searchsorted(gen, t, side="left") / gen.size
    return fmr, fnmr


def threshold_at_fmr(impostor: np.ndarray, target_fmr: float) -> float:
    """The smallest threshold whose FMR <= target_fmr.

    Exact for the data: with k = the most impostor comparisons the target allows (k / n <= target), the
    threshold is the next float above the (k+1)-th highest impostor score, so tied scores there all fall
    below it. For target < 1/n that is the float just above the top impostor score (FMR 0 measured, not
    supported: use `fnmr_at_fmr` to get the flag).
    """
    return float(thresholds_at_fmr(impostor, [target_fmr])[0])


def thresholds_at_fmr(impostor: np.ndarray, targets: Sequence[float]) -> np.ndarray:
    """`threshold_at_fmr` for several targets at the cost of one sort."""
    imp = np.sort(as_scores(impostor, "impostor"))
    return np.array([threshold for _, threshold, _ in _thresholds_for_targets(imp, imp.size, targets)])


def fnmr_at_fmr(
    genuine: np.ndarray, impostor: np.ndarray, targets: Sequence[float]
) -> list[VerificationPoint]:
    """FNMR at the threshold that meets each target FMR (see `threshold_at_fmr`), with the measured FMR."""
    gen = np.sort(as_scores(genuine, "genuine"))
    imp = np.sort(as_scores(impostor, "impostor"))
    return [
        VerificationPoint(
            target=target,
            threshold=threshold,
            fmr=float(_count_at_least(imp, np.array([threshold]))[0] / imp.size),
            fnmr=float(np.searchsorted(gen, threshold, side="left") / gen.size),
            supported=supported,
        )
        for target, threshold, supported in _thresholds_for_targets(imp, imp.size, targets)
    ]


def det_curve(genuine: np.ndarray, impostor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, fmr, fnmr) at every distinct score plus one threshold above all scores.

    Thresholds ascend, so FMR falls from 1 to 0 and FNMR rises from 0 to 1: the full DET/ROC staircase.
    One sort of each score set; cost O((n_gen + n_imp) log n) and three arrays of the distinct-score length.
    """
    gen = np.sort(as_scores(genuine, "genuine"))
    imp = np.sort(as_scores(impostor, "impostor"))
    distinct = np.unique(np.concatenate([gen, imp]))
    above = np.nextafter(distinct[-1], np.inf, dtype=distinct.dtype)
    thresholds = np.append(distinct, above)
    fmr = _count_at_least(imp, thresholds) / imp.size
    fnmr = np.searchsorted(gen, thresholds, side="left") / gen.size
    return thresholds, fmr, fnmr


def eer(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """(equal error rate, threshold).

    FMR and FNMR are step functions, so they rarely meet exactly. The EER is where the straight segment
    between the two DET points bracketing the crossing meets FMR = FNMR (the rate a random choice between
    those two thresholds would reach). The threshold returned is the one of those two whose |FMR - FNMR| is
    smaller (the higher one on a tie): a real threshold, not an interpolated one.
    """
    thresholds, fmr, fnmr = det_curve(genuine, impostor)
    gap = fmr - fnmr  # falls from 1 (lowest threshold) to -1 (above all scores), so b >= 1
    b = int(np.argmax(gap <= 0.0))
    if gap[b] == 0.0:
        return float(fmr[b]), float(thresholds[b])
    a = b - 1
    alpha = gap[a] / (gap[a] - gap[b])
    rate = fmr[a] + alpha * (fmr[b] - fmr[a])
    best = a if abs(gap[a]) < abs(gap[b]) else b
    return float(rate), float(thresholds[best])


# ------------------------------------------------------------------------------------ LFW 10-fold accuracy


def _best_threshold(scores: np.ndarray, same: np.ndarray) -> float:
    """Threshold maximising accuracy (match when score >= t) on these pairs.

    Accuracy only changes at distinct scores; the winner (the lowest on a tie) is reported as the middle of
    the gap below its distinct score, so it sits between training scores rather than on one. Accepting
    everything is the lowest score itself; rejecting everything is the float above the highest score.
    """
    distinct = np.unique(scores)
    candidates = np.append(distinct, np.nextafter(distinct[-1], np.inf, dtype=distinct.dtype))
    pos = np.sort(scores[same])
    neg = np.sort(scores[~same])
    correct = (pos.size - np.searchsorted(pos, candidates, side="left")) + np.searchsorted(
        neg, candidates, side="left"
    )
    i = int(np.argmax(correct))
    if i == 0 or i == distinct.size:
        return float(candidates[i])
    return float((distinct[i - 1] + distinct[i]) / 2.0)


def kfold_accuracy(
    scores: np.ndarray, same: np.ndarray, folds: np.ndarray
) -> tuple[float, float, np.ndarray]:
    """LFW View-2 protocol: (mean accuracy, std, thresholds per fold).

    For each fold, the threshold maximising accuracy on all other folds is applied to that fold. The std is
    the population std (ddof=0) of the fold accuracies, as the common LFW evaluation code reports it.
    """
    values = as_scores(scores, "scores")
    labels = np.asarray(same)
    fold_ids = np.asarray(folds)
    if labels.dtype != np.bool_ or labels.shape != values.shape or fold_ids.shape != values.shape:
        raise MetricInputError(
            f"same (bool) and folds must match scores' shape {values.shape}, "
            f"got {labels.dtype} {labels.shape} and {fold_ids.shape}"
        )
    unique_folds = np.unique(fold_ids)
    if unique_folds.size < 2:
        raise MetricInputError(f"k-fold accuracy needs at least 2 folds, got {unique_folds.size}")
    accuracies = []
    thresholds = []
    for fold in unique_folds:
        test = fold_ids == fold
        threshold = _best_threshold(values[~test], labels[~test])
        predicted = values[test] >= threshold
        accuracies.append(float(np.mean(predicted == labels[test])))
        thresholds.append(threshold)
    return float(np.mean(accuracies)), float(np.std(accuracies)), np.array(thresholds)


@dataclass(frozen=True)
class Pair:
    """One LFW pair: two images, whether they show the same person, and the fold it belongs to (0-based)."""

    fold: int
    same: bool
    name1: str
    number1: int
    name2: str
    number2: int
    path1: Path
    path2: Path


def lfw_image_path(root: Path, name: str, number: int) -> Path:
    """LFW's own layout: ROOT/<name>/<name>_<%04d>.jpg."""
    return root / name / f"{name}_{number:04d}.jpg"


def _image_number(text: str, where: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise DatasetError(f"{where}: image number must be a positive integer, got '{text}'")
    return int(text)


def parse_lfw_pairs(
    path: Path,
    root: Path | None = None,
    image_path: Callable[[Path, str, int], Path] = lfw_image_path,
) -> list[Pair]:
    """Read an LFW pairs file: header "<folds> <pairs per class>" (or one number for a single fold), then per
    fold that many matched lines "name n1 n2" followed by that many mismatched lines "name1 n1 name2 n2".

    Image paths come from `image_path(root, name, number)`; `root` defaults to the pairs file's folder.
    Any line that breaks the format raises DatasetError naming the file and line.
    """
    path = Path(path)
    root = path.parent if root is None else Path(root)
    try:
        lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read LFW pairs file {path}: {exc}") from exc
    while lines and not lines[-1]:
        lines.pop()
    header = lines[0] if lines else []
    if len(header) not in (1, 2) or not all(v.isdigit() and int(v) > 0 for v in header):
        raise DatasetError(f"{path}:1: header must be '<folds> <pairs per class>' or '<pairs>', got {header}")
    n_folds, per_class = (1, int(header[0])) if len(header) == 1 else (int(header[0]), int(header[1]))
    body = lines[1:]
    if len(body) != 2 * n_folds * per_class:
        raise DatasetError(
            f"{path}: header promises {n_folds} x 2 x {per_class} = {2 * n_folds * per_class} pair lines, "
            f"found {len(body)}"
        )
    pairs = []
    for i, fields in enumerate(body):
        where = f"{path}:{i + 2}"
        fold, same = i // (2 * per_class), (i % (2 * per_class)) < per_class
        if same and len(fields) == 3:
            name1, name2 = fields[0], fields[0]
            number1, number2 = _image_number(fields[1], where), _image_number(fields[2], where)
        elif not same and len(fields) == 4:
            name1, name2 = fields[0], fields[2]
            number1, number2 = _image_number(fields[1], where), _image_number(fields[3], where)
        else:
            expected = "'name n1 n2'" if same else "'name1 n1 name2 n2'"
            raise DatasetError(f"{where}: expected a {expected} line in fold {fold + 1}, got {fields}")
        pairs.append(
            Pair(
                fold=fold,
                same=same,
                name1=name1,
                number1=number1,
                name2=name2,
                number2=number2,
                path1=image_path(root, name1, number1),
                path2=image_path(root, name2, number2),
            )
        )
    return pairs


# ----------------------------------------------------------------------------- open-set identification

NOT_RETURNED = math.inf
"""Rank of a mate that is not on the candidate list (or not in the gallery at all, e.g. after an FTE)."""


@dataclass(frozen=True)
class IdentificationPoint:
    """An open-set operating point set from a target FPIR on the non-mated top scores.

    `supported` is False when target * n_nonmated < 1 (including failed non-mated searches): the threshold
    then sits just above the top non-mated score and FPIR 0 is all that was measured.
    """

    target: float
    threshold: float
    fpir: float
    fnir: float
    supported: bool


def _count(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
        raise MetricInputError(f"{name} must be a count >= 0, got {value!r}")
    return int(value)


def _mate_hit_scores(mated_scores: np.ndarray, mated_ranks: np.ndarray, max_rank: int) -> np.ndarray:
    """Sorted scores of the mates returned at rank <= max_rank (the only mated searches that can be hits)."""
    if isinstance(max_rank, bool) or not isinstance(max_rank, int | np.integer) or max_rank < 1:
        raise MetricInputError(f"max_rank must be an integer >= 1, got {max_rank!r}")
    ranks = np.asarray(mated_ranks, dtype=np.float64)
    scores = np.asarray(mated_scores, dtype=np.float64)
    if ranks.ndim != 1 or ranks.shape != scores.shape:
        raise MetricInputError(
            f"mated_scores and mated_ranks must be 1-D of equal length, got {scores.shape} and {ranks.shape}"
        )
    returned = np.isfinite(ranks)
    if np.isnan(ranks).any() or (ranks < 1).any() or (ranks[returned] != np.floor(ranks[returned])).any():
        raise MetricInputError("mated_ranks must be integers >= 1, or NOT_RETURNED for a mate not returned")
    hits = scores[returned & (ranks <= max_rank)]
    return np.sort(as_scores(hits, "mated_scores of returned mates", allow_empty=True))


def _nonmated_tops(nonmated_top_scores: np.ndarray) -> np.ndarray:
    """Sorted top scores; -inf marks a search that returned no candidate (never a false positive)."""
    tops = np.asarray(nonmated_top_scores, dtype=np.float64)
    if tops.ndim != 1 or np.isnan(tops).any() or (tops == np.inf).any():
        raise MetricInputError("nonmated_top_scores must be 1-D, without NaN or +inf (-inf: no candidate)")
    return np.sort(tops)


def _search_totals(n_mated: int, mated_failed: int, n_nonmated: int, nonmated_failed: int) -> tuple[int, int]:
    mated_total = n_mated + _count(mated_failed, "mated_failed")
    nonmated_total = n_nonmated + _count(nonmated_failed, "nonmated_failed")
    if mated_total == 0 or nonmated_total == 0:
        raise MetricInputError(
            f"identification rates need mated and non-mated searches, got {mated_total} and {nonmated_total}"
        )
    return mated_total, nonmated_total


def fpir_fnir(
    mated_scores: np.ndarray,
    mated_ranks: np.ndarray,
    nonmated_top_scores: np.ndarray,
    thresholds: np.ndarray,
    max_rank: int = 1,
    *,
    mated_failed: int = 0,
    nonmated_failed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """(FPIR, FNIR) at each threshold.

    A mated search is a hit when its mate is returned at rank <= max_rank with score >= threshold; give the
    mate's score and 1-based rank, or rank NOT_RETURNED. Failures, counted into the denominators:
    - `mated_failed`: mated searches that produced no template (probe FTA) or whose traveler has no gallery
      entry (FTE); each is a miss at every threshold (counts in FNIR).
    - `nonmated_failed`: non-mated searches whose probe failed to acquire; each is a correct rejection
      (counts in the FPIR denominator, never the numerator).
    """
    hits = _mate_hit_scores(mated_scores, mated_ranks, max_rank)
    tops = _nonmated_tops(nonmated_top_scores)
    mated_total, nonmated_total = _search_totals(
        np.asarray(mated_ranks).size, mated_failed, tops.size, nonmated_failed
    )
    t = _as_thresholds(thresholds)
    fpir = _count_at_least(tops, t) / nonmated_total
    fnir = 1.0 - _count_at_least(hits, t) / mated_total
    return fpir, fnir


def fnir_at_fpir(
    mated_scores: np.ndarray,
    mated_ranks: np.ndarray,
    nonmated_top_scores: np.ndarray,
    targets: Sequence[float],
    max_rank: int = 1,
    *,
    mated_failed: int = 0,
    nonmated_failed: int = 0,
) -> list[IdentificationPoint]:
    """FNIR at the smallest threshold whose FPIR <= each target (threshold set on non-mated top scores).

    Failures count as in `fpir_fnir`: failed non-mated searches enlarge the FPIR denominator, so they make a
    given target reachable at a slightly lower threshold, exactly as they would in the field.
    """
    hits = _mate_hit_scores(mated_scores, mated_ranks, max_rank)
    tops = _nonmated_tops(nonmated_top_scores)
    mated_total, nonmated_total = _search_totals(
        np.asarray(mated_ranks).size, mated_failed, tops.size, nonmated_failed
    )
    points = []
    for target, threshold, supported in _thresholds_for_targets(tops, nonmated_total, targets):
        at = np.array([threshold])
        points.append(
            IdentificationPoint(
                target=target,
                threshold=threshold,
                fpir=float(_count_at_least(tops, at)[0] / nonmated_total),
                fnir=float(1.0 - _count_at_least(hits, at)[0] / mated_total),
                supported=supported,
            )
        )
    return points


def rank1_rate(mated_ranks: np.ndarray, mated_failed: int = 0) -> float:
    """Share of mated searches whose mate is the top candidate, no threshold (closed-set rank-1 rate).

    Failed mated searches (FTA, FTE) count as misses, as in FNIR.
    """
    ranks = np.asarray(mated_ranks, dtype=np.float64)
    total = ranks.size + _count(mated_failed, "mated_failed")
    if ranks.ndim != 1 or total == 0:
        raise MetricInputError(f"rank1_rate needs a 1-D array of mated ranks, got shape {ranks.shape}")
    return float(np.count_nonzero(ranks == 1) / total)


# ------------------------------------------------------------------------ failures to acquire / enroll


def generalized_verification_rates(
    fmr: float | np.ndarray, fnmr: float | np.ndarray, fta: float, fte: float = 0.0
) -> tuple[float | np.ndarray, float | np.ndarray]:
    """(generalised FMR, generalised FNMR) of a single-attempt verification, ISO/IEC 19795-1 style.

    GFNMR = FTE + (1 - FTE) * FTA + (1 - FTE) * (1 - FTA) * FNMR  (a traveler who cannot enroll or whose
            probe cannot be acquired is falsely rejected)
    GFMR  = (1 - FTE) * (1 - FTA) * FMR  (an impostor who cannot be enrolled or acquired is never accepted)
    With FTE = 0 these are 19795-1's FRR = FTA + FNMR * (1 - FTA) and FAR = FMR * (1 - FTA).
    """
    for name, rate in (("fta", fta), ("fte", fte)):
        if not 0.0 <= rate <= 1.0:
            raise MetricInputError(f"{name} must be a rate in [0, 1], got {rate}")
    success = (1.0 - fte) * (1.0 - fta)
    return success * fmr, (1.0 - success) + success * fnmr
