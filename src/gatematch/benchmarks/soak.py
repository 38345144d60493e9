"""The soak run behind `gatematch bench soak`: N cameras for T minutes against one server, window by window.

A leak or a slow degradation does not show in a 20-second latency run. The soak streams the cameras of
`bench latency` (same helpers: `run_camera`, pre-encoded real video frames, latest-frame-wins on the server) for
minutes, and reports per window (a minute by default): frames observed, frame latency p50/p99, frames dropped,
the server's RSS (mean of one sample per second) and CPU, and the health checks sent every few seconds with how
they were answered. It passes when the last window's RSS and p99 are at most `tolerance` (10%) above the
first window's, every health check (warm-up included) answered SERVING, and no camera stream failed. Only
growth fails: memory or latency falling over a run is not a fault.

The cameras stream a warm-up (a minute by default) before the first window: a server's first minute under
load grows its allocator arenas and caches (measured: +24-29 MiB from minute 1 to minute 2), which is start-up,
not a leak, and comparing against it made the verdict depend on it. Loopback only, bounded in cameras, rate
and time.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass, replace
from typing import ClassVar

import numpy as np

from gatematch.benchmarks.latency import (
    DRAIN_S,
    CameraLog,
    LoadSettings,
    check_loopback,
    encoded_clip,
    percentiles_ms,
    run_camera,
    sample_process,
    warm_up,
)
from gatematch.client import open_channel
from gatematch.errors import ConfigError

MAX_SOAK_SECONDS = 4 * 3600.0
CLIP_SECONDS = 60.0  # at most this much of each video is encoded up front; cameras loop over it
SAMPLE_S = 1.0  # server RSS and CPU sampling period
HEALTH_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class SoakSettings(LoadSettings):
    window_s: float = 60.0
    warmup_s: float = 60.0  # streamed before the first window, not in any window
    health_interval_s: float = 2.0
    tolerance: float = 0.10
    max_seconds: ClassVar[float] = MAX_SOAK_SECONDS
    max_frames: ClassVar[int] = 2_000_000  # per-frame client records: a few hundred MB at most

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.window_s <= self.seconds:
            raise ConfigError(f"window must be in (0, {self.seconds:g}] s, got {self.window_s}")
        if not 0.5 <= self.health_interval_s <= self.window_s:
            raise ConfigError(
                f"health interval must be in [0.5, {self.window_s:g}] s, got {self.health_interval_s}"
            )
        if not 0 <= self.warmup_s <= self.max_seconds:
            raise ConfigError(f"warm-up must be in [0, {self.max_seconds:g}] s, got {self.warmup_s}")
        if not 0 < self.tolerance < 1:
            raise ConfigError(f"tolerance must be in (0, 1), got {self.tolerance}")

    @property
    def windows(self) -> int:
        return max(1, int(self.seconds // self.window_s))


@dataclass(frozen=True)
class HealthProbe:
    at: float  # monotonic time the check was sent
    answer: str  # SERVING, NOT_SERVING, ... or the gRPC status code of a failed check
    ms: float


def probe_health(target: str, every_s: float, stop: threading.Event, probes: list[HealthProbe]) -> None:
    """One grpc.health.v1 Check every `every_s` until `stop`, on a channel of its own (as an orchestrator)."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with open_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while not stop.is_set():
            sent = time.monotonic()
            try:
                status = stub.Check(
                    health_pb2.HealthCheckRequest(service=""), timeout=HEALTH_TIMEOUT_S
                ).status
                answer = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
            except grpc.RpcError as exc:
                answer = exc.code().name
            probes.append(HealthProbe(sent, answer, (time.monotonic() - sent) * 1000))
            stop.wait(max(every_s - (time.monotonic() - sent), 0.0))


@dataclass(frozen=True)
class ServerSample:
    at: float
    cpu_s: float
    rss_bytes: int


def sample_server(pid: int, stop: threading.Event, samples: list[ServerSample]) -> None:
    while not stop.is_set():
        sample = sample_process(pid)
        if sample is not None:
            samples.append(ServerSample(time.monotonic(), sample.cpu_s, sample.rss_bytes))
        stop.wait(SAMPLE_S)


def windows(
    settings: SoakSettings,
    start: float,
    logs: list[CameraLog],
    probes: list[HealthProbe],
    samples: list[ServerSample],
) -> list[dict[str, object]]:
    """Figures per window from `start`; what arrives before it (the warm-up) is in none, what arrives after the
    last window (the drain) counts in the last one."""
    count = settings.windows

    def index(at: float) -> int:
        return -1 if at < start else min(int((at - start) // settings.window_s), count - 1)

    latency: list[list[float]] = [[] for _ in range(count)]
    drops = [0] * count
    for log in logs:
        before = 0
        for at, seconds, dropped in zip(
            log.observed_at, log.frame_latency_s, log.dropped_so_far, strict=True
        ):
            if index(at) >= 0:
                latency[index(at)].append(seconds)
                drops[index(at)] += dropped - before
            before = dropped
    rows = []
    for i in range(count):
        mine = [s for s in samples if index(s.at) == i]
        answers = [p.answer for p in probes if index(p.at) == i]
        stats = percentiles_ms(latency[i])
        cpu = (mine[-1].cpu_s - mine[0].cpu_s) / (mine[-1].at - mine[0].at) if len(mine) > 1 else None
        rows.append(
            {
                "window": i + 1,
                "frames": stats["count"],
                "p50_ms": stats["p50_ms"],
                "p99_ms": stats["p99_ms"],
                "dropped": drops[i],
                "rss_mib": round(float(np.mean([s.rss_bytes for s in mine])) / 2**20, 1) if mine else None,
                "cpu_cores": round(cpu, 2) if cpu is not None else None,
                "health_checks": len(answers),
                "health_serving": answers.count("SERVING"),
            }
        )
    return rows


def verdict(
    settings: SoakSettings, rows: list[dict[str, object]], probes: list[HealthProbe], failures: list[str]
) -> dict[str, object]:
    """Pass when RSS and p99 of the last window are at most `tolerance` above the first, every health check
    of the run (warm-up included) answered SERVING and every camera stream lasted the run."""
    first, last = rows[0], rows[-1]
    checks: dict[str, dict[str, object]] = {}
    for name in ("rss_mib", "p99_ms"):
        a, b = first[name], last[name]
        growth = (b - a) / a if a and b is not None else None
        checks[name] = {
            "first": a,
            "last": b,
            "growth": round(growth, 4) if growth is not None else None,
            "passed": growth is not None and growth <= settings.tolerance,
        }
    sent = len(probes)
    serving = sum(p.answer == "SERVING" for p in probes)
    checks["health"] = {"checks": sent, "serving": serving, "passed": sent > 0 and serving == sent}
    checks["cameras"] = {"failures": failures, "passed": not failures}
    return {"passed": all(c["passed"] for c in checks.values()), "tolerance": settings.tolerance, **checks}


def run_soak(
    target: str, settings: SoakSettings, server_pid: int | None, in_process: bool
) -> dict[str, object]:
    """Stream from every camera for the whole run while probing health and sampling the server."""
    check_loopback(target)
    pid = os.getpid() if in_process else server_pid
    if pid is None:
        raise ConfigError("a soak against --target needs --server-pid: flat memory is half of what it checks")
    if sample_process(pid) is None:
        raise ConfigError(f"no process {pid} to sample (/proc/{pid})")
    clip_s = min(settings.seconds, CLIP_SECONDS)
    clips = [encoded_clip(video, settings.fps, clip_s) for video in settings.videos]
    warm_up(target, settings.flight, clips[0])
    streaming = replace(settings, seconds=settings.warmup_s + settings.seconds, warmup_s=0.0)
    logs = [CameraLog() for _ in range(settings.cameras)]
    probes: list[HealthProbe] = []
    samples: list[ServerSample] = []
    stop = threading.Event()
    helpers = [
        threading.Thread(target=probe_health, args=(target, settings.health_interval_s, stop, probes)),
        threading.Thread(target=sample_server, args=(pid, stop, samples)),
    ]
    cameras = [
        threading.Thread(
            target=run_camera,
            args=(target, i, clips[i % len(clips)], streaming, logs[i]),
            name=f"soak-cam-{i}",
        )
        for i in range(settings.cameras)
    ]
    start = time.monotonic()
    for thread in helpers + cameras:
        thread.start()
    for thread in cameras:
        thread.join(streaming.seconds + 2 * DRAIN_S)
    stop.set()
    for thread in helpers:
        thread.join(HEALTH_TIMEOUT_S + SAMPLE_S + 1)
    wall = time.monotonic() - start
    failures = [f"camera {i}: {log.failure}" for i, log in enumerate(logs) if log.failure]
    rows = windows(settings, start + settings.warmup_s, logs, probes, samples)
    return {
        "target": target,
        "in_process": in_process,
        "server_pid": pid,
        "server_note": (
            "in-process: RSS and CPU include the camera clients (pre-encoded frames: pacing and serialisation)"
            if in_process
            else "external server process"
        ),
        "flight": settings.flight,
        "videos": [str(v) for v in settings.videos],
        "cameras": settings.cameras,
        "fps": settings.fps,
        "seconds": settings.seconds,
        "window_s": settings.window_s,
        "warmup_s": settings.warmup_s,
        "health_interval_s": settings.health_interval_s,
        "wall_s": round(wall, 2),
        "frames_sent": sum(log.sent for log in logs),
        "frames_observed": sum(log.observations for log in logs),
        "frames_dropped": sum(log.dropped for log in logs),
        "frame_errors": sum(log.errors for log in logs),
        "frame_latency": percentiles_ms([s for log in logs for s in log.frame_latency_s]),
        "decisions": {
            name: sum(log.decisions.get(name, 0) for log in logs)
            for name in sorted({name for log in logs for name in log.decisions})
        },
        "health_ms_max": round(max((p.ms for p in probes), default=0.0), 1),
        "windows": rows,
        "verdict": verdict(settings, rows, probes, failures),
    }
