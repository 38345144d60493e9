"""`gatematch bench encounters --videos`: a real video replayed through the camera focus and without it."""

from __future__ import annotations

import json

from gatematch.cli.main import main
from support.data import need


def test_a_video_is_decided_alike_with_and_without_the_focus_which_embeds_less(
    shared, faces_dir, model_dir, tmp_path
):
    video = need(shared / "video" / "hieubkvn123_obama.mp4", "the Obama clip")
    cases = tmp_path / "videos.csv"
    cases.write_text(f"video,identity\n{video},obama\n")
    argv = ["bench", "encounters", "--videos", str(cases), "--gallery", str(faces_dir / "examples6")]
    argv += ["--focus", "both", "--quiet", "--model-dir", str(model_dir), "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    packs = json.loads((tmp_path / "out" / "encounters.json").read_text())["packs"]
    on, off = packs["default, focus on"]["videos"][0], packs["default, focus off"]["videos"][0]
    assert on["decisions"] == off["decisions"] == ["MATCH obama"] and on["correct"]
    assert off["focus"] is None and on["focus"]["followed"] > 0 and on["focus"]["window"] > 0
    assert on["focus"]["embedded"] < on["frames"]
    assert "frames: embedded / followed / window / scan" in (tmp_path / "out" / "encounters.md").read_text()
