"""End to end, the edges a reviewer pushed on: malformed frame fields, streams beyond max_streams, a gallery load
cut mid-way. A real server on 127.0.0.1 (port 0) with real models and an examples6 gallery; frames are sent in
lock step (the next only after the previous one's observation) so that none is dropped as stale.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2

from gatematch.client import load_requests, make_frame, open_channel
from gatematch.facepipeline import FacePipeline
from gatematch.service.config import BudgetConfig, FocusConfig
from gatematch.service.server import GateMatchServer, pipeline_config
from gatematch.v1 import gallery_pb2, gallery_pb2_grpc, match_pb2, match_pb2_grpc
from support.server import (
    STORE_BACKENDS,
    calibration_for,
    health_status,
    service_config,
    start_server,
    store_url,
)

FLIGHT = "GM404"
MAX_STREAMS = 2


@pytest.fixture(scope="module")
def pipeline(model_store) -> FacePipeline:
    config = pipeline_config(service_config(Path()))
    return FacePipeline.from_pack("default", store=model_store, config=config)


def serve(
    root: Path, model_store, pipeline, faces_dir, enrolled: Path, url: str = "", **changes
) -> GateMatchServer:
    """A loaded server whose FLIGHT gallery holds the one traveler of the photo `enrolled` (galleries at
    `url`, else in the embedded store)."""
    config = replace(service_config(root, url, max_streams=MAX_STREAMS), **changes)
    server, _ = start_server(config, model_store, calibration_for(pipeline, faces_dir), pipeline)
    with open_channel(f"127.0.0.1:{server.port}") as channel:
        photos = [(enrolled.parent.name, enrolled.read_bytes())]
        departure = datetime.now(UTC) + timedelta(hours=2)
        gallery_pb2_grpc.GalleryServiceStub(channel).Load(
            load_requests(FLIGHT, departure, photos), timeout=60
        )
    return server


@pytest.fixture(scope="module", params=STORE_BACKENDS)
def service(request, tmp_path_factory, model_store, pipeline, faces_dir, examples, postgres_cluster):
    root = tmp_path_factory.mktemp("robust")
    url = store_url(request.param, postgres_cluster)
    server = serve(root, model_store, pipeline, faces_dir, examples / "obama" / "obama.jpg", url)
    yield server
    server.stop(1.0)


@pytest.fixture(scope="module")
def channel(service):
    with open_channel(f"127.0.0.1:{service.port}") as channel:
        yield channel


@pytest.fixture(scope="module")
def obama(examples) -> bytes:
    return (examples / "obama" / "obama2.jpg").read_bytes()


def lockstep(
    channel, frames: Iterable[match_pb2.Frame], hold_s: float = 0.0, stamp: bool = True
) -> list[match_pb2.StreamEvent]:
    """A stream that sends each frame only once the previous one was observed, so none is dropped; it
    stays open `hold_s` after the last observation. `stamp`: each frame is captured as it is sent."""
    turn = threading.Semaphore(1)

    def requests() -> Iterator[match_pb2.Frame]:
        for frame in frames:
            turn.acquire(timeout=30)
            if stamp:
                frame.captured_at.GetCurrentTime()  # its whole budget is left when it arrives
            yield frame
        turn.acquire(timeout=30)
        time.sleep(hold_s)

    events = []
    for event in match_pb2_grpc.MatchServiceStub(channel).StreamMatch(requests(), timeout=60):
        events.append(event)
        if event.WhichOneof("event") == "observation":
            turn.release()
    return events


def observations(events) -> list[match_pb2.FrameObservation]:
    return [e.observation for e in events if e.WhichOneof("event") == "observation"]


def matched(events) -> list[str]:
    return [
        e.decision.candidates[0].traveler_id
        for e in events
        if e.WhichOneof("event") == "decision" and e.decision.decision == match_pb2.DECISION_MATCH
    ]


def unary(channel, frame: match_pb2.Frame) -> match_pb2.MatchResponse:
    return match_pb2_grpc.MatchServiceStub(channel).Match(match_pb2.MatchRequest(frame=frame), timeout=30)


def _bad_capture_time(frame: match_pb2.Frame) -> None:
    frame.captured_at.seconds = 2**62  # far past year 9999: no datetime can hold it


def _long_camera_id(frame: match_pb2.Frame) -> None:
    frame.camera_id = "c" * 300


def _long_gate_id(frame: match_pb2.Frame) -> None:
    frame.gate_id = "g" * 300


@pytest.mark.parametrize("spoil", [_bad_capture_time, _long_camera_id, _long_gate_id])
def test_a_frame_with_unusable_fields_is_an_error_for_that_frame_only(service, channel, obama, spoil):
    bad = make_frame("cam-1", "A1", FLIGHT, 1, obama)
    spoil(bad)
    events = lockstep(channel, [bad, make_frame("cam-1", "A1", FLIGHT, 2, obama)], stamp=False)
    first = observations(events)[0]
    assert first.sequence == 1 and first.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert first.error.message
    assert matched(events) == ["obama"]  # the stream went on and the next frame matched
    with pytest.raises(grpc.RpcError) as caught:
        unary(channel, bad)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert unary(channel, make_frame("cam-1", "A1", FLIGHT, 3, obama)).decision == match_pb2.DECISION_MATCH


def test_streams_beyond_max_streams_are_refused_while_health_and_matching_still_answer(
    service, channel, obama
):
    release = threading.Event()

    def idle_camera() -> Iterator[match_pb2.Frame]:
        release.wait(30)
        return
        yield

    stub = match_pb2_grpc.MatchServiceStub(channel)
    calls = [stub.StreamMatch(idle_camera(), timeout=60) for _ in range(MAX_STREAMS + 3)]
    try:
        deadline = time.monotonic() + 10
        while service.ready()[1].open_streams < MAX_STREAMS and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)  # the extra streams have arrived by now
        assert service.ready()[1].open_streams == MAX_STREAMS
        assert health_status(f"127.0.0.1:{service.port}") == health_pb2.HealthCheckResponse.SERVING
        assert (
            unary(channel, make_frame("cam-1", "A1", FLIGHT, 1, obama)).decision == match_pb2.DECISION_MATCH
        )
    finally:
        release.set()
    codes = []
    for call in calls:
        try:
            list(call)
            codes.append(grpc.StatusCode.OK)
        except grpc.RpcError as exc:
            codes.append(exc.code())
    assert codes.count(grpc.StatusCode.OK) == MAX_STREAMS
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 3


def test_a_gallery_load_cut_midway_leaves_no_gallery(service, channel, examples):
    photos = [(who, (examples / who / f"{who}.jpg").read_bytes()) for who in ("obama", "biden")]
    stub = gallery_pb2_grpc.GalleryServiceStub(channel)

    def dying_client(flight: str) -> Iterator[gallery_pb2.LoadGalleryRequest]:
        requests = load_requests(flight, datetime.now(UTC) + timedelta(hours=2), photos, chunk_bytes=1)
        yield next(requests)  # the header
        yield next(requests)  # one traveler's photo
        time.sleep(0.3)  # the server has enrolled it and waits for more
        raise ConnectionError("the client process dies")

    flights = [f"GM5{n}" for n in range(4)]
    for flight in flights:  # the server half-finishing a cut load is a race: give it several chances
        with pytest.raises(grpc.RpcError):
            stub.Load(dying_client(flight), timeout=60)
    time.sleep(1.0)  # a server that wrongly goes on finishing the load has written it by now
    listed = stub.List(gallery_pb2.ListGalleriesRequest(include_expired=True), timeout=10).galleries
    assert not {g.flight_id for g in listed} & set(flights)


def analysis_seconds(pipeline, data: bytes) -> float:
    """What analysing this photo in full takes on this machine now (the best of three, after a warm-up)."""
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    pipeline.analyze_batch([image])
    times = []
    for _ in range(3):
        start = time.perf_counter()
        pipeline.analyze_batch([image])
        times.append(time.perf_counter() - start)
    return min(times)


def test_a_frame_abandoned_at_its_budget_leaves_no_trace_in_the_encounters(
    tmp_path, model_store, pipeline, faces_dir, examples
):
    """An 8x8 grid of faces takes several frame budgets to analyse (every face of it: the camera focus, which
    would spare most of them, is off here). The stream answers it BUDGET_EXCEEDED at its budget; the worker
    still busy with it must not then open or close encounters behind the camera's back: every encounter the
    camera hears decided is one it saw a face of, and each is decided once. The budget is set between what
    this machine takes for one face and for the grid (a fixed 150 ms held only within 2.3x of CI's speed)."""
    faces = [cv2.resize(cv2.imread(str(p)), (240, 300)) for p in sorted(examples.glob("*/*"))]
    tiles = [faces[i % len(faces)] for i in range(64)]
    crowd = cv2.imencode(".jpg", np.vstack([np.hstack(tiles[r * 8 : r * 8 + 8]) for r in range(8)]))[1]
    unknown = (examples / "obama" / "obama2.jpg").read_bytes()  # a usable face nobody enrolled
    one_s, grid_s = (analysis_seconds(pipeline, data) for data in (unknown, crowd.tobytes()))
    assert grid_s > 8 * one_s, f"the grid ({grid_s:.3f} s) must cost far more than one face ({one_s:.3f} s)"
    frame_ms = 1000 * math.sqrt(one_s * grid_s)
    budgets = BudgetConfig(frame_ms=frame_ms, encounter_ms=frame_ms + 100)
    server = serve(
        tmp_path,
        model_store,
        pipeline,
        faces_dir,
        examples / "biden" / "biden.jpg",
        budgets=budgets,
        focus=FocusConfig(enabled=False),
    )
    try:
        frames = [
            make_frame("cam-1", "A1", FLIGHT, 1, unknown),
            make_frame("cam-1", "A1", FLIGHT, 2, crowd.tobytes()),
        ]
        with open_channel(f"127.0.0.1:{server.port}") as channel:
            events = lockstep(channel, frames, hold_s=1.0)  # the worker is done long before the stream ends
    finally:
        server.stop(1.0)
    first, second = observations(events)
    assert second.status == match_pb2.DECISION_BUDGET_EXCEEDED  # the crowd outlasted its budget
    seen = {face.encounter_id for obs in (first, second) for face in obs.faces if face.encounter_id}
    decided = [e.decision for e in events if e.WhichOneof("event") == "decision"]
    assert sorted(d.encounter_id for d in decided) == sorted(seen)
    assert decided[0].decision == match_pb2.DECISION_NO_MATCH


# -- idle and greedy callers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tight(tmp_path_factory, model_store, pipeline, faces_dir, examples):
    """A server with small caps and one-second idle limits."""
    limits = {"max_loads": 1, "stream_idle_s": 1.0, "load_idle_s": 1.0, "client_streams": 2}
    root = tmp_path_factory.mktemp("tight")
    config = service_config(root, max_streams=MAX_STREAMS, **limits)
    server, _ = start_server(config, model_store, calibration_for(pipeline, faces_dir), pipeline)
    with open_channel(f"127.0.0.1:{server.port}") as channel:
        photos = [("obama", (examples / "obama" / "obama.jpg").read_bytes())]
        departure = datetime.now(UTC) + timedelta(hours=2)
        gallery_pb2_grpc.GalleryServiceStub(channel).Load(
            load_requests(FLIGHT, departure, photos), timeout=60
        )
    yield server
    server.stop(1.0)


def test_loads_that_never_commit_are_closed_and_never_starve_health_or_matching(tight, obama):
    """36 uploads that send their header and go quiet made health checks and Match fail before."""
    release = threading.Event()

    def stalled(flight: str) -> Iterator[gallery_pb2.LoadGalleryRequest]:
        yield next(load_requests(flight, datetime.now(UTC) + timedelta(hours=2), []))  # the header only
        release.wait(30)

    target = f"127.0.0.1:{tight.port}"
    channels = [open_channel(target) for _ in range(36)]
    futures = [
        gallery_pb2_grpc.GalleryServiceStub(ch).Load.future(stalled(f"GM9{n:02d}"), timeout=30)
        for n, ch in enumerate(channels)
    ]
    try:
        time.sleep(0.3)
        started = time.monotonic()
        assert health_status(target) == health_pb2.HealthCheckResponse.SERVING
        with open_channel(target) as ch:
            assert unary(ch, make_frame("cam-1", "A1", FLIGHT, 1, obama)).decision == match_pb2.DECISION_MATCH
        assert time.monotonic() - started < 5
        codes = [f.exception().code() for f in futures]  # every load ends on its own, before `release`
    finally:
        release.set()
        for ch in channels:
            ch.close()
    assert codes.count(grpc.StatusCode.DEADLINE_EXCEEDED) == 1  # the one admitted: quiet for 1 s
    assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) == 35  # over max_loads: refused at once
    with open_channel(target) as ch:
        listed = gallery_pb2_grpc.GalleryServiceStub(ch).List(gallery_pb2.ListGalleriesRequest(), timeout=10)
    assert [g.flight_id for g in listed.galleries] == [FLIGHT]  # nothing half-written


def test_idle_camera_streams_are_closed_so_new_cameras_get_in(tight, obama):
    release = threading.Event()

    def quiet() -> Iterator[match_pb2.Frame]:
        release.wait(30)
        return
        yield

    target = f"127.0.0.1:{tight.port}"
    channels = [open_channel(target) for _ in range(MAX_STREAMS)]
    try:
        calls = [match_pb2_grpc.MatchServiceStub(ch).StreamMatch(quiet(), timeout=30) for ch in channels]
        started = time.monotonic()
        codes = []
        for call in calls:
            with pytest.raises(grpc.RpcError) as caught:
                list(call)
            codes.append(caught.value.code())
        assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * MAX_STREAMS
        assert time.monotonic() - started < 5, "closed after the 1 s idle limit, not at the client's deadline"
    finally:
        release.set()
        for ch in channels:
            ch.close()
    with open_channel(target) as ch:  # a camera that does send frames gets in and is decided
        events = lockstep(ch, [make_frame("cam-9", "A1", FLIGHT, 1, obama)])
    assert matched(events) == ["obama"]


def test_reflection_is_off_by_default_and_a_flood_of_it_costs_nothing(tight):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    target = f"127.0.0.1:{tight.port}"
    with open_channel(target) as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        calls = [
            stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            for _ in range(20)
        ]
        for call in calls:
            with pytest.raises(grpc.RpcError) as caught:
                list(call)
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert health_status(target) == health_pb2.HealthCheckResponse.SERVING
