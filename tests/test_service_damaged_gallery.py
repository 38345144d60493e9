"""A damaged gallery never takes the service down: at start (and at reload) it is quarantined and logged with
why, its flight answers DATA_LOSS with a clear message, and every other flight keeps matching. A damaged SQLite
database is a clear UNAVAILABLE per call, never an INTERNAL error or a dead server. Both store backends."""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from gatematch.client import load_requests, make_frame, open_channel
from gatematch.facepipeline import FacePipeline
from gatematch.gallery_store import is_database_url
from gatematch.gallery_store_sqlite import DB_NAME
from gatematch.service.server import pipeline_config
from gatematch.v1 import gallery_pb2_grpc, match_pb2, match_pb2_grpc
from support.server import calibration_for, health_status, service_config, start_server
from support.stores import StoreBackend
from test_gallery_store import DAMAGE, corrupt_pages


@pytest.fixture(scope="module")
def pipeline(model_store) -> FacePipeline:
    return FacePipeline.from_pack(
        "default", store=model_store, config=pipeline_config(service_config(Path()))
    )


def match(target: str, photo: bytes, flight: str) -> match_pb2.MatchResponse:
    with open_channel(target) as channel:
        frame = make_frame("cam-1", "A1", flight, 1, photo)
        return match_pb2_grpc.MatchServiceStub(channel).Match(match_pb2.MatchRequest(frame=frame), timeout=30)


def serve(tmp_path, store_location, model_store, pipeline, faces_dir):
    url = store_location if is_database_url(store_location) else ""
    config = service_config(tmp_path, url)
    if not url:
        config = replace(config, store=replace(config.store, gallery_dir=store_location))
    return start_server(config, model_store, calibration_for(pipeline, faces_dir), pipeline)[0]


@pytest.mark.parametrize("damage", ["truncated", "deleted", "undecryptable"])
def test_a_damaged_gallery_is_quarantined_at_start_and_the_other_flights_serve(
    tmp_path,
    store_location,
    postgres_cluster,
    model_store,
    pipeline,
    faces_dir,
    examples,
    damage,
    caplog,
    monkeypatch,
) -> None:
    monkeypatch.setenv("GATEMATCH_TEMPLATE_KEY", "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=")
    server = serve(tmp_path / "first", store_location, model_store, pipeline, faces_dir)
    target = f"127.0.0.1:{server.port}"
    departure = datetime.now(UTC) + timedelta(hours=2)
    with open_channel(target) as channel:
        stub = gallery_pb2_grpc.GalleryServiceStub(channel)
        for flight, who in (("GM801", "obama"), ("GM802", "biden")):
            photos = [(who, (examples / who / f"{who}.jpg").read_bytes())]
            stub.Load(load_requests(flight, departure, photos), timeout=120)
    server.stop(1.0)
    backend = StoreBackend(store_location, postgres_cluster if is_database_url(store_location) else None)
    broken = next(g.gallery_id for g in backend.open().galleries() if g.flight_id == "GM801")
    DAMAGE[damage](backend, broken)

    with caplog.at_level(logging.ERROR):
        server = serve(tmp_path / "second", store_location, model_store, pipeline, faces_dir)
    try:
        target = f"127.0.0.1:{server.port}"
        assert health_status(target) == health_pb2.HealthCheckResponse.SERVING
        quarantined = [r for r in caplog.records if r.getMessage() == "gallery quarantined"]
        assert [r.gallery for r in quarantined] == [broken] and quarantined[0].reason
        healthy = match(target, (examples / "biden" / "biden2.jpg").read_bytes(), "GM802")
        assert healthy.decision == match_pb2.DECISION_MATCH
        expected = grpc.StatusCode.UNAVAILABLE if damage == "undecryptable" else grpc.StatusCode.DATA_LOSS
        for _ in range(2):
            with pytest.raises(grpc.RpcError) as refused:
                match(target, (examples / "obama" / "obama2.jpg").read_bytes(), "GM801")
            assert refused.value.code() == expected and refused.value.details()
            assert str(backend.location) not in refused.value.details(), (
                "no store location in a remote message"
            )
        with open_channel(target) as channel:  # reloading the flight replaces the damaged version
            photos = [("obama", (examples / "obama" / "obama.jpg").read_bytes())]
            gallery_pb2_grpc.GalleryServiceStub(channel).Load(
                load_requests("GM801", departure, photos, chunk_bytes=1), timeout=120
            )
        assert match(target, (examples / "obama" / "obama2.jpg").read_bytes(), "GM801").decision == (
            match_pb2.DECISION_MATCH
        )
    finally:
        server.stop(1.0)


def test_a_damaged_sqlite_database_is_a_clear_status_not_a_dead_server(
    tmp_path, model_store, pipeline, faces_dir, examples
) -> None:
    location = str(tmp_path / "store")
    server = serve(tmp_path / "first", location, model_store, pipeline, faces_dir)
    with open_channel(f"127.0.0.1:{server.port}") as channel:
        photos = [("obama", (examples / "obama" / "obama.jpg").read_bytes())]
        departure = datetime.now(UTC) + timedelta(hours=2)
        gallery_pb2_grpc.GalleryServiceStub(channel).Load(
            load_requests("GM803", departure, photos), timeout=120
        )
    corrupt_pages(tmp_path / "store" / DB_NAME)
    try:
        with pytest.raises(grpc.RpcError) as refused:
            match(f"127.0.0.1:{server.port}", (examples / "obama" / "obama2.jpg").read_bytes(), "GM803")
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "damaged or unreadable" in refused.value.details() and location not in refused.value.details()
        assert health_status(f"127.0.0.1:{server.port}") == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(1.0)
