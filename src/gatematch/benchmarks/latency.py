"""The latency run behind `gatematch bench latency`: end-to-end load on a loopback service, and per-stage times.

Load: N simulated gate cameras, each a StreamMatch call sending real video frames (JPEG, looped if the clip is
shorter than the run) at F fps for T seconds. Frames are encoded before the clock starts, so the clients only
pace and serialise. Measured on the client: frame latency (frame sent -> its observation back) and decision
latency (an encounter's first frame sent -> its decision back); from the server's answers: frames dropped
(latest frame wins) and the encounter time it reports; from /proc: the server process's CPU time and peak RSS.
Loopback only and bounded in cameras, rate, time and frames: this is a measurement, never a load generator
pointed at a production gate.

Capacity (`--find-capacity`): the same load, stepped up in cameras against one server, until a step breaks the
service's promise to a gate: frame p99 over the frame budget, or 1% or more of the frames lost (dropped by
latest-frame-wins, answered BUDGET_EXCEEDED, bad, or never answered). The capacity is the last count that held.
"""

from __future__ import annotations

import ipaddress
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import numpy as np

from gatematch.client import (
    OWN_CONNECTION,
    camera_frames,
    folder_photos,
    load_requests,
    make_frame,
    open_channel,
)
from gatematch.errors import ConfigError
from gatematch.gallery import Calibration
from gatematch.modelstore import ModelStore
from gatematch.service.config import BudgetConfig

MAX_CAMERAS = 32
MAX_FPS = 60.0
MAX_SECONDS = 600.0
MAX_FRAMES = 20_000  # cameras x fps x seconds
MAX_RAW_FACES = 8  # faces per frame whose raw embedding is timed (as the overhead microbenchmark)
CHILD_READY_S = 300.0  # how long a benchmark's own server process may take to load models and report SERVING
DRAIN_S = 30.0  # after the last frame, how long a stream may take to answer its open encounters
GALLERY_LOAD_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class LoadSettings:
    videos: tuple[Path, ...]
    flight: str
    cameras: int = 2
    fps: float = 5.0
    seconds: float = 10.0
    max_seconds: ClassVar[float] = MAX_SECONDS  # a longer run (the soak) raises these two
    max_frames: ClassVar[int] = MAX_FRAMES

    def __post_init__(self) -> None:
        if not self.videos:
            raise ConfigError("at least one --video is needed for the cameras to stream")
        if not 1 <= self.cameras <= MAX_CAMERAS:
            raise ConfigError(f"cameras must be 1..{MAX_CAMERAS}, got {self.cameras}")
        if not 0 < self.fps <= MAX_FPS:
            raise ConfigError(f"fps must be in (0, {MAX_FPS:g}], got {self.fps}")
        if not 0 < self.seconds <= self.max_seconds:
            raise ConfigError(f"seconds must be in (0, {self.max_seconds:g}], got {self.seconds}")
        if self.frames_per_camera * self.cameras > self.max_frames:
            raise ConfigError(
                f"{self.cameras} cameras x {self.fps:g} fps x {self.seconds:g} s is more than {self.max_frames} "
                "frames"
            )

    @property
    def frames_per_camera(self) -> int:
        return max(1, round(self.fps * self.seconds))


def check_loopback(target: str) -> None:
    """Refuse any address that is not this machine: a benchmark must not load a real gate's service."""
    host, _, port = target.rpartition(":") if ":" in target else (target, "", "")
    host = host.strip("[]")
    if port and not (port.isdigit() and 0 < int(port) < 65536):
        raise ConfigError(f"target '{target}': port must be a number in 1..65535, got '{port}'")
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except socket.gaierror as exc:
        raise ConfigError(f"cannot resolve target host '{host}': {exc}") from None
    remote = sorted(a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback)
    if remote:
        raise ConfigError(f"the latency benchmark runs on loopback only; '{host}' resolves to {remote}")


# -------------------------------------------------------------------------------------- server process


@dataclass(frozen=True)
class ProcessSample:
    cpu_s: float
    peak_rss_bytes: int
    rss_bytes: int = 0


def sample_process(pid: int | None) -> ProcessSample | None:
    """CPU seconds (user + system), peak and current RSS (VmHWM, VmRSS) of a process from /proc; None where
    unavailable."""
    where = Path("/proc") / (str(pid) if pid else "self")
    try:
        fields = (where / "stat").read_text().rsplit(")", 1)[1].split()
        status = (where / "status").read_text()
    except OSError:
        return None
    ticks = os.sysconf("SC_CLK_TCK")
    cpu = (int(fields[11]) + int(fields[12])) / ticks  # utime, stime: fields 14 and 15 of stat
    memory = {
        key: int(value.split()[0]) * 1024
        for key, _, value in (line.partition(":") for line in status.splitlines())
        if key in ("VmHWM", "VmRSS")
    }
    return ProcessSample(cpu, memory.get("VmHWM", 0), memory.get("VmRSS", 0))


@contextmanager
def in_process_server(
    pack: str, model_store: ModelStore, calibration: Calibration | None, workers: int = 0, focus: bool = True
) -> Iterator[str]:
    """A real GateMatchServer on 127.0.0.1 (free port), its galleries, key file and audit log in a temporary
    folder; `focus` False: camera streams give every frame every stage (service/focus.py)."""
    from gatematch.service.config import (
        AuditConfig,
        FocusConfig,
        KeysConfig,
        ServerConfig,
        ServiceConfig,
        StoreConfig,
    )
    from gatematch.service.server import GateMatchServer

    with tempfile.TemporaryDirectory(prefix="gatematch-bench-") as tmp:
        config = ServiceConfig(
            server=ServerConfig(host="127.0.0.1", port=0, workers=workers),
            store=StoreConfig(gallery_dir=str(Path(tmp) / "galleries"), pack=pack),
            audit=AuditConfig(path=str(Path(tmp) / "audit.jsonl")),
            keys=KeysConfig(file=str(Path(tmp) / "template-keys.json")),
            focus=FocusConfig(enabled=focus),
        )
        server = GateMatchServer(config, calibration=calibration, model_store=model_store)
        server.start()
        try:
            server.load()
            yield f"127.0.0.1:{server.port}"
        finally:
            server.stop(2.0)


def load_gallery(target: str, flight: str, folder: Path) -> dict[str, int]:
    """Enroll FOLDER/<traveler>/<photos> as the flight's gallery over GalleryService.Load."""
    from gatematch.v1 import gallery_pb2_grpc

    photos = folder_photos(folder)
    if not photos:
        raise ConfigError(f"gallery folder {folder} holds no photos in <traveler>/<photo> layout")
    with open_channel(target) as channel:
        response = gallery_pb2_grpc.GalleryServiceStub(channel).Load(
            load_requests(flight, datetime.now(UTC) + timedelta(hours=2), photos),
            timeout=GALLERY_LOAD_TIMEOUT_S,
        )
    return {"travelers": response.gallery.traveler_count, "rejected": len(response.rejected)}


# --------------------------------------------------------------------------------------------- cameras


def encoded_clip(video: Path, fps: float, seconds: float) -> list[bytes]:
    """JPEG frames of the clip at `fps` (at most the video's own rate), for at most `seconds`."""
    frames = [f.image.encoded for f in camera_frames(video, "", "", "", fps, seconds, realtime=False)]
    if not frames:
        raise ConfigError(f"no frames could be read from {video}")
    return frames


@dataclass
class CameraLog:
    """What one camera saw; filled by its thread, read after it ended."""

    sent: int = 0
    observations: int = 0
    errors: int = 0
    over_budget: int = 0  # observations answered BUDGET_EXCEEDED: the frame was not analysed in time
    # observations of frames the camera focus passed over (they could only confirm decisions made)
    passed_over: int = 0
    dropped: int = 0
    frame_latency_s: list[float] = field(default_factory=list)
    analysed_latency_s: list[float] = field(default_factory=list)  # the same, frames not passed over only
    observed_at: list[float] = field(default_factory=list)  # monotonic arrival of each observation
    dropped_so_far: list[int] = field(default_factory=list)  # the stream's drop count at each observation
    decision_latency_s: dict[str, list[float]] = field(default_factory=dict)  # by decision kind
    encounter_elapsed_ms: list[float] = field(default_factory=list)
    server_stage_ms: dict[str, list[float]] = field(default_factory=dict)
    decisions: dict[str, int] = field(default_factory=dict)
    failure: str = ""


def run_camera(target: str, camera: int, clip: list[bytes], settings: LoadSettings, log: CameraLog) -> None:
    from gatematch.v1 import match_pb2, match_pb2_grpc

    sent_at: dict[int, float] = {}
    camera_id, gate = f"bench-cam-{camera}", f"BENCH{camera}"

    def frames() -> Iterator:
        start = time.monotonic()
        for i in range(settings.frames_per_camera):
            time.sleep(max(start + i / settings.fps - time.monotonic(), 0.0))
            sent_at[i + 1] = time.monotonic()
            log.sent = i + 1
            yield make_frame(camera_id, gate, settings.flight, i + 1, clip[i % len(clip)])

    try:
        with open_channel(target, options=OWN_CONNECTION) as channel:
            stub = match_pb2_grpc.MatchServiceStub(channel)
            for event in stub.StreamMatch(frames(), timeout=settings.seconds + DRAIN_S):
                now = time.monotonic()
                if event.WhichOneof("event") == "observation":
                    obs = event.observation
                    log.observations += 1
                    log.dropped = max(log.dropped, int(obs.dropped_frames))
                    log.errors += obs.HasField("error")
                    log.over_budget += obs.status == match_pb2.DECISION_BUDGET_EXCEEDED
                    log.passed_over += obs.passed_over
                    log.frame_latency_s.append(now - sent_at[obs.sequence])
                    if not obs.passed_over:
                        log.analysed_latency_s.append(now - sent_at[obs.sequence])
                    log.observed_at.append(now)
                    log.dropped_so_far.append(log.dropped)
                    for stage, ms in obs.stage_ms.items():
                        log.server_stage_ms.setdefault(stage, []).append(ms)
                else:
                    decision = event.decision
                    name = match_pb2.Decision.Name(decision.decision).removeprefix("DECISION_")
                    log.decisions[name] = log.decisions.get(name, 0) + 1
                    log.encounter_elapsed_ms.append(decision.elapsed_ms)
                    if decision.first_sequence in sent_at:
                        latency = now - sent_at[decision.first_sequence]
                        log.decision_latency_s.setdefault(name, []).append(latency)
    except Exception as exc:  # a failed camera is reported in the result, not lost in a thread
        log.failure = f"{type(exc).__name__}: {exc}"


def percentiles_ms(seconds: list[float], scale: float = 1000.0) -> dict[str, float | int | None]:
    if not seconds:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None, "count": 0}
    ms = np.asarray(seconds) * scale
    p50, p95, p99 = (round(float(v), 2) for v in np.percentile(ms, [50, 95, 99]))
    return {
        "p50_ms": p50,
        "p95_ms": p95,
        "p99_ms": p99,
        "max_ms": round(float(ms.max()), 2),
        "count": int(ms.size),
    }


def run_load(
    target: str,
    settings: LoadSettings,
    server_pid: int | None,
    in_process: bool,
    clips: list[list[bytes]] | None = None,
) -> dict[str, object]:
    """Stream from every camera at once and summarise; the server process is sampled before and after."""
    check_loopback(target)
    clips = clips or [encoded_clip(video, settings.fps, settings.seconds) for video in settings.videos]
    warm_up(target, settings.flight, clips[0])
    logs = [CameraLog() for _ in range(settings.cameras)]
    threads = [
        threading.Thread(
            target=run_camera,
            args=(target, i, clips[i % len(clips)], settings, logs[i]),
            name=f"bench-cam-{i}",
        )
        for i in range(settings.cameras)
    ]
    pid = None if in_process else server_pid
    measurable = in_process or server_pid is not None
    before = sample_process(pid) if measurable else None
    start = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(settings.seconds + 2 * DRAIN_S)
    wall = time.monotonic() - start
    after = sample_process(pid) if measurable else None
    failures = [log.failure for log in logs if log.failure]
    if failures:
        raise ConfigError(f"{len(failures)} camera stream(s) failed against {target}: {failures[0]}")
    processed = sum(log.observations - log.errors for log in logs)
    frames_sent = sum(log.sent for log in logs)
    over_budget = sum(log.over_budget for log in logs)
    decisions: dict[str, int] = {}
    for log in logs:
        for name, count in log.decisions.items():
            decisions[name] = decisions.get(name, 0) + count
    server: dict[str, object] = {"cpu_s": None, "cpu_cores": None, "peak_rss_mib": None}
    if before and after:
        cpu = after.cpu_s - before.cpu_s
        server = {
            "cpu_s": round(cpu, 2),
            "cpu_cores": round(cpu / wall, 2),
            "peak_rss_mib": round(after.peak_rss_bytes / 2**20, 1),
        }
    server["pid"] = os.getpid() if in_process else server_pid
    server["note"] = (
        "in-process: the process also runs the camera clients (pre-encoded frames: pacing and serialisation)"
        if in_process
        else "external server process"
        if server_pid
        else "not measured: give --server-pid"
    )
    return {
        "target": target,
        "in_process": in_process,
        "flight": settings.flight,
        "videos": [str(v) for v in settings.videos],
        "cameras": settings.cameras,
        "fps": settings.fps,
        "seconds": settings.seconds,
        "wall_s": round(wall, 2),
        "frames_sent": frames_sent,
        "frames_processed": processed,
        "frames_dropped": sum(log.dropped for log in logs),
        "frame_errors": sum(log.errors for log in logs),
        "frames_over_budget": over_budget,
        # answered without analysis: every face in view was decided and still (a processed frame all the same)
        "frames_passed_over": sum(log.passed_over for log in logs),
        # every frame a gate sent that did not come back analysed in time: dropped, bad, late or unanswered
        "frames_lost": frames_sent - (processed - over_budget),
        "throughput_fps": round(processed / wall, 2),
        "decisions": decisions,
        "frame_latency": percentiles_ms([s for log in logs for s in log.frame_latency_s]),
        # what capacity is judged on: a frame passed over is answered at once and would flatter the tail
        "analysed_frame_latency": percentiles_ms([s for log in logs for s in log.analysed_latency_s]),
        "decision_latency": percentiles_ms(
            [s for log in logs for v in log.decision_latency_s.values() for s in v]
        ),
        "decision_latency_by_kind": {
            kind: percentiles_ms([s for log in logs for s in log.decision_latency_s.get(kind, [])])
            for kind in sorted(decisions)
        },
        "encounter_elapsed": percentiles_ms([s for log in logs for s in log.encounter_elapsed_ms], scale=1.0),
        "server_stage_mean_ms": {
            stage: round(float(np.mean([v for log in logs for v in log.server_stage_ms.get(stage, [])])), 2)
            for stage in sorted({stage for log in logs for stage in log.server_stage_ms})
        },
        # the same, spread over every frame processed (a stage a frame skipped counts 0 for it)
        "server_stage_ms_per_frame": {
            stage: round(
                sum(v for log in logs for v in log.server_stage_ms.get(stage, [])) / max(processed, 1), 3
            )
            for stage in sorted({stage for log in logs for stage in log.server_stage_ms})
        },
        "server": server,
    }


def warm_up(target: str, flight: str, clip: list[bytes], frames: int = 3) -> None:
    """A few unary matches first, so arenas and caches are settled before the clock starts."""
    from gatematch.v1 import match_pb2, match_pb2_grpc

    with open_channel(target) as channel:
        stub = match_pb2_grpc.MatchServiceStub(channel)
        for i in range(frames):
            frame = make_frame("bench-warm-up", "BENCH-WARM", flight, i + 1, clip[i % len(clip)])
            stub.Match(match_pb2.MatchRequest(frame=frame), timeout=60)


# ----------------------------------------------------------- what a frame costs the server, focus on or off


def free_port() -> int:
    """A loopback port nobody listens on now, for a server process this benchmark starts."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def child_server(
    pack: str, model_dir: Path, focus: bool, workers: int = 0, ready_s: float = CHILD_READY_S
) -> Iterator[tuple[str, int]]:
    """`gatematch serve` in a process of its own on 127.0.0.1 (its galleries, key file and audit log in a
    temporary folder), so that its CPU time is the server's alone; (target, pid) once it reports SERVING."""
    with tempfile.TemporaryDirectory(prefix="gatematch-bench-") as tmp:
        port = free_port()
        config = Path(tmp) / "serve.toml"
        config.write_text(
            f'[server]\nhost = "127.0.0.1"\nport = {port}\nworkers = {workers}\n'
            f"[store]\ngallery_dir = {json.dumps(str(Path(tmp) / 'galleries'))}\n"
            f"model_dir = {json.dumps(str(model_dir))}\npack = {json.dumps(pack)}\n"
            f"[audit]\npath = {json.dumps(str(Path(tmp) / 'audit.jsonl'))}\n"
            f"[keys]\nfile = {json.dumps(str(Path(tmp) / 'template-keys.json'))}\n"
            f"[focus]\nenabled = {'true' if focus else 'false'}\n",
            encoding="utf-8",
        )
        command = [sys.executable, "-m", "gatematch.cli.main", "serve", "--config", str(config)]
        with (Path(tmp) / "serve.log").open("wb") as log:
            process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        target = f"127.0.0.1:{port}"
        try:
            wait_serving(target, process, ready_s, Path(tmp) / "serve.log")
            yield target, process.pid
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def wait_serving(target: str, process: subprocess.Popen, timeout_s: float, log: Path) -> None:
    """Until the started server answers SERVING; its exit (with the last line of its log) is a ConfigError."""
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout_s
    with open_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            if process.poll() is not None:
                last = log.read_text(encoding="utf-8", errors="replace").strip().splitlines()[-1:]
                raise ConfigError(f"the benchmark's server exited ({process.returncode}): {' '.join(last)}")
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:  # not listening yet
                pass
            time.sleep(0.2)
    raise ConfigError(f"the benchmark's server did not report SERVING within {timeout_s:g} s")


def raw_model_ms(
    pack: str, model_store: ModelStore, clips: list[list[bytes]], repeats: int = 2
) -> list[list[float]]:
    """Per clip frame: CPU milliseconds (this thread's) of the detector's `session.run` on the whole frame as the
    card takes it (640x640 letterbox for the default pack) plus the embedder's on every face it found: the raw
    model time the service's per-frame cost is held against. One intra-op thread, as the service runs them;
    preparing tensors and decoding outputs is not counted."""
    from gatematch.align import norm_crop
    from gatematch.facepipeline import CROP_SIZE, FacePipeline, PipelineConfig
    from gatematch.images import decode_image
    from gatematch.runtime import RuntimeConfig

    config = PipelineConfig(runtime=RuntimeConfig(intra_op_threads=1, allow_spinning=False))
    pipeline = FacePipeline.from_pack(pack, model_store, config)
    detector, embedder = pipeline.detector, pipeline.embedder
    result = []
    for clip in clips:
        images = [decode_image(data) for data in clip]
        detector.infer(detector.prepare(images[0]).tensor)  # warm-up: first runs allocate arenas
        per_frame = []
        for image in images:
            prepared = detector.prepare(image)
            spent = []
            for _ in range(repeats):
                start = time.thread_time()
                outputs = detector.infer(prepared.tensor)
                spent.append(time.thread_time() - start)
            faces = [f for f in detector.decode(outputs, prepared) if f.landmarks is not None][:MAX_RAW_FACES]
            if faces and embedder is not None:
                crops = np.stack([norm_crop(image, f.landmarks, CROP_SIZE) for f in faces])
                tensor = embedder.prepare(crops)
                for i in range(repeats):
                    start = time.thread_time()
                    embedder.infer_rows(tensor)
                    spent[i] += time.thread_time() - start
            per_frame.append(1000 * float(np.mean(spent)))
        result.append(per_frame)
    return result


def sent_mean(per_clip: list[list[float]], settings: LoadSettings) -> float:
    """The mean over the frames the cameras send (camera i streams clip i mod n, frame j is clip frame j mod
    its length), of a per-clip-frame figure."""
    values = [
        per_clip[camera % len(per_clip)][j % len(per_clip[camera % len(per_clip)])]
        for camera in range(settings.cameras)
        for j in range(settings.frames_per_camera)
    ]
    return float(np.mean(values))


def compare_focus(
    settings: LoadSettings, pack: str, model_store: ModelStore, gallery: Path, workers: int = 0
) -> dict[str, object]:
    """Server CPU per frame with the camera focus off (every stage on every frame) and on, each a fresh server
    process streamed the same frames, against the raw model time on those frames. The raw time is measured
    before, between and after the servers, and each server is held against the mean of the two measured next
    to it: on a shared VM the same raw run drifted by 15-25% between runs a minute apart."""
    clips = [encoded_clip(video, settings.fps, settings.seconds) for video in settings.videos]
    raw = [sent_mean(raw_model_ms(pack, model_store, clips), settings)]
    runs: dict[str, dict[str, object]] = {}
    for name, focus in (("focus off", False), ("focus on", True)):
        with child_server(pack, model_store.root, focus, workers) as (target, pid):
            load_gallery(target, settings.flight, gallery)
            load = run_load(target, settings, pid, in_process=False, clips=clips)
        raw.append(sent_mean(raw_model_ms(pack, model_store, clips), settings))
        cpu_s = load["server"]["cpu_s"]
        per_frame = 1000 * cpu_s / load["frames_processed"] if cpu_s and load["frames_processed"] else None
        raw_ms = (raw[-2] + raw[-1]) / 2
        runs[name] = {
            "server_cpu_ms_per_frame": round(per_frame, 2) if per_frame is not None else None,
            "raw_model_ms": round(raw_ms, 2),
            "of_raw": round(per_frame / raw_ms, 3) if per_frame is not None else None,
            "load": load,
        }
    return {
        "pack": pack,
        "raw_model_ms_per_frame": round(float(np.mean(raw)), 2),
        "raw_model_ms_around": [round(value, 2) for value in raw],
        "raw_note": "detector session.run on the whole frame as the card takes it + embedder on every face, "
        "one thread, CPU time",
        "runs": runs,
    }


# -------------------------------------------------------------------------------------------- capacity


@dataclass(frozen=True)
class CapacityCriteria:
    """What one replica must hold for a camera count to count: the per-frame promise to a gate."""

    frame_p99_ms: float = BudgetConfig.frame_ms  # the service's frame budget
    max_lost_fraction: float = 0.01  # a step passes only under this share of lost frames

    def __post_init__(self) -> None:
        if self.frame_p99_ms <= 0:
            raise ConfigError(f"the frame p99 budget must be > 0 ms, got {self.frame_p99_ms:g}")
        if not 0 < self.max_lost_fraction < 1:
            raise ConfigError(f"the lost-frame share must be in (0, 1), got {self.max_lost_fraction:g}")

    def judge(self, load: dict) -> str:
        """Why this load breaks the criteria ('' when it holds)."""
        p99 = load["analysed_frame_latency"]["p99_ms"]
        lost = load["frames_lost"] / max(load["frames_sent"], 1)
        reasons = []
        if p99 is None or p99 > self.frame_p99_ms:
            reasons.append(f"analysed-frame p99 {p99} ms > {self.frame_p99_ms:g} ms")
        if lost >= self.max_lost_fraction:
            reasons.append(f"{lost:.1%} of frames lost >= {self.max_lost_fraction:.0%}")
        return "; ".join(reasons)


def capacity_step(cameras: int, load: dict, reason: str) -> dict[str, object]:
    """One row of the capacity search: what the count did, and whether it held."""
    server = load["server"]
    return {
        "cameras": cameras,
        "passed": not reason,
        "reason": reason,
        "frame_p50_ms": load["analysed_frame_latency"]["p50_ms"],
        "frame_p99_ms": load["analysed_frame_latency"]["p99_ms"],
        "frames_sent": load["frames_sent"],
        "frames_lost": load["frames_lost"],
        "frames_dropped": load["frames_dropped"],
        "frames_over_budget": load["frames_over_budget"],
        "lost_fraction": round(load["frames_lost"] / max(load["frames_sent"], 1), 4),
        "server_cpu_cores": server["cpu_cores"],
        "server_peak_rss_mib": server["peak_rss_mib"],
    }


def capacity_counts(start: int, max_cameras: int, step: int) -> range:
    """The camera counts a capacity search tries, refused before any work when they make no sense."""
    if step < 1:
        raise ConfigError(f"--step must be >= 1, got {step}")
    if not start <= max_cameras <= MAX_CAMERAS:
        raise ConfigError(
            f"--max-cameras must be in {start}..{MAX_CAMERAS} (from --cameras), got {max_cameras}"
        )
    return range(start, max_cameras + 1, step)


def find_capacity(
    target: str,
    settings: LoadSettings,
    criteria: CapacityCriteria,
    *,
    max_cameras: int = MAX_CAMERAS,
    step: int = 1,
    server_pid: int | None = None,
    in_process: bool = False,
    workers: int | None = None,
    progress: Callable[[dict[str, object]], None] | None = None,
) -> dict[str, object]:
    """Run the load at settings.cameras, then `step` more each time, until a count fails or max_cameras passed.

    Linear, not a bisection: latency under overload is noisy near the knee, and the first failing count seen
    from below is the one an operator would meet as gates are added one at a time.
    """
    steps: list[dict[str, object]] = []
    capacity, capacity_load = 0, None
    for cameras in capacity_counts(settings.cameras, max_cameras, step):
        load = run_load(target, replace(settings, cameras=cameras), server_pid, in_process)
        row = capacity_step(cameras, load, criteria.judge(load))
        steps.append(row)
        if progress:
            progress(row)
        if not row["passed"]:
            break
        capacity, capacity_load = cameras, load
    held_all = bool(steps) and bool(steps[-1]["passed"])
    busy = capacity_load["server"]["cpu_cores"] if capacity_load else None
    return {
        "target": target,
        "in_process": in_process,
        "fps": settings.fps,
        "seconds_per_step": settings.seconds,
        "videos": [str(v) for v in settings.videos],
        "criteria": {"frame_p99_ms": criteria.frame_p99_ms, "max_lost_fraction": criteria.max_lost_fraction},
        "steps": steps,
        "capacity_cameras": capacity,
        # when every count up to max_cameras held, the capacity is only a lower bound
        "first_failing_cameras": None if held_all else steps[-1]["cameras"],
        "workers": workers,
        "cameras_per_worker": round(capacity / workers, 2) if workers and capacity else None,
        "server_cpu_cores_at_capacity": busy,
        "cameras_per_busy_core": round(capacity / busy, 2) if capacity and busy else None,
    }
