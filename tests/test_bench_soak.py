"""`gatematch bench soak`: the verdict's rules on made-up windows, and a short real soak (in-process server on
loopback, examples6 gallery, two cameras streaming the Obama clip) through the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gatematch.benchmarks.latency import CameraLog
from gatematch.benchmarks.soak import HealthProbe, ServerSample, SoakSettings, verdict, windows
from gatematch.cli.main import main
from gatematch.errors import ConfigError
from support.data import need

SETTINGS = SoakSettings((Path("v.mp4"),), "F", cameras=1, fps=1.0, seconds=30.0, window_s=10.0, warmup_s=5.0)


def _run(rss_mib: tuple[float, float, float], latency_s: tuple[float, float, float], answer: str = "SERVING"):
    """A warm-up (slow frames, high RSS, one health check), then three windows: per window one RSS level,
    20 frames of one latency, two health checks. Returns the windows and the health checks."""
    start = 100.0
    log = CameraLog()
    log.observed_at += [96.0, 98.0]
    log.frame_latency_s += [9.0, 9.0]
    log.dropped_so_far += [5, 7]
    samples = [ServerSample(97.0, 0.0, 900 * 2**20)]
    probes = [HealthProbe(97.0, "SERVING", 1.0)]
    for w in range(3):
        for i in range(20):
            log.observed_at.append(start + 10 * w + i * 0.5)
            log.frame_latency_s.append(latency_s[w])
            log.dropped_so_far.append(7 + w * 20 + i)  # one frame dropped per observation
        for i in range(10):
            samples.append(ServerSample(start + 10 * w + i, 5.0 * w + 0.5 * i, int(rss_mib[w] * 2**20)))
        probes += [
            HealthProbe(start + 10 * w + 1, answer, 1.0),
            HealthProbe(start + 10 * w + 6, "SERVING", 1.0),
        ]
    return windows(SETTINGS, start, [log], probes, samples), probes


def test_windows_hold_each_minutes_figures_and_leave_out_the_warm_up():
    rows, _ = _run((300.0, 310.0, 320.0), (0.1, 0.1, 0.2))
    assert [r["frames"] for r in rows] == [20, 20, 20]
    assert [r["rss_mib"] for r in rows] == [300.0, 310.0, 320.0]
    assert [r["p99_ms"] for r in rows] == [100.0, 100.0, 200.0]
    assert [r["dropped"] for r in rows] == [19, 20, 20]
    assert [r["cpu_cores"] for r in rows] == [0.5, 0.5, 0.5]
    assert [(r["health_serving"], r["health_checks"]) for r in rows] == [(2, 2)] * 3


def test_verdict_fails_on_growth_past_the_tolerance_and_on_health():
    flat = verdict(SETTINGS, *_run((300.0, 330.0, 320.0), (0.1, 0.3, 0.105)), [])
    assert flat["passed"] and flat["rss_mib"]["growth"] == pytest.approx(20 / 300, abs=1e-4)
    leak = verdict(SETTINGS, *_run((300.0, 320.0, 340.0), (0.1, 0.1, 0.1)), [])
    assert not leak["passed"] and not leak["rss_mib"]["passed"] and leak["p99_ms"]["passed"]
    slower = verdict(SETTINGS, *_run((300.0, 300.0, 300.0), (0.1, 0.1, 0.12)), [])
    assert not slower["passed"] and not slower["p99_ms"]["passed"]
    unhealthy = verdict(SETTINGS, *_run((300.0, 300.0, 300.0), (0.1, 0.1, 0.1), "UNAVAILABLE"), [])
    assert not unhealthy["passed"] and unhealthy["health"] == {"checks": 7, "serving": 4, "passed": False}
    broken = verdict(SETTINGS, *_run((300.0, 300.0, 300.0), (0.1, 0.1, 0.1)), ["camera 0: RpcError"])
    assert not broken["passed"] and not broken["cameras"]["passed"]
    rows, probes = _run((300.0, 300.0, 300.0), (0.1, 0.1, 0.1))
    probes[0] = HealthProbe(97.0, "UNAVAILABLE", 2000.0)  # during the warm-up: health counts from the start
    assert not verdict(SETTINGS, rows, probes, [])["health"]["passed"]


def test_settings_are_bounded():
    with pytest.raises(ConfigError, match="window"):
        SoakSettings((Path("v.mp4"),), "F", seconds=30.0, window_s=60.0)
    with pytest.raises(ConfigError, match="health interval"):
        SoakSettings((Path("v.mp4"),), "F", seconds=30.0, window_s=10.0, health_interval_s=0.1)
    with pytest.raises(ConfigError, match="seconds"):
        SoakSettings((Path("v.mp4"),), "F", seconds=5 * 3600.0)
    with pytest.raises(ConfigError, match="warm-up"):
        SoakSettings((Path("v.mp4"),), "F", seconds=600.0, warmup_s=-1.0)
    assert SoakSettings((Path("v.mp4"),), "F", cameras=8, fps=10.0, seconds=600.0).windows == 10


def test_a_short_real_soak(shared, faces_dir, model_dir, tmp_path):
    video = need(shared / "video" / "hieubkvn123_obama.mp4", "the Obama clip")
    gallery = need(faces_dir / "examples6", "examples6")
    argv = ["bench", "soak", "--video", str(video), "--gallery", str(gallery), "--cameras", "2", "--fps", "3"]
    argv += ["--minutes", "0.3", "--window-s", "6", "--warmup-s", "3", "--health-interval-s", "1"]
    argv += ["--workers", "2", "--model-dir", str(model_dir), "--out", str(tmp_path)]
    code = main(argv)
    report = json.loads((tmp_path / "soak.json").read_text())
    soak = report["soak"]
    assert code == (0 if soak["verdict"]["passed"] else 1)
    assert (tmp_path / "soak.md").read_text().startswith("# Soak")
    assert len(soak["windows"]) == 3 and soak["in_process"]
    assert soak["frames_sent"] == 2 * 3 * (3 + 18)
    assert soak["frames_observed"] + soak["frames_dropped"] <= soak["frames_sent"]
    for row in soak["windows"]:
        assert row["frames"] > 0 and row["p50_ms"] <= row["p99_ms"]
        assert row["rss_mib"] > 100  # models and the gRPC server are in this process
        assert row["health_checks"] >= 4 and row["health_serving"] == row["health_checks"]
    assert soak["verdict"]["health"]["passed"] and soak["verdict"]["cameras"]["passed"]
    assert soak["decisions"].get("MATCH", 0) >= 1, "Obama is in the examples6 gallery"
