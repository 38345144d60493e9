"""Calibration tables: measured FMR, its inverse, the FPIR model for a gallery of N, and the file format."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from gatematch.benchmarks.calibration import measure_calibration
from gatematch.benchmarks.metrics import threshold_at_fmr
from gatematch.calibration import CalibrationTable
from gatematch.errors import CalibrationError

SHA = "ab" * 32


def table_from(impostor: np.ndarray | list[float], **kwargs: float) -> CalibrationTable:
    return measure_calibration(
        np.asarray(impostor), embedder="w600k_mbf", embedder_sha256=SHA, dataset="celeba_wild:abc", **kwargs
    )


@pytest.fixture(scope="module")
def impostor() -> np.ndarray:
    return np.random.default_rng(0).normal(0.0, 0.1, 50_000)


@pytest.fixture(scope="module")
def table(impostor: np.ndarray) -> CalibrationTable:
    return table_from(impostor)


def above(x: float) -> float:
    return float(np.nextafter(x, np.inf))


def test_hand_computed_table() -> None:
    small = table_from([0.0, 0.1, 0.2, 0.3], step=0.1)
    # Grid 0, 0.1, 0.2, top 0.3, and exact tail points for FMR <= 10^-0.25 and 10^-0.5.
    assert small.thresholds == (0.0, 0.1, above(0.1), 0.2, above(0.2), 0.3)
    assert small.fmr == (1.0, 0.75, 0.5, 0.5, 0.25, 0.25)
    assert small.fmr_at(-0.5) == 1.0
    assert small.fmr_at(0.05) == pytest.approx(math.sqrt(0.75))  # log-linear between 1 and 0.75
    assert small.fmr_at(0.31) == small.fmr_floor == 0.25
    assert small.threshold_for_fmr(0.5) == above(0.1)
    assert small.threshold_for_fmr(1.0) == 0.0
    assert small.fpir_at(0.3, 2) == pytest.approx(1 - 0.75**2)
    assert small.threshold_for_fpir(1 - 0.75**2, 2) == pytest.approx(above(0.2))


def test_table_is_exact_at_its_points_and_compact(table: CalibrationTable, impostor: np.ndarray) -> None:
    t = np.array(table.thresholds)
    np.testing.assert_array_equal(table.fmr, [np.mean(impostor >= x) for x in t])
    assert t[0] == impostor.min() and t[-1] == impostor.max()
    assert np.diff(t).max() <= 0.005 + 1e-12  # dense in cosine
    assert len(t) < 400
    # FMR 1e-3 is a tail point: the table gives the same threshold as the metric on the raw scores.
    assert table.threshold_for_fmr(1e-3) == threshold_at_fmr(impostor, 1e-3)


def test_fmr_at_is_monotone_and_bracketed(table: CalibrationTable, impostor: np.ndarray) -> None:
    scores = np.linspace(-1.0, 1.0, 4001)
    estimates = np.array([table.fmr_at(s) for s in scores])
    assert np.all(np.diff(estimates) <= 0)
    assert estimates[0] == 1.0 and estimates[-1] == table.fmr_floor == 1 / impostor.size
    # Between two table points the true FMR lies between their values, and so does the estimate.
    t, f = np.array(table.thresholds), np.array(table.fmr)
    inside = (scores > t[0]) & (scores < t[-1])
    right = np.searchsorted(t, scores[inside], side="right")
    assert np.all((estimates[inside] <= f[right - 1]) & (estimates[inside] >= f[right]))


def test_threshold_for_fmr_inverts_fmr_at(table: CalibrationTable) -> None:
    for target in np.logspace(-4.6, -0.01, 40):
        threshold = table.threshold_for_fmr(target)
        assert table.fmr_at(threshold) == pytest.approx(target, rel=1e-9)
        assert table.fmr_at(threshold - 1e-6) > target  # the smallest such threshold


def test_threshold_for_fmr_below_floor_is_refused(table: CalibrationTable) -> None:
    with pytest.raises(CalibrationError, match="below what"):
        table.threshold_for_fmr(table.fmr_floor / 2)
    for bad in (0.0, 1.5, math.nan, "x"):
        with pytest.raises(CalibrationError):
            table.threshold_for_fmr(bad)


def test_ties_at_the_top_impostor_score() -> None:
    tied = table_from([0.1, 0.5, 0.5])
    assert tied.fmr_at(0.5) == pytest.approx(2 / 3)
    assert tied.threshold_for_fmr(0.4) == above(0.5)  # only beyond the tied top scores
    assert tied.fmr_at(above(0.5)) == pytest.approx(1 / 3)


def test_threshold_for_fpir_inverts_fpir_at(table: CalibrationTable) -> None:
    for gallery_size in (1, 10, 50):  # FMR per comparison stays above the table's floor of 1/50000
        for target in (3e-3, 0.01, 0.1):
            threshold = table.threshold_for_fpir(target, gallery_size)
            assert table.fpir_at(threshold, gallery_size) == pytest.approx(target, rel=1e-9)
    # N = 200 and FPIR 0.01 means FMR = 1 - 0.99^(1/200) per comparison.
    assert table.threshold_for_fpir(0.01, 200) == pytest.approx(
        table.threshold_for_fmr(1 - 0.99 ** (1 / 200))
    )
    with pytest.raises(CalibrationError, match="below what"):
        table.threshold_for_fpir(1e-3, 200)  # needs FMR 5e-6 < 1/50000


def test_fpir_grows_with_gallery_size(table: CalibrationTable) -> None:
    score = table.threshold_for_fmr(1e-3)
    fpir = [table.fpir_at(score, n) for n in (1, 2, 10, 100, 1000, 100_000)]
    assert fpir[0] == pytest.approx(1e-3)
    assert np.all(np.diff(fpir) > 0)
    assert fpir[-1] == pytest.approx(1 - (1 - 1e-3) ** 100_000)
    assert table.fpir_at(-1.0, 5) == 1.0
    with pytest.raises(CalibrationError, match="gallery_size"):
        table.fpir_at(0.3, 0)


def test_json_and_file_round_trip(table: CalibrationTable, tmp_path: Path) -> None:
    assert CalibrationTable.from_json(table.to_json()) == table
    path = tmp_path / "cal" / "w600k_mbf.json"
    table.save(path)
    assert CalibrationTable.load(path) == table
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind
    table_from([0.0, 0.2]).save(path)  # replaced whole
    assert CalibrationTable.load(path).n_impostor == 2


def corrupt(table: CalibrationTable, **changes: object) -> str:
    data = json.loads(table.to_json())
    data.update(changes)
    return json.dumps({k: v for k, v in data.items() if v is not None})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"format": "other/1"}, "format"),
        ({"dataset": None}, "fields"),
        ({"embedder_sha256": "abc"}, "sha256"),
        ({"n_impostor": 0}, "n_impostor"),
        ({"thresholds": [0.1, 0.0], "fmr": [1.0, 0.5]}, "increasing"),
        ({"thresholds": [0.0, 0.1], "fmr": [1.0, 1.5]}, "never rise"),
        ({"thresholds": [0.0, 0.1], "fmr": [1.0]}, "equal-length"),
        ({"fmr": "1"}, "lists"),
        ({"thresholds": [0.0, "a"], "fmr": [1.0, 0.5]}, "non-number"),
    ],
)
def test_malformed_json_is_refused(table: CalibrationTable, changes: dict, message: str) -> None:
    with pytest.raises(CalibrationError, match=message):
        CalibrationTable.from_json(corrupt(table, **changes))


def test_unreadable_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CalibrationError, match="cannot read"):
        CalibrationTable.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(CalibrationError, match="not valid JSON"):
        CalibrationTable.load(tmp_path / "bad.json")


@pytest.mark.parametrize("n", [1, 49])  # (1/49) * 49 < 1 in floats: the floor check must tolerate rounding
def test_small_tables(n: int) -> None:
    scores = np.linspace(-0.2, 0.3, n)
    small = table_from(scores)
    assert small.n_impostor == n and small.fmr[-1] == pytest.approx(1 / n)
    assert small.threshold_for_fmr(1.0) == scores.min()
    assert small.fmr_at(1.0) == pytest.approx(1 / n)
