"""Two gatematch servers on loopback share one PostgreSQL (a real throwaway cluster): replica A is a separate
`gatematch serve` process (so it can be killed with SIGKILL), replica B runs in this process.

A gallery loaded through A is matched through B within a second; a delete through A is refused by B within a
second; A killed in the middle of a Load leaves B (and A after a restart) with the previous version and no
partial one; B answers from its galleries in memory while PostgreSQL restarts, its health says the database is
gone, and it catches up afterwards. B writes its audit trail to the append-only table of the same database.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gatematch.client import load_requests, make_frame, open_channel
from gatematch.facepipeline import FacePipeline
from gatematch.service.config import AuditConfig
from gatematch.service.server import STORE_HEALTH, pipeline_config
from gatematch.v1 import gallery_pb2, gallery_pb2_grpc, match_pb2, match_pb2_grpc
from support.postgres import PostgresCluster, free_port
from support.server import ServeProcess, calibration_for, key_file_for, service_config, start_server

WITHIN_S = 1.0


def match(target: str, photo: bytes, flight: str) -> match_pb2.MatchResponse:
    with open_channel(target) as channel:
        frame = make_frame("cam-1", "A1", flight, 1, photo)
        return match_pb2_grpc.MatchServiceStub(channel).Match(match_pb2.MatchRequest(frame=frame), timeout=30)


def answer(target: str, photo: bytes, flight: str) -> str:
    """The decision's name, or the status code's name when the call is refused."""
    try:
        return match_pb2.Decision.Name(match(target, photo, flight).decision)
    except grpc.RpcError as exc:
        return exc.code().name


def until(target: str, photo: bytes, flight: str, wanted: str, timeout: float) -> float:
    """Seconds until the replica at `target` answers `wanted` for this photo; fails after `timeout`."""
    start = time.monotonic()
    while (got := answer(target, photo, flight)) != wanted:
        if time.monotonic() - start > timeout:
            pytest.fail(f"{target} still answers {got}, not {wanted}, after {timeout} s")
    return time.monotonic() - start


def load(target: str, flight: str, photos: list[tuple[str, bytes]]) -> gallery_pb2.LoadGalleryResponse:
    with open_channel(target) as channel:
        departure = datetime.now(UTC) + timedelta(hours=2)
        return gallery_pb2_grpc.GalleryServiceStub(channel).Load(
            load_requests(flight, departure.replace(second=0, microsecond=0), photos), timeout=120
        )


def health(target: str, service: str = "") -> int:
    with open_channel(target) as channel:
        request = health_pb2.HealthCheckRequest(service=service)
        return health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status


class Replicas:
    def __init__(self, a: ServeProcess, b, url: str) -> None:
        self.a, self.b, self.url = a, b, url

    @property
    def b_target(self) -> str:
        return f"127.0.0.1:{self.b.port}"


@pytest.fixture(scope="module")
def replicas(tmp_path_factory, postgres_cluster, model_dir, model_store, faces_dir) -> Iterator[Replicas]:
    from support.postgres import need_cluster

    cluster = need_cluster(postgres_cluster)
    url = cluster.database()
    root = tmp_path_factory.mktemp("replicas")
    port = free_port()
    config_file = root / "a.toml"
    config_file.write_text(
        f'[server]\nport = {port}\nworkers = 1\n[store]\nurl = "{url}"\n[audit]\npath = "{root / "a-audit.jsonl"}"\n'
        f'[keys]\nfile = "{key_file_for(root, url)}"\n'
    )
    a = ServeProcess(config_file, model_dir, port, root / "a.log")
    a.start()
    config = service_config(root / "b", url)
    config = replace(config, audit=AuditConfig(path=str(root / "b-audit.jsonl"), sink="store"))
    pipeline = FacePipeline.from_pack("default", store=model_store, config=pipeline_config(config))
    b, _ = start_server(config, model_store, calibration_for(pipeline, faces_dir), pipeline)
    yield Replicas(a, b, url)
    b.stop(1.0)
    a.stop()


@pytest.fixture(scope="module")
def photos(examples) -> dict[str, bytes]:
    return {
        name: (examples / person / name).read_bytes()
        for person, name in (
            ("obama", "obama.jpg"),
            ("obama", "obama2.jpg"),
            ("biden", "biden.jpg"),
            ("biden", "biden2.jpg"),
        )
    }


def test_a_gallery_loaded_through_a_is_matched_through_b_within_a_second(replicas: Replicas, photos) -> None:
    assert answer(replicas.b_target, photos["obama2.jpg"], "GM710") == "NOT_FOUND"
    response = load(replicas.a.target, "GM710", [("obama", photos["obama.jpg"])])
    assert response.gallery.traveler_count == 1
    waited = until(replicas.b_target, photos["obama2.jpg"], "GM710", "DECISION_MATCH", WITHIN_S)
    print(f"B matched {waited * 1000:.0f} ms after A's Load returned")


def test_a_delete_through_a_is_refused_by_b_within_a_second(replicas: Replicas, photos) -> None:
    load(replicas.a.target, "GM711", [("obama", photos["obama.jpg"])])
    until(replicas.b_target, photos["obama2.jpg"], "GM711", "DECISION_MATCH", WITHIN_S)
    with open_channel(replicas.a.target) as channel:
        request = gallery_pb2.DeleteGalleryRequest(flight_id="GM711", reason="test")
        assert gallery_pb2_grpc.GalleryServiceStub(channel).Delete(request, timeout=30).deleted
    waited = until(replicas.b_target, photos["obama2.jpg"], "GM711", "NOT_FOUND", WITHIN_S)
    print(f"B refused {waited * 1000:.0f} ms after A's Delete returned")


def test_a_killed_mid_load_leaves_the_previous_version_on_b_and_after_restart(
    replicas: Replicas, photos
) -> None:
    first = load(replicas.a.target, "GM712", [("obama", photos["obama.jpg"])]).gallery
    until(replicas.b_target, photos["obama2.jpg"], "GM712", "DECISION_MATCH", WITHIN_S)
    sent = threading.Event()

    def dying_load() -> Iterator[gallery_pb2.LoadGalleryRequest]:
        departure = first.departure_utc.ToDatetime(UTC)
        requests = load_requests("GM712", departure, [("biden", photos["biden.jpg"])] * 3, chunk_bytes=1)
        yield next(requests)  # header
        yield next(requests)  # a first photo: A enrolls it
        sent.set()
        time.sleep(30)  # A is killed while it waits for the rest

    errors: list[grpc.RpcError] = []

    def client() -> None:
        with open_channel(replicas.a.target) as channel:
            try:
                gallery_pb2_grpc.GalleryServiceStub(channel).Load(dying_load(), timeout=60)
            except grpc.RpcError as exc:
                errors.append(exc)

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    assert sent.wait(30)
    time.sleep(0.5)
    replicas.a.kill()
    thread.join(60)
    assert errors and errors[0].code() == grpc.StatusCode.UNAVAILABLE

    assert answer(replicas.b_target, photos["obama2.jpg"], "GM712") == "DECISION_MATCH"
    assert answer(replicas.b_target, photos["biden2.jpg"], "GM712") != "DECISION_MATCH"
    with open_channel(replicas.b_target) as channel:
        info = gallery_pb2_grpc.GalleryServiceStub(channel).Get(
            gallery_pb2.GetGalleryRequest(flight_id="GM712")
        )
    assert (info.version, info.template_count) == (first.version, first.template_count)
    replicas.a.start()
    assert answer(replicas.a.target, photos["obama2.jpg"], "GM712") == "DECISION_MATCH"
    with psycopg.connect(replicas.url) as conn:
        rows = conn.execute(
            "SELECT COUNT(*) FROM gatematch_templates WHERE gallery_id LIKE 'GM712_%%'"
        ).fetchone()[0]
    assert rows == first.template_count, "no partial version's rows"


def test_b_answers_from_memory_while_postgresql_restarts_then_catches_up(
    replicas: Replicas, photos, postgres_cluster: PostgresCluster
) -> None:
    load(replicas.a.target, "GM713", [("obama", photos["obama.jpg"])])
    until(replicas.b_target, photos["obama2.jpg"], "GM713", "DECISION_MATCH", WITHIN_S)
    serving, not_serving = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
    assert health(replicas.b_target, STORE_HEALTH) == serving
    postgres_cluster.stop("fast")
    try:
        deadline = time.monotonic() + 15
        while health(replicas.b_target, STORE_HEALTH) != not_serving:
            assert time.monotonic() < deadline, "health never said the database is gone"
            time.sleep(0.1)
        assert health(replicas.b_target) == serving, "the replica still matches: it stays in rotation"
        for _ in range(5):
            assert answer(replicas.b_target, photos["obama2.jpg"], "GM713") == "DECISION_MATCH"
        with pytest.raises(grpc.RpcError) as refused:
            load(replicas.b_target, "GM714", [("obama", photos["obama.jpg"])])
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        postgres_cluster.start()
    deadline = time.monotonic() + 15
    while health(replicas.b_target, STORE_HEALTH) != serving:
        assert time.monotonic() < deadline, "never caught up"
        time.sleep(0.1)
    load(replicas.a.target, "GM715", [("biden", photos["biden.jpg"])])
    until(replicas.b_target, photos["biden2.jpg"], "GM715", "DECISION_MATCH", WITHIN_S)


def test_b_audits_into_an_append_only_table_of_the_same_database(replicas: Replicas) -> None:
    """B's matches are rows of gatematch_audit; the five it answered while PostgreSQL was down went to its
    audit file instead (none lost); nobody can rewrite the table."""
    with psycopg.connect(replicas.url, autocommit=True) as conn:
        events = dict(conn.execute("SELECT event, COUNT(*) FROM gatematch_audit GROUP BY event").fetchall())
        assert events.get("match", 0) >= 5
        fallback = [json.loads(line) for line in Path(replicas.b.config.audit.path).read_text().splitlines()]
        assert [r["event"] for r in fallback] == ["match"] * 5 and {r["flight_id"] for r in fallback} == {
            "GM713"
        }
        for statement in ("UPDATE gatematch_audit SET decision = 'MATCH'", "DELETE FROM gatematch_audit"):
            with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                conn.execute(statement)
