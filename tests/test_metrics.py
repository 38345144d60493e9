"""Error-rate metrics against hand-computed cases and brute-force definitions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gatematch.benchmarks.metrics import (
    NOT_RETURNED,
    det_curve,
    eer,
    fmr_fnmr,
    fnir_at_fpir,
    fnmr_at_fmr,
    fpir_fnir,
    generalized_verification_rates,
    kfold_accuracy,
    lfw_image_path,
    parse_lfw_pairs,
    rank1_rate,
    threshold_at_fmr,
)
from gatematch.errors import DatasetError, MetricInputError

GENUINE = np.array([0.9, 0.8, 0.4])
IMPOSTOR = np.array([0.1, 0.2, 0.5, 0.3])


def above(x: float) -> float:
    return float(np.nextafter(x, np.inf))


# ------------------------------------------------------------------------------------------- verification


def test_fmr_fnmr_by_hand() -> None:
    fmr, fnmr = fmr_fnmr(GENUINE, IMPOSTOR, np.array([0.0, 0.3, 0.45, 0.5, 0.85, 1.0]))
    np.testing.assert_allclose(fmr, [1.0, 0.5, 0.25, 0.25, 0.0, 0.0])  # 0.5 >= 0.5 matches
    np.testing.assert_allclose(fnmr, [0.0, 0.0, 1 / 3, 1 / 3, 2 / 3, 1.0])


def test_threshold_at_fmr_by_hand() -> None:
    assert threshold_at_fmr(IMPOSTOR, 0.5) == above(0.2)
    assert threshold_at_fmr(IMPOSTOR, 0.25) == above(0.3)
    assert threshold_at_fmr(IMPOSTOR, 0.2) == above(0.5)  # below 1/4: just above the top impostor
    assert threshold_at_fmr(IMPOSTOR, 0.0) == above(0.5)


def test_threshold_at_fmr_excludes_all_ties() -> None:
    impostor = np.array([0.5, 0.5, 0.5, 0.1])
    threshold = threshold_at_fmr(impostor, 0.5)
    fmr_at, _ = fmr_fnmr(GENUINE, impostor, np.array([threshold, np.nextafter(threshold, -np.inf)]))
    assert fmr_at[0] == 0.0  # the three tied scores go together
    assert fmr_at[1] == 0.75  # one float lower already breaks the target: it is the smallest


def test_threshold_at_fmr_is_exact_where_floor_of_product_is_not() -> None:
    impostor = np.arange(100) / 100.0
    assert int(0.29 * 100) == 28  # the float product undercounts: 29 comparisons are allowed
    (point,) = fnmr_at_fmr(GENUINE, impostor, [0.29])
    assert point.fmr == 0.29
    assert point.threshold == above(0.70)


def test_threshold_at_fmr_smallest_on_random_data() -> None:
    rng = np.random.default_rng(1)
    impostor = np.round(rng.normal(0.0, 0.1, 5000), 3)  # rounding makes many ties
    for target in [0.0, 1e-4, 2e-4, 1e-3, 0.0123, 0.1, 0.5, 0.9]:
        t = threshold_at_fmr(impostor, target)
        assert np.mean(impostor >= t) <= target
        assert np.mean(impostor >= np.nextafter(t, -np.inf)) > target


def test_threshold_keeps_float32_precision() -> None:
    impostor = np.array([0.1, 0.3, 0.7], dtype=np.float32)
    t = threshold_at_fmr(impostor, 0.0)
    assert np.float32(t) == t > np.float32(0.7)  # stored as float32 it still rejects the top impostor


def test_fnmr_at_fmr_flags_unsupported_targets() -> None:
    low, ok = fnmr_at_fmr(GENUINE, IMPOSTOR, [0.1, 0.25])
    assert (low.supported, low.threshold, low.fmr, low.fnmr) == (False, above(0.5), 0.0, pytest.approx(1 / 3))
    assert (ok.supported, ok.threshold, ok.fmr, ok.fnmr) == (True, above(0.3), 0.25, 0.0)


def test_eer_by_hand() -> None:
    # DET points around the crossing: t=0.4 (FMR 1/4, FNMR 0) and t=0.5 (1/4, 1/3): they meet at 1/4.
    assert eer(GENUINE, IMPOSTOR) == (pytest.approx(0.25), 0.5)
    assert eer([0.8, 0.9], [0.1, 0.2]) == (0.0, 0.8)  # separable
    assert eer([0.2, 0.9], [0.1, 0.8]) == (0.5, 0.8)  # rates meet exactly at a threshold


def test_det_curve_matches_brute_force() -> None:
    rng = np.random.default_rng(0)
    genuine = np.round(rng.normal(0.6, 0.15, 300), 2)
    impostor = np.round(rng.normal(0.1, 0.1, 2000), 2)
    thresholds, fmr, fnmr = det_curve(genuine, impostor)
    assert np.all(np.diff(thresholds) > 0)
    assert set(np.concatenate([genuine, impostor])) <= set(thresholds)
    brute_fmr = np.array([np.mean(impostor >= t) for t in thresholds])
    brute_fnmr = np.array([np.mean(genuine < t) for t in thresholds])
    np.testing.assert_array_equal(fmr, brute_fmr)
    np.testing.assert_array_equal(fnmr, brute_fnmr)
    assert (fmr[0], fnmr[0], fmr[-1], fnmr[-1]) == (1.0, 0.0, 0.0, 1.0)
    rate, _ = eer(genuine, impostor)
    crossing = int(np.argmax(fmr <= fnmr))
    assert min(fmr[crossing], fnmr[crossing - 1]) <= rate <= max(fmr[crossing - 1], fnmr[crossing])


@pytest.mark.parametrize(
    ("genuine", "impostor"),
    [([], [0.1]), ([0.9], []), ([0.9, np.nan], [0.1]), ([[0.9]], [0.1]), ([0.9], ["a"])],
)
def test_bad_scores_raise_typed_error(genuine: list, impostor: list) -> None:
    with pytest.raises(MetricInputError):
        det_curve(genuine, impostor)
    assert issubclass(MetricInputError, ValueError)


def test_nan_threshold_raises() -> None:
    with pytest.raises(MetricInputError, match="NaN"):
        fmr_fnmr(GENUINE, IMPOSTOR, np.array([0.5, np.nan]))
    with pytest.raises(MetricInputError, match="NaN"):
        fpir_fnir([0.9], [1], [0.1], np.array([np.nan]))


@pytest.mark.parametrize("target", [-0.1, 1.0, np.nan])
def test_bad_target_raises(target: float) -> None:
    with pytest.raises(MetricInputError, match="rates in"):
        threshold_at_fmr(IMPOSTOR, target)


# ------------------------------------------------------------------------------------------- k-fold / LFW


def test_kfold_threshold_comes_from_the_other_folds() -> None:
    # Nine ordinary folds: same {0.9, 0.8, 0.7, 0.3}, different {0.1, 0.2, 0.4, 0.6} -> best t in (0.6, 0.7].
    # Fold 0's same pairs all score 0.62: rejected by the threshold learnt without it (accuracy 4/8), and
    # with it in training the best interval becomes (0.6, 0.62], where the ordinary folds still score 7/8.
    same_scores, diff_scores = [0.9, 0.8, 0.7, 0.3], [0.1, 0.2, 0.4, 0.6]
    scores, same, folds = [], [], []
    for fold in range(10):
        positives = [0.62] * 4 if fold == 0 else same_scores
        scores += positives + diff_scores
        same += [True] * 4 + [False] * 4
        folds += [fold + 1] * 8
    mean, std, thresholds = kfold_accuracy(np.array(scores), np.array(same), np.array(folds))
    assert mean == pytest.approx((0.5 + 9 * 0.875) / 10)
    assert std == pytest.approx(0.1125)
    np.testing.assert_allclose(thresholds, [0.65] + [0.61] * 9)


def test_kfold_separable_is_perfect() -> None:
    rng = np.random.default_rng(3)
    same = rng.random(600) < 0.5
    scores = np.where(same, rng.uniform(0.5, 0.9, 600), rng.uniform(-0.2, 0.4, 600))
    mean, std, thresholds = kfold_accuracy(scores, same, np.arange(600) % 10)
    assert (mean, std) == (1.0, 0.0)
    assert np.all((thresholds > 0.4) & (thresholds < 0.5))


def test_kfold_rejects_bad_labels() -> None:
    with pytest.raises(MetricInputError):
        kfold_accuracy(np.array([0.1, 0.9]), np.array([0, 1]), np.array([0, 1]))  # labels must be bool
    with pytest.raises(MetricInputError, match="2 folds"):
        kfold_accuracy(np.array([0.1, 0.9]), np.array([False, True]), np.array([0, 0]))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pairs.txt"
    path.write_text(text)
    return path


LFW_TEXT = "2\t2\nA\t1\t2\nB\t3\t4\nA\t1\tC\t2\nB\t2\tD\t1\nE\t1\t12\nF\t1\t2\nE\t1\tF\t3\nG\t1\tH\t1\n"


def test_parse_lfw_pairs(tmp_path: Path) -> None:
    pairs = parse_lfw_pairs(write(tmp_path, LFW_TEXT), root=tmp_path / "lfw")
    assert [p.fold for p in pairs] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert [p.same for p in pairs] == [True, True, False, False] * 2
    assert (pairs[4].name1, pairs[4].number1, pairs[4].name2, pairs[4].number2) == ("E", 1, "E", 12)
    assert pairs[4].path2 == tmp_path / "lfw" / "E" / "E_0012.jpg"
    assert pairs[3].path1 == tmp_path / "lfw" / "B" / "B_0002.jpg"
    assert lfw_image_path(Path("r"), "Ann_Lee", 7) == Path("r/Ann_Lee/Ann_Lee_0007.jpg")


def test_parse_lfw_pairs_custom_path_rule_and_single_fold(tmp_path: Path) -> None:
    path = write(tmp_path, "1\nA 1 2\nA 1 B 1\n\n")
    pairs = parse_lfw_pairs(path, image_path=lambda root, name, n: root / f"{name}-{n}.png")
    assert [p.path2 for p in pairs] == [tmp_path / "A-2.png", tmp_path / "B-1.png"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "header"),
        ("2 x\n", "header"),
        ("1 1\nA 1 2\n", "promises"),
        ("1 1\nA 1 2\nA 1 B 1\nC 1 2\n", "promises"),
        ("1 1\nA 1 B 2\nA 1 B 1\n", r"pairs.txt:2: expected a 'name n1 n2'"),
        ("1 1\nA 1 2\nA 1 2\n", r"pairs.txt:3: expected a 'name1 n1 name2 n2'"),
        ("1 1\nA 0 2\nA 1 B 1\n", "positive integer"),
        ("1 1\nA 1 2\nA 1 B x\n", "positive integer"),
    ],
)
def test_parse_lfw_pairs_malformed(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DatasetError, match=message):
        parse_lfw_pairs(write(tmp_path, text))


def test_parse_lfw_pairs_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read"):
        parse_lfw_pairs(tmp_path / "nope.txt")


# ------------------------------------------------------------------------------------------ identification

MATED_SCORES = np.array([0.9, 0.7, 0.6, np.nan])
MATED_RANKS = np.array([1, 1, 2, NOT_RETURNED])
NONMATED_TOPS = np.array([0.3, 0.65, 0.5, 0.2, 0.1])
T = np.array([0.5, 0.65, 0.75])


def test_fpir_fnir_by_hand() -> None:
    fpir, fnir = fpir_fnir(MATED_SCORES, MATED_RANKS, NONMATED_TOPS, T)
    np.testing.assert_allclose(fpir, [0.4, 0.2, 0.0])
    np.testing.assert_allclose(fnir, [0.5, 0.5, 0.75])
    _, fnir2 = fpir_fnir(MATED_SCORES, MATED_RANKS, NONMATED_TOPS, T, max_rank=2)
    np.testing.assert_allclose(fnir2, [0.25, 0.5, 0.75])  # the rank-2 mate (0.6) counts only below 0.6


def test_fpir_fnir_with_failures() -> None:
    # One mated probe failed to acquire (a miss), five non-mated ones did (correct rejections).
    fpir, fnir = fpir_fnir(MATED_SCORES, MATED_RANKS, NONMATED_TOPS, T, 2, mated_failed=1, nonmated_failed=5)
    np.testing.assert_allclose(fpir, [0.2, 0.1, 0.0])
    np.testing.assert_allclose(fnir, [1 - 3 / 5, 1 - 2 / 5, 1 - 1 / 5])


def test_fnir_at_fpir_by_hand() -> None:
    ok, low = fnir_at_fpir(MATED_SCORES, MATED_RANKS, NONMATED_TOPS, [0.2, 0.1])
    assert (ok.threshold, ok.fpir, ok.fnir, ok.supported) == (above(0.5), 0.2, 0.5, True)
    assert (low.threshold, low.fpir, low.fnir, low.supported) == (above(0.65), 0.0, 0.5, False)
    (failed,) = fnir_at_fpir(MATED_SCORES, MATED_RANKS, NONMATED_TOPS, [0.1], nonmated_failed=5)
    assert (failed.threshold, failed.fpir, failed.supported) == (above(0.5), 0.1, True)


def test_nonmated_search_without_candidates_is_never_a_false_positive() -> None:
    fpir, _ = fpir_fnir([0.9], [1], [-np.inf, 0.4], np.array([-1.0, 0.5]))
    np.testing.assert_allclose(fpir, [0.5, 0.0])


def test_rank1_rate() -> None:
    assert rank1_rate(MATED_RANKS) == 0.5
    assert rank1_rate(MATED_RANKS, mated_failed=1) == 0.4


@pytest.mark.parametrize(
    ("scores", "ranks", "tops", "max_rank"),
    [
        ([0.9], [0], [0.1], 1),
        ([0.9], [1.5], [0.1], 1),
        ([0.9], [np.nan], [0.1], 1),
        ([np.nan], [1], [0.1], 1),  # a returned mate needs a score
        ([0.9, 0.8], [1], [0.1], 1),
        ([0.9], [1], [np.inf], 1),
        ([0.9], [1], [], 1),
        ([0.9], [1], [0.1], 0),
    ],
)
def test_identification_rejects_bad_input(scores: list, ranks: list, tops: list, max_rank: int) -> None:
    with pytest.raises(MetricInputError):
        fpir_fnir(scores, ranks, tops, T, max_rank)


def test_generalized_verification_rates() -> None:
    assert generalized_verification_rates(0.01, 0.1, fta=0.2) == (pytest.approx(0.008), pytest.approx(0.28))
    gfmr, gfnmr = generalized_verification_rates(np.array([0.01, 0.0]), np.array([0.1, 0.0]), 0.2, fte=0.5)
    np.testing.assert_allclose(gfmr, [0.004, 0.0])
    np.testing.assert_allclose(gfnmr, [0.5 + 0.5 * 0.2 + 0.4 * 0.1, 0.6])
    with pytest.raises(MetricInputError, match="fta"):
        generalized_verification_rates(0.01, 0.1, fta=1.5)
