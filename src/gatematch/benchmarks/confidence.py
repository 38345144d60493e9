"""How sure a measured error rate is, and how many trials a target rate needs.

A rate measured as k errors in n independent trials is a binomial proportion. The Wilson score interval is
used (not the plain normal one): it stays inside [0, 1] and keeps close to its nominal coverage when k is 0 or
small, which is exactly the case at the low FMRs a gate runs at; it needs no special functions.
"""

from __future__ import annotations

import math

from gatematch.errors import MetricInputError

Z95 = 1.959963984540054  # two-sided 95% standard normal quantile
RELATIVE_ERROR = 0.3  # a target is "measured" when its 95% interval spans about +-30% of it


def wilson_interval(errors: int, trials: int, z: float = Z95) -> tuple[float, float]:
    """(low, high) of the Wilson score interval of `errors` / `trials`; (0, 1) when there are no trials."""
    if trials <= 0:
        return 0.0, 1.0
    p = errors / trials
    centre = p + z * z / (2 * trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    denominator = 1 + z * z / trials
    return max(0.0, (centre - spread) / denominator), min(1.0, (centre + spread) / denominator)


def trials_needed(rate: float, relative_error: float = RELATIVE_ERROR, z: float = Z95) -> int:
    """Trials for which the 95% interval around a measured `rate` spans about +-`relative_error` x `rate`.

    From the binomial's normal approximation, z * sqrt(rate (1 - rate) / n) = relative_error * rate, so about
    z^2 / relative_error^2 = 43 errors are expected: 427k impostor pairs for FMR 1e-4, 4.3M for 1e-5
    (Doddington's "rule of 30" asks for 30 errors at 90% confidence, the same order).
    """
    if not 0 < rate < 1:
        raise MetricInputError(f"a rate to measure must be in (0, 1), got {rate}")
    return math.ceil(z * z * (1 - rate) / (relative_error * relative_error * rate))
