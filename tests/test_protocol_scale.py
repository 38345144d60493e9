"""The protocol scale benchmark runs end to end on a small synthetic store and prints what it measured
(its figures come from running it at 100k templates; this only keeps the command working)."""

from __future__ import annotations

import json

from gatematch.benchmarks import protocol_scale


def test_the_benchmark_scores_a_synthetic_store_and_prints_its_figures(capsys):
    argv = ["--images", "3000", "--identities", "600", "--dim", "64", "--gallery-size", "50"]
    assert protocol_scale.main([*argv, "--departures", "4", "--impostor-pairs", "20000"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["images"] == 3000 and result["impostor_sampled"]
    assert result["impostor_comparisons"] == 426_787  # the budget grew to what FMR 1e-4 needs
    assert result["mated_searches"] == 50 * 4
    assert result["nonmated_searches"] == (result["identities"] - 50) * 4
    assert result["single_image_identities"] > 0 and result["genuine_comparisons"] > 0
    assert 0 < result["peak_anonymous_mib"] <= result["peak_rss_mib"]
    assert (
        0 < result["fnmr_at_fmr_1e-4"] < 1
    )  # synthetic genuine and impostor scores overlap, as real ones do
