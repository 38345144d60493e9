"""A short real latency run through `gatematch bench latency`: an in-process server on loopback, a gallery from
examples6, two cameras streaming the Obama clip at 2 fps for 2 s, and the per-stage microbenchmark."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gatematch.benchmarks.latency import (
    CapacityCriteria,
    LoadSettings,
    capacity_counts,
    check_loopback,
    sample_process,
)
from gatematch.cli.main import main
from gatematch.errors import ConfigError
from gatematch.facepipeline import FacePipeline
from support.data import need
from support.server import calibration_for

CAMERAS, FPS, SECONDS = 2, 2.0, 2.0
STAGES = ("decode", "detect", "align", "embed", "quality", "search", "raw_detector", "raw_embedder")


@pytest.fixture(scope="module")
def report(shared: Path, faces_dir: Path, model_dir: Path, model_store, tmp_path_factory) -> dict:
    video = need(shared / "video" / "hieubkvn123_obama.mp4", "the Obama clip")
    gallery = need(faces_dir / "examples6", "examples6 photos")
    base = tmp_path_factory.mktemp("latency")
    table = calibration_for(FacePipeline.from_pack("default", store=model_store), faces_dir)
    table.save(base / "calibration.json")
    argv = ["bench", "latency", "--video", str(video), "--gallery", str(gallery), "--flight", "LAT1"]
    argv += ["--cameras", str(CAMERAS), "--fps", str(FPS), "--seconds", str(SECONDS), "--workers", "2"]
    argv += ["--stage-frames", "4", "--repeats", "1", "--calibration", str(base / "calibration.json")]
    argv += ["--model-dir", str(model_dir), "--out", str(base / "out")]
    assert main(argv) == 0
    assert (base / "out" / "latency.md").read_text().startswith("# Latency")
    return json.loads((base / "out" / "latency.json").read_text())


def test_load_counts_frames_and_decisions(report):
    load = report["load"]
    assert load["in_process"] and load["target"].startswith("127.0.0.1:")
    assert load["cameras"] == CAMERAS and load["frames_sent"] == CAMERAS * FPS * SECONDS
    assert 0 < load["frames_processed"] <= load["frames_sent"]
    assert load["frames_processed"] + load["frames_dropped"] + load["frame_errors"] <= load["frames_sent"]
    assert load["frame_errors"] == 0 and load["throughput_fps"] > 0
    assert load["decisions"].get("MATCH", 0) >= 1, "Obama is in the examples6 gallery"
    assert report["gallery"]["travelers"] >= 5


def test_latencies_are_measured_end_to_end(report):
    load = report["load"]
    frames = load["frame_latency"]
    assert frames["count"] == load["frames_processed"] + load["frame_errors"]
    assert {"detect", "embed"} <= set(load["server_stage_mean_ms"])
    # a frame's answer cannot come sooner than the server's detection of it
    assert frames["p50_ms"] >= load["server_stage_mean_ms"]["detect"] * 0.5
    # a MATCH comes with a processed frame at the earliest: never sooner than the fastest frame answer
    match = load["decision_latency_by_kind"]["MATCH"]
    assert match["count"] >= 1 and match["p50_ms"] >= frames["p50_ms"] * 0.5


def test_server_cpu_and_memory_are_measured(report):
    server = report["load"]["server"]
    assert server["cpu_s"] > 0 and server["cpu_cores"] > 0
    assert server["peak_rss_mib"] > 50  # models and the gRPC server are loaded


def test_stage_microbenchmark_has_every_stage_with_percentiles(report):
    stages = report["stages"]
    assert set(stages["stages"]) == set(STAGES) and stages["frames"] == 4
    for row in stages["stages"].values():
        assert 0 <= row["p50_ms"] <= row["p90_ms"] <= row["p95_ms"] <= row["p99_ms"]
    assert stages["overhead_ratio"] > 0 and stages["search_gallery_size"] == 420
    assert report["command"].startswith("gatematch bench latency --video")


def test_only_loopback_targets_and_bounded_loads_are_accepted():
    check_loopback("127.0.0.1:50051")
    check_loopback("localhost:50051")
    with pytest.raises(ConfigError, match="loopback only"):
        check_loopback("8.8.8.8:50051")
    with pytest.raises(ConfigError, match="cameras"):
        LoadSettings((Path("v.mp4"),), "F", cameras=1000)
    with pytest.raises(ConfigError, match="frames"):
        LoadSettings((Path("v.mp4"),), "F", cameras=32, fps=60, seconds=600)
    with pytest.raises(ConfigError, match="video"):
        LoadSettings((), "F")


def test_process_sampling_reads_this_process():
    sample = sample_process(None)
    assert sample is not None and sample.cpu_s > 0 and sample.peak_rss_bytes > 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--no-load", "--repeats", "0"], "--repeats"),
        (["--no-load", "--stage-frames", "0"], "--stage-frames"),
        (["--no-load", "--out", "{blocker}"], "--out"),
        (["--no-load", "--pack", "ultraface"], "no embedder"),
        (["--no-stages", "--gallery", "{tmp}/nowhere"], "gallery folder"),
        (["--no-stages", "--target", "localhost:notaport"], "port"),
        (["--no-stages", "--target", "127.0.0.1:1", "--seconds", "1"], "cannot reach"),
        (["--find-capacity", "--no-load"], "--no-load"),
        (["--find-capacity", "--no-stages", "--step", "0"], "--step"),
        (["--find-capacity", "--no-stages", "--max-cameras", "33"], "--max-cameras"),
        (["--find-capacity", "--no-stages", "--cameras", "3", "--max-cameras", "2"], "--max-cameras"),
        (["--find-capacity", "--no-stages", "--max-lost", "1.5"], "lost-frame share"),
        (["--find-capacity", "--no-stages", "--p99-budget-ms", "0"], "p99 budget"),
        (["--compare-focus", "--no-stages", "--target", "127.0.0.1:1"], "--compare-focus"),
        (["--compare-focus", "--no-stages"], "--compare-focus"),
    ],
)
def test_bad_arguments_are_one_line_errors(shared, model_dir, tmp_path, capsys, extra, message):
    video = need(shared / "video" / "hieubkvn123_obama.mp4", "the Obama clip")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    extra = [arg.format(blocker=blocker, tmp=tmp_path) for arg in extra]
    argv = ["bench", "latency", "--video", str(video), "--model-dir", str(model_dir), "--out", str(tmp_path)]
    assert main([*argv, *extra]) == 2
    assert message in capsys.readouterr().err


def test_unreadable_video_is_a_one_line_error(model_dir, tmp_path, capsys):
    argv = ["bench", "latency", "--video", str(tmp_path / "none.mp4"), "--no-load", "--out", str(tmp_path)]
    assert main([*argv, "--model-dir", str(model_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gatematch: error: cannot open video") and err.count("\n") == 1


# ------------------------------------------------------------------------------------------------ capacity


def load_result(p99_ms: float | None, sent: int, lost: int, all_p99_ms: float | None = None) -> dict:
    """A load's figures: `p99_ms` of the analysed frames, `all_p99_ms` of every frame (passed over too)."""
    return {
        "analysed_frame_latency": {"p99_ms": p99_ms},
        "frame_latency": {"p99_ms": p99_ms if all_p99_ms is None else all_p99_ms},
        "frames_sent": sent,
        "frames_lost": lost,
    }


def test_capacity_criteria_hold_only_inside_the_budget_and_under_the_lost_share():
    criteria = CapacityCriteria()
    assert criteria.frame_p99_ms == 500.0 and criteria.max_lost_fraction == 0.01
    assert criteria.judge(load_result(499.0, 1000, 9)) == ""
    assert criteria.judge(load_result(500.0, 1000, 0)) == "", "the budget itself is inside the budget"
    assert "frame p99 500.1 ms > 500 ms" in criteria.judge(load_result(500.1, 1000, 0))
    assert "1.0% of frames lost" in criteria.judge(load_result(10.0, 1000, 10)), "1% is not under 1%"
    assert ";" in criteria.judge(load_result(900.0, 100, 50)), "both reasons are given"
    assert "frame p99 None" in criteria.judge(load_result(None, 100, 100)), "no answer at all fails"
    # frames passed over are answered at once: the tail of the analysed ones is what must fit the budget
    assert "frame p99 620.0 ms" in criteria.judge(load_result(620.0, 1000, 0, all_p99_ms=480.0))
    assert list(capacity_counts(2, 9, 3)) == [2, 5, 8]


def capacity_run(shared, faces_dir, model_dir, out: Path, *extra: str) -> dict:
    video = need(shared / "video" / "hieubkvn123_obama.mp4", "the Obama clip")
    gallery = need(faces_dir / "examples6", "examples6 photos")
    argv = ["bench", "latency", "--video", str(video), "--gallery", str(gallery), "--find-capacity"]
    argv += ["--cameras", "1", "--fps", "2", "--seconds", "1", "--workers", "2", "--no-stages", *extra]
    assert main([*argv, "--model-dir", str(model_dir), "--out", str(out)]) == 0
    assert "## Capacity" in (out / "latency.md").read_text()
    return json.loads((out / "latency.json").read_text())["capacity"]


def test_find_capacity_steps_up_until_a_count_fails(shared, faces_dir, model_dir, tmp_path, capsys):
    capacity = capacity_run(shared, faces_dir, model_dir, tmp_path, "--max-cameras", "2")
    assert [row["cameras"] for row in capacity["steps"]] == [1, 2]
    assert all(row["passed"] and row["frames_sent"] == row["cameras"] * 2 for row in capacity["steps"])
    assert capacity["capacity_cameras"] == 2 and capacity["first_failing_cameras"] is None
    assert capacity["cameras_per_worker"] == 1.0 and capacity["workers"] == 2
    assert capacity["server_cpu_cores_at_capacity"] > 0 and capacity["cameras_per_busy_core"] > 0
    assert "2 cameras: frame p99" in capsys.readouterr().err, "each step is reported as it ends"


def test_find_capacity_reports_zero_when_the_first_count_fails(shared, faces_dir, model_dir, tmp_path):
    capacity = capacity_run(shared, faces_dir, model_dir, tmp_path, "--p99-budget-ms", "0.001")
    (step,) = capacity["steps"]
    assert not step["passed"] and "frame p99" in step["reason"]
    assert capacity["capacity_cameras"] == 0 and capacity["first_failing_cameras"] == 1
    assert capacity["cameras_per_worker"] is None and capacity["criteria"]["frame_p99_ms"] == 0.001


def test_compare_focus_measures_server_cpu_per_frame_both_ways_against_raw_model_time(
    shared, faces_dir, model_dir, tmp_path
):
    """Two fresh server processes, focus off then on, streamed the same Obama frames; the raw detector +
    embedder time measured on those frames in this process before, between and after them, each server held
    against the raw time measured next to it."""
    video = need(shared / "video" / "hieubkvn123_obama.mp4", "the Obama clip")
    argv = ["bench", "latency", "--video", str(video), "--gallery", str(faces_dir / "examples6")]
    argv += ["--cameras", "1", "--fps", "2", "--seconds", "3", "--compare-focus", "--no-stages"]
    argv += ["--model-dir", str(model_dir), "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    report = json.loads((tmp_path / "out" / "latency.json").read_text())
    focus = report["focus"]
    before, between, after = focus["raw_model_ms_around"]
    assert before > 0 and between > 0 and after > 0
    assert focus["raw_model_ms_per_frame"] == pytest.approx((before + between + after) / 3, abs=0.02)
    off, on = focus["runs"]["focus off"], focus["runs"]["focus on"]
    assert off["raw_model_ms"] == pytest.approx((before + between) / 2, abs=0.02)
    assert on["raw_model_ms"] == pytest.approx((between + after) / 2, abs=0.02)
    for run in (off, on):
        assert run["of_raw"] == pytest.approx(run["server_cpu_ms_per_frame"] / run["raw_model_ms"], abs=0.002)
    markdown = (tmp_path / "out" / "latency.md").read_text()
    assert f"{before}, {between} and {after} ms before, between and after the servers" in markdown
    assert set(focus["runs"]) == {"focus off", "focus on"}
    for run in focus["runs"].values():
        load = run["load"]
        assert not load["in_process"] and load["frames_processed"] == 6
        assert run["server_cpu_ms_per_frame"] > 0 and run["of_raw"] > 0
        assert load["decisions"].get("MATCH", 0) >= 1, "Obama is in the examples6 gallery"
    # off: every frame embedded; on: the matched traveler is followed, not embedded on every frame
    off, on = (focus["runs"][name]["load"]["server_stage_ms_per_frame"] for name in ("focus off", "focus on"))
    assert "plan" not in off and "plan" in on
    assert "Server CPU per frame, camera focus off and on" in (tmp_path / "out" / "latency.md").read_text()
