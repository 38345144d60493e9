"""`gatematch bench window-fidelity` measures what a focus window does to a face (DESIGN.md's window figures
come from it): a window that cuts close to the face moves landmarks and template more than one that leaves
room. Bad paths and photos end in one line and exit code 2."""

from __future__ import annotations

import json

import pytest

from gatematch.cli.main import main


def run(capsys, *argv: str) -> dict:
    assert main(["bench", "window-fidelity", *argv]) == 0
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


@pytest.mark.parametrize(
    ("make", "extra", "message"),
    [
        (lambda tmp: tmp / "absent", [], "no such folder or video"),
        (lambda tmp: tmp / "clip.mp4", [], "cannot open video"),
        (lambda tmp: tmp / "photos", [], "unsupported image format"),
        (lambda tmp: tmp / "photos", ["--every", "0"], "--every must be >= 1"),
        (lambda tmp: tmp / "photos", ["--margin", "-1"], "[focus] margin must be >= 0"),
    ],
)
def test_bad_paths_and_settings_end_in_one_line_and_exit_code_2(
    tmp_path, model_dir, capsys, make, extra, message
):
    (tmp_path / "clip.mp4").write_bytes(b"not a video")
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "a.jpg").write_bytes(b"not a photo")
    code = main(["bench", "window-fidelity", str(make(tmp_path)), "--model-dir", str(model_dir), *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert err.count("\n") == 1, err
