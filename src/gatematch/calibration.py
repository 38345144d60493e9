"""Calibration tables: what a cosine score means as a false-match rate, for one embedder on one data set.

The type lives in the core because galleries decide with it; measuring one from impostor scores is a benchmark
job (gatematch.benchmarks.calibration.measure_calibration).

Galleries use a table to turn a target false-positive identification rate (FPIR) for their size into a
threshold, and a top score into a confidence. The table is measured, not modelled: (threshold, 1:1 FMR)
pairs from impostor comparisons, every GRID_STEP in cosine plus exact points in the far tail.

Open-set identification assumes independent impostor comparisons: a non-mated search against N enrolled
travelers is N comparisons, each a false match with probability FMR(t), so
    FPIR(t, N) = 1 - (1 - FMR(t))^N.
Real comparisons of one probe are usually positively associated (a probe that resembles one traveler tends
to score high against others too); the estimate then errs on the safe (high) side. N is the number of
comparisons the decision takes the maximum over (travelers, when each traveler's templates are fused first).
Check it against a measured flight simulation before relying on it.
"""

from __future__ import annotations

import bisect
import json
import math
import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from gatematch.atomicfile import write_atomic
from gatematch.errors import CalibrationError

FORMAT = "gatematch-calibration/1"
_ROUNDING = 1e-9  # relative float error tolerated when a target is derived (e.g. from an FPIR)
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class CalibrationTable:
    """(cosine threshold -> 1:1 FMR) for one embedder (name + sha256) measured on one data set.

    `thresholds` ascend from the lowest impostor score (FMR 1) to the highest (FMR = its count / n); `fmr`
    is the measured share of impostor scores >= each threshold. Between points, log FMR is interpolated
    linearly. Beyond the top impostor score nothing was measured: `fmr_at` returns `fmr_floor` = 1 /
    n_impostor there, the table's resolution limit (it is not a confidence bound: with no impostor above,
    the 95% upper bound on the FMR is about 3 / n_impostor).
    """

    embedder: str
    embedder_sha256: str
    dataset: str
    n_impostor: int
    thresholds: tuple[float, ...]
    fmr: tuple[float, ...]

    def __post_init__(self) -> None:
        problems = []
        if not self.embedder or not self.dataset:
            problems.append("embedder and dataset must be named")
        if not isinstance(self.embedder_sha256, str) or not _SHA256.fullmatch(self.embedder_sha256):
            problems.append(f"embedder_sha256 must be 64 lowercase hex digits, got {self.embedder_sha256!r}")
        if isinstance(self.n_impostor, bool) or not isinstance(self.n_impostor, int) or self.n_impostor < 1:
            problems.append(f"n_impostor must be a positive integer, got {self.n_impostor!r}")
        t = np.asarray(self.thresholds, dtype=np.float64)
        f = np.asarray(self.fmr, dtype=np.float64)
        if t.ndim != 1 or t.shape != f.shape or t.size < 1:
            problems.append(f"thresholds and fmr must be equal-length lists, got {t.shape} and {f.shape}")
        elif not (np.isfinite(t).all() and np.all(np.diff(t) > 0)):
            problems.append("thresholds must be finite and strictly increasing")
        elif not (f[0] == 1.0 and np.all(np.diff(f) <= 0) and f[-1] * self.n_impostor >= 1 - _ROUNDING):
            problems.append("fmr must start at 1, never rise, and end at >= 1 / n_impostor")
        if problems:
            raise CalibrationError(f"calibration table for '{self.embedder}': " + "; ".join(problems))

    @property
    def fmr_floor(self) -> float:
        """The smallest FMR this table can state: 1 / n_impostor."""
        return 1.0 / self.n_impostor

    def fmr_at(self, score: float) -> float:
        """Estimated 1:1 FMR at threshold `score`: 1 up to the lowest impostor, exact at table points,
        log-linear between them, `fmr_floor` above the highest impostor (unmeasured; see the class docstring).
        """
        s = _finite(score, "score")
        t, f = self.thresholds, self.fmr
        if s <= t[0]:
            return 1.0
        if s > t[-1]:
            return self.fmr_floor
        j = bisect.bisect_left(t, s)  # t[j - 1] < s <= t[j]
        if t[j] == s:
            return f[j]
        return f[j - 1] * (f[j] / f[j - 1]) ** ((s - t[j - 1]) / (t[j] - t[j - 1]))

    def threshold_for_fmr(self, target_fmr: float) -> float:
        """The smallest threshold whose `fmr_at` is <= target_fmr (the inverse of `fmr_at`).

        A target below `fmr_floor` cannot be resolved by this table: CalibrationError, since a gate must not
        run at a rate nobody measured. Use a calibration set with at least 3 / target impostor comparisons.
        """
        target = _finite(target_fmr, "target_fmr")
        if not 0.0 < target <= 1.0:
            raise CalibrationError(f"target FMR must be in (0, 1], got {target}")
        if target < self.fmr_floor * (1.0 - _ROUNDING):
            raise CalibrationError(
                f"target FMR {target:.3g} is below what '{self.dataset}' resolves (1/{self.n_impostor} = "
                f"{self.fmr_floor:.3g}); calibrate on at least {math.ceil(3 / target)} impostor comparisons"
            )
        target = max(target, self.fmr_floor)  # a target at the floor may arrive a rounding error below it
        f = np.asarray(self.fmr)
        j = int(np.argmax(f <= target)) if f[-1] <= target else f.size
        if j == 0:
            return self.thresholds[0]
        if j == f.size:  # ties at the top impostor score: only the unmeasured region beyond meets the target
            return float(np.nextafter(self.thresholds[-1], np.inf))
        t0, t1 = self.thresholds[j - 1], self.thresholds[j]
        position = (math.log(target) - math.log(f[j - 1])) / (math.log(f[j]) - math.log(f[j - 1]))
        return float(t0 + position * (t1 - t0))

    def fpir_at(self, score: float, gallery_size: int) -> float:
        """Estimated FPIR of deciding "match" at threshold `score` in a gallery of `gallery_size`:
        1 - (1 - FMR)^N under independent impostor comparisons (see the module docstring)."""
        return -math.expm1(self._log_no_false_match(score, gallery_size))

    def threshold_for_fpir(self, target_fpir: float, gallery_size: int) -> float:
        """The smallest threshold whose estimated FPIR in a gallery of N is <= target_fpir, i.e. the
        threshold for FMR = 1 - (1 - target)^(1/N)."""
        target = _finite(target_fpir, "target_fpir")
        if not 0.0 < target < 1.0:
            raise CalibrationError(f"target FPIR must be in (0, 1), got {target}")
        return self.threshold_for_fmr(-math.expm1(math.log1p(-target) / _gallery_size(gallery_size)))

    def _log_no_false_match(self, score: float, gallery_size: int) -> float:
        """log((1 - FMR)^N), computed without cancellation for tiny FMR and large N."""
        fmr = self.fmr_at(score)
        n = _gallery_size(gallery_size)
        return -math.inf if fmr >= 1.0 else n * math.log1p(-fmr)

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **asdict(self)}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> CalibrationTable:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CalibrationError(f"calibration table is not valid JSON: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise CalibrationError(f"not a calibration table of format '{FORMAT}'")
        fields = {k: v for k, v in data.items() if k != "format"}
        expected = {"embedder", "embedder_sha256", "dataset", "n_impostor", "thresholds", "fmr"}
        if set(fields) != expected:
            raise CalibrationError(
                f"calibration table fields must be {sorted(expected)}, got {sorted(fields)}"
            )
        if not all(isinstance(fields[k], list) for k in ("thresholds", "fmr")):
            raise CalibrationError("calibration table thresholds and fmr must be lists of numbers")
        try:
            thresholds = tuple(float(v) for v in fields.pop("thresholds"))
            fmr = tuple(float(v) for v in fields.pop("fmr"))
        except (TypeError, ValueError) as exc:
            raise CalibrationError(f"calibration table holds a non-number: {exc}") from exc
        return cls(thresholds=thresholds, fmr=fmr, **fields)

    def save(self, path: Path) -> None:
        """Write atomically: a gallery loading the table never sees half a file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, self.to_json().encode(), mode=0o644)

    @classmethod
    def load(cls, path: Path) -> CalibrationTable:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise CalibrationError(f"cannot read calibration table {path}: {exc}") from exc
        return cls.from_json(text)


def _finite(value: float, name: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise CalibrationError(f"{name} must be a finite number, got {value!r}")
    return number


def _gallery_size(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise CalibrationError(f"gallery_size must be an integer >= 1, got {value!r}")
    return int(value)
