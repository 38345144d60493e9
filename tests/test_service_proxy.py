"""Two replicas behind an L7 gRPC proxy (HAProxy from Debian's packages) on loopback: `gatematch camera`
streams and unary matches go through one address, and both replicas answer. The replicas share one
PostgreSQL gallery store, so a gallery loaded through the proxy (on whichever replica) is known to both."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gatematch.client import load_requests, make_frame, open_channel
from gatematch.facepipeline import FacePipeline
from gatematch.service.server import GateMatchServer, pipeline_config
from gatematch.v1 import gallery_pb2_grpc, match_pb2, match_pb2_grpc
from support.cli import run_gatematch
from support.postgres import need_cluster
from support.proxy import GrpcProxy, start_proxy
from support.server import calibration_for, service_config, start_server

FLIGHT = "GM720"
UNARY_CALLS = 12


def audited(server: GateMatchServer, event: str) -> list[dict]:
    lines = Path(server.config.audit.path).read_text().splitlines()
    return [record for record in map(json.loads, lines) if record["event"] == event]


@pytest.fixture(scope="module")
def proxied(
    tmp_path_factory, postgres_cluster, model_store, faces_dir, examples
) -> Iterator[tuple[GrpcProxy, list[GateMatchServer]]]:
    url = need_cluster(postgres_cluster).database()
    root = tmp_path_factory.mktemp("proxied")
    servers = []
    for name in ("r0", "r1"):
        config = service_config(root / name, url)
        pipeline = FacePipeline.from_pack("default", store=model_store, config=pipeline_config(config))
        servers.append(start_server(config, model_store, calibration_for(pipeline, faces_dir), pipeline)[0])
    try:
        proxy = start_proxy(root, [server.port for server in servers])
    except BaseException:
        for server in servers:
            server.stop(0)
        raise
    with open_channel(proxy.target) as channel:
        photos = [(who, (examples / who / f"{who}.jpg").read_bytes()) for who in ("obama", "biden")]
        departure = datetime.now(UTC) + timedelta(hours=2)
        gallery_pb2_grpc.GalleryServiceStub(channel).Load(
            load_requests(FLIGHT, departure, photos), timeout=120
        )
    deadline = time.monotonic() + 5  # the replica that did not take the Load follows it (within a second)
    while not all(server.ready()[0].store.galleries(FLIGHT) for server in servers):
        assert time.monotonic() < deadline, "a replica never learned of the gallery loaded on the other"
        time.sleep(0.01)
    yield proxy, servers
    proxy.stop()
    for server in servers:
        server.stop(1.0)


def test_unary_matches_through_one_address_are_answered_by_both_replicas(proxied, examples) -> None:
    proxy, servers = proxied
    photo = (examples / "obama" / "obama2.jpg").read_bytes()
    with open_channel(proxy.target) as channel:  # one client channel: one HTTP/2 connection to the proxy
        stub = match_pb2_grpc.MatchServiceStub(channel)
        for sequence in range(UNARY_CALLS):
            frame = make_frame("cam-1", "A1", FLIGHT, sequence, photo)
            response = stub.Match(match_pb2.MatchRequest(frame=frame), timeout=60)
            assert response.decision == match_pb2.DECISION_MATCH
            assert response.candidates[0].traveler_id == "obama"
    answered = [len(audited(server, "match")) for server in servers]
    assert sum(answered) == UNARY_CALLS and min(answered) >= 1, f"matches per replica: {answered}"


def test_camera_streams_through_the_proxy_stay_on_one_replica_and_match(proxied, video_dir) -> None:
    proxy, servers = proxied
    before = [len(audited(server, "encounter")) for server in servers]
    for _ in range(2):  # round robin: the second stream goes to the other replica
        done = run_gatematch(
            "camera",
            "--video",
            str(video_dir / "hieubkvn123_obama.mp4"),
            "--flight",
            FLIGHT,
            "--gate",
            "A1",
            "--fps",
            "5",
            "--seconds",
            "3",
            "--target",
            proxy.target,
            timeout=180,
        )
        assert done.returncode == 0, done.stderr
        assert "MATCH obama" in done.stdout
    encounters = [len(audited(server, "encounter")) - b for server, b in zip(servers, before, strict=True)]
    assert all(count >= 1 for count in encounters), f"encounters per replica: {encounters}"
