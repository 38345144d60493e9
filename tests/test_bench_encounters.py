"""`gatematch bench encounters` on real photos and real videos (with the camera focus and without it), and its
arithmetic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gatematch.benchmarks.encounters import wilson
from gatematch.calibration import CalibrationTable
from gatematch.cli.main import main
from support.data import need


def test_wilson_interval_brackets_the_rate() -> None:
    low, high = wilson(3, 1000)
    assert low < 0.003 < high and high < 0.01
    assert wilson(0, 1000)[0] == 0.0 and 0 < wilson(0, 1000)[1] < 0.004
    assert wilson(0, 0) == (0.0, 1.0)


@pytest.fixture(scope="module")
def stills_report(faces_dir: Path, model_dir: Path, tmp_path_factory) -> tuple[dict, Path]:
    root = need(faces_dir / "celeb5", "celeb5 photos")
    out = tmp_path_factory.mktemp("encounters")
    argv = ["bench", "encounters", str(root), "--gallery-size", "3", "--departures", "4", "--frames", "4"]
    argv += ["--write-calibration", "--quiet", "--model-dir", str(model_dir), "--out", str(out)]
    assert main(argv) == 0
    return json.loads((out / "encounters.json").read_text()), out


def test_stills_report_the_decision_per_person_against_single_photos(stills_report) -> None:
    report, out = stills_report
    stills = report["packs"]["default"]["stills"]
    assert stills["departures"] == 4 and stills["gallery_size"] == 3 and stills["frames"] == 4
    assert [row["target_fpir"] for row in stills["encounters"]] == [0.003, 0.01]
    for row in stills["encounters"]:
        assert row["mated_people"] == 4 * 3 and row["nonmated_people"] == 4 * 2
        assert row["nonmated_encounters"] >= row["nonmated_people"]
        low, high = row["fpir_ci95"]
        assert low <= row["fpir"] <= high
        # celeb5's five celebrities are easy: every enrolled traveler who walks past is matched
        assert row["fnir"] <= 0.25 and row["misidentification_rate"] == 0.0
        assert row["tailgating"]["pairs"] > 0
    assert len(stills["single_image"]) == 2
    assert (out / "encounters.md").read_text().startswith("# Encounter decisions")
    assert (out / "fnir.png").stat().st_size > 1000


def test_write_calibration_measures_one_table_per_fused_frame_count(stills_report) -> None:
    _, out = stills_report
    tables = sorted(out.glob("mobilefacenet_128d.fused-*.json"))
    assert [t.name for t in tables] == [f"mobilefacenet_128d.fused-{k}.json" for k in (2, 3, 4, 5)]
    table = CalibrationTable.load(tables[1])
    assert table.n_impostor > 1000 and "averaging 3 photos" in table.dataset


def test_a_video_of_an_enrolled_person_is_matched_to_them(shared: Path, examples: Path, model_dir, tmp_path):
    video = need(shared / "video" / "hieubkvn123_obama.mp4", "the Obama clip")
    listing = tmp_path / "videos.csv"
    listing.write_text(f"video,identity\n{video},obama\n")
    argv = ["bench", "encounters", "--videos", str(listing), "--gallery", str(examples), "--fps", "3"]
    assert main([*argv, "--quiet", "--model-dir", str(model_dir), "--out", str(tmp_path / "out")]) == 0
    (row,) = json.loads((tmp_path / "out" / "encounters.json").read_text())["packs"]["default"]["videos"]
    assert row["correct"] and row["decisions"][0] == "MATCH obama"


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


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["{root}", "--videos", "{csv}", "--gallery", "{root}"], "not both"),
        (["--videos", "{csv}"], "needs --gallery"),
        (["{root}", "--decision-frames", "1,x"], "comma-separated"),
        (["{root}", "--decision-frames", "3,1", "--fpir-shares", "0.5,0.5"], "must increase"),
        (["{root}", "--fpir-shares", "0.9,0.9", "--decision-frames", "1,2"], "add up to at most 1"),
        (["--videos", "{missing}", "--gallery", "{root}"], "cannot read video list"),
    ],
)
def test_bad_arguments_are_one_line_errors(extra, message, faces_dir, tmp_path, capsys) -> None:
    root = faces_dir / "celeb5"
    csv = tmp_path / "videos.csv"
    csv.write_text("video,identity\n")
    args = [a.format(root=root, csv=csv, missing=tmp_path / "none.csv") for a in extra]
    assert main(["bench", "encounters", *args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
