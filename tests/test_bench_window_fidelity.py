"""The window-fidelity benchmark measures what a focus window does to a face (DESIGN.md's window figures come
from it): a window that cuts close to the face moves landmarks and template more than one that leaves room."""

from __future__ import annotations

import json

from gatematch.benchmarks import window_fidelity


def run(capsys, *argv: str) -> dict:
    assert window_fidelity.main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_a_tight_window_changes_faces_more_than_the_default_one(examples, model_dir, capsys):
    common = [str(examples), "--model-dir", str(model_dir)]
    default = run(capsys, *common)
    tight = run(capsys, *common, "--margin", "0.1")
    assert (default["margin"], default["max_margin_px"]) == (1.0, 96.0)
    assert default["all"]["faces"] >= 10 and default["all"]["found_in_window"] == default["all"]["faces"]
    assert 0 < default["cap_binds"]["faces"] <= default["all"]["faces"], "examples6 has faces over 96 px"
    assert tight["cap_binds"]["faces"] == 0, "a tenth of a face width is never over 96 px"
    assert default["all"]["template_cosine"]["p5"] > tight["all"]["template_cosine"]["p5"]
    assert default["all"]["landmark_shift_per_100px"]["p50"] < tight["all"]["landmark_shift_per_100px"]["p50"]
    assert default["all"]["template_cosine"]["p50"] > 0.99, "one width (96 px at most) keeps the template"
