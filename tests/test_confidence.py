"""Confidence intervals of measured rates and the trials a target rate needs."""

from __future__ import annotations

import pytest

from gatematch.benchmarks.confidence import trials_needed, wilson_interval
from gatematch.errors import MetricInputError


def test_wilson_interval_matches_published_values():
    # Newcombe (1998), table I: 0/10 -> 0-0.2775, 5/10 -> 0.2366-0.7634 (score method without correction)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_trials_needed_gives_an_interval_of_about_thirty_percent():
    for rate in (1e-2, 1e-3, 1e-4, 1e-5):
        n = trials_needed(rate)
        low, high = wilson_interval(round(rate * n), n)
        assert (high - low) / 2 / rate == pytest.approx(0.3, abs=0.01)
        assert 42 <= rate * n <= 44  # about z^2 / 0.3^2 errors expected
    assert trials_needed(1e-4) == 426_787
    with pytest.raises(MetricInputError):
        trials_needed(0.0)
