"""Measuring a calibration table (gatematch.calibration.CalibrationTable) from impostor comparison scores.

The table is measured, not modelled: (threshold, 1:1 FMR) pairs from impostor comparisons, every GRID_STEP in
cosine plus exact points in the far tail, so FPIR estimates stay resolved down to 1 / n comparisons.
"""

from __future__ import annotations

import math

import numpy as np

from gatematch.benchmarks.metrics import as_scores, thresholds_at_fmr
from gatematch.calibration import CalibrationTable
from gatematch.errors import CalibrationError

GRID_STEP = 0.005
TAIL_POINTS_PER_DECADE = 4


def measure_calibration(
    impostor: np.ndarray,
    *,
    embedder: str,
    embedder_sha256: str,
    dataset: str,
    step: float = GRID_STEP,
) -> CalibrationTable:
    """Measure the table: a point every `step` in cosine between the lowest and highest impostor score,
    both extremes, and the exact smallest thresholds for FMR = 10^(-k/4) down to 1 / n."""
    if not step > 0:
        raise CalibrationError(f"grid step must be > 0, got {step}")
    imp = np.sort(as_scores(impostor, "impostor").astype(np.float64))
    low, high = imp[0], imp[-1]
    grid = np.arange(math.ceil(low / step), math.floor(high / step) + 1) * step
    decades = math.log10(imp.size)
    targets = 10.0 ** -(
        np.arange(1, math.floor(decades * TAIL_POINTS_PER_DECADE) + 1) / TAIL_POINTS_PER_DECADE
    )
    tail = thresholds_at_fmr(imp, targets) if targets.size else np.empty(0)
    points = np.concatenate([[low, high], grid, tail])
    thresholds = np.unique(points[(points >= low) & (points <= high)])  # FMR > 0 at every point
    fmr = (imp.size - np.searchsorted(imp, thresholds, side="left")) / imp.size
    return CalibrationTable(
        embedder=embedder,
        embedder_sha256=embedder_sha256,
        dataset=dataset,
        n_impostor=int(imp.size),
        thresholds=tuple(thresholds.tolist()),
        fmr=tuple(fmr.tolist()),
    )
