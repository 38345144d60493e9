"""Data at rest and accountability, through a real server: the embedded default stores nothing in plaintext,
`gatematch keys rotate` while the server serves, plaintext galleries refused, the retention cap on Load,
expired data unreadable, the retention timer and encounters closed by timeout in the audit trail, and one
intact audit chain for the server and the command line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from gatematch.client import camera_frames, load_requests, make_frame, open_channel
from gatematch.facepipeline import FacePipeline
from gatematch.gallery_store import open_store
from gatematch.keyfile import KeyFile
from gatematch.service.audit import verify_log
from gatematch.service.config import BudgetConfig, RetentionConfig
from gatematch.service.server import pipeline_config
from gatematch.template_crypto import is_encrypted, sealed_key_id
from gatematch.v1 import gallery_pb2, gallery_pb2_grpc, match_pb2, match_pb2_grpc
from support.data import REPO
from support.drafts import draft
from support.postgres import free_port
from support.server import (
    STORE_BACKENDS,
    ServeProcess,
    calibration_for,
    health_status,
    service_config,
    start_server,
    store_url,
)
from support.stores import StoreBackend

FLIGHT = "GM700"


@pytest.fixture(scope="module")
def pipeline(model_store) -> FacePipeline:
    return FacePipeline.from_pack(
        "default", store=model_store, config=pipeline_config(service_config(Path()))
    )


def load(
    target: str, flight: str, photos: list[tuple[str, bytes]], **header
) -> gallery_pb2.LoadGalleryResponse:
    departure = header.pop("departure", datetime.now(UTC) + timedelta(hours=2))
    with open_channel(target) as channel:
        return gallery_pb2_grpc.GalleryServiceStub(channel).Load(
            load_requests(flight, departure, photos, **header), timeout=120
        )


def match(target: str, photo: bytes, flight: str = FLIGHT) -> match_pb2.MatchResponse:
    with open_channel(target) as channel:
        frame = make_frame("cam-1", "A1", flight, 1, photo)
        return match_pb2_grpc.MatchServiceStub(channel).Match(match_pb2.MatchRequest(frame=frame), timeout=30)


def refusal(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def gatematch(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A `gatematch` command as an operator runs it, beside the running server."""
    return subprocess.run(
        [sys.executable, "-m", "gatematch.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
        cwd=REPO,
    )


def records(path: Path, event: str) -> list[dict]:
    return [r for r in map(json.loads, path.read_text().splitlines()) if r["event"] == event]


# -- the embedded default --------------------------------------------------------------------------------


def test_the_embedded_default_stores_nothing_in_plaintext(
    tmp_path: Path, model_dir: Path, examples: Path
) -> None:
    """`gatematch serve` with no config, in a fresh home: it makes its key file (0600) beside the store, and
    no file it writes holds a template in the clear."""
    home = tmp_path / "home"
    data = home / ".local" / "share"
    port = free_port()
    # no --config: the embedded defaults (only the port moved: the default one may be taken on a test machine)
    env = {"HOME": str(home), "GATEMATCH_SERVER_PORT": str(port)}
    server = ServeProcess(None, model_dir, port, tmp_path / "serve.log", env)
    server.env.pop("XDG_DATA_HOME", None)
    server.start()
    try:
        photos = [(who, (examples / who / f"{who}.jpg").read_bytes()) for who in ("obama", "biden")]
        load(server.target, FLIGHT, photos)
        assert match(server.target, (examples / "obama" / "obama2.jpg").read_bytes()).decision == (
            match_pb2.DECISION_MATCH
        )
    finally:
        server.stop()
    root = data / "gatematch"
    key_file = root / "template-keys.json"
    assert key_file.stat().st_mode & 0o777 == 0o600
    store = open_store(root / "galleries", KeyFile(key_file))
    (info,) = store.galleries()
    assert info.encrypted and info.key_id == KeyFile(key_file).current().key_id
    templates = store.load(info.gallery_id).vectors()
    files = [p for p in root.rglob("*") if p.is_file() and p != key_file]
    assert any(p.suffix == ".enc" for p in files) and not any(p.name.endswith(".faiss") for p in files)
    for path in files:
        data_bytes = path.read_bytes()
        assert b"IxFI" not in data_bytes, f"{path}: a plaintext FAISS index"
        for template in templates:
            assert template.astype("<f4").tobytes() not in data_bytes, f"{path}: a template in the clear"
    assert verify_log(root / "audit.jsonl").ok


# -- one server for the rest: the embedded store under a test folder -------------------------------------------


@pytest.fixture(scope="module")
def service(tmp_path_factory, model_store, faces_dir, examples, pipeline):
    root = tmp_path_factory.mktemp("at-rest")
    server, _ = start_server(
        service_config(root), model_store, calibration_for(pipeline, faces_dir), pipeline
    )
    server.root = root
    server.target = f"127.0.0.1:{server.port}"
    load(server.target, FLIGHT, [("obama", (examples / "obama" / "obama.jpg").read_bytes())])
    yield server
    server.stop(1.0)


def test_load_is_refused_beyond_the_retention_cap_or_the_horizon(service, examples) -> None:
    photos = [("biden", (examples / "biden" / "biden.jpg").read_bytes())]
    too_long = refusal(lambda: load(service.target, "GM701", photos, retention=timedelta(hours=48)))
    assert too_long.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "retention 48 h after departure is outside (0, 12 h]" in too_long.details()
    too_early = refusal(
        lambda: load(service.target, "GM701", photos, departure=datetime.now(UTC) + timedelta(days=30))
    )
    assert (
        too_early.code() == grpc.StatusCode.INVALID_ARGUMENT
        and "more than 336 h ahead" in too_early.details()
    )
    assert not [g for g in service.ready()[0].store.galleries() if g.flight_id == "GM701"], "nothing written"
    shorter = load(service.target, "GM701", photos, retention=timedelta(hours=6))
    assert shorter.gallery.expires_at.ToDatetime(UTC) - shorter.gallery.departure_utc.ToDatetime(UTC) == (
        timedelta(hours=6)
    )


def write_expired(store, flight: str):
    """A gallery of `flight` loaded before its departure 13 h ago: expired an hour ago (12 h retention)."""
    departed = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=13)
    gone = replace(draft(flight=flight, tag="GONE")[0], departure=departed)
    store.write(gone, now=departed - timedelta(hours=1))
    return gone


def assert_purge_audited(audit: Path, gallery_id: str, flight: str) -> None:
    """One purge record of the gallery in the audit trail, signed by the retention timer."""
    (purge,) = [r for r in records(audit, "gallery.purge") if r["detail"] == gallery_id]
    assert purge["client"] == "retention-timer" and purge["flight_id"] == flight


def test_expired_data_is_unreadable_and_the_timer_purge_is_audited(service, examples) -> None:
    gone = write_expired(service.ready()[0].store, "GM702")
    with open_channel(service.target) as channel:
        stub = gallery_pb2_grpc.GalleryServiceStub(channel)
        got = refusal(lambda: stub.Get(gallery_pb2.GetGalleryRequest(flight_id="GM702"), timeout=10))
        assert got.code() == grpc.StatusCode.FAILED_PRECONDITION and "expired" in got.details()
        listed = stub.List(gallery_pb2.ListGalleriesRequest(), timeout=10)
        assert "GM702" not in {g.flight_id for g in listed.galleries}
    matched = refusal(
        lambda: match(service.target, (examples / "obama" / "obama2.jpg").read_bytes(), "GM702")
    )
    assert matched.code() == grpc.StatusCode.FAILED_PRECONDITION

    assert service.purge_expired() == [gone.gallery_id]
    assert_purge_audited(service.root / "audit.jsonl", gone.gallery_id, "GM702")


def test_the_retention_timer_purges_expired_data_on_its_own(
    tmp_path: Path, model_store, faces_dir, pipeline
) -> None:
    """Nobody calls a purge here: the server's timer (`[retention] purge_every_s`) deletes the expired
    gallery within a few periods and signs the deletion in the audit trail."""
    config = replace(service_config(tmp_path), retention=RetentionConfig(purge_every_s=0.2))
    server, _ = start_server(config, model_store, calibration_for(pipeline, faces_dir), pipeline)
    try:
        store = server.ready()[0].store
        gone = write_expired(store, "GM704")
        deadline = time.monotonic() + 10
        while store.galleries("GM704") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not store.galleries("GM704"), "the timer never purged the expired gallery"
    finally:
        server.stop(1.0)
    assert_purge_audited(tmp_path / "audit.jsonl", gone.gallery_id, "GM704")


def test_a_plaintext_gallery_is_refused_until_keys_rotate_encrypts_it(service, examples) -> None:
    """A gallery left in plaintext (an earlier gatematch, or written without keys) is quarantined with a clear
    status while the other flights serve; `gatematch keys rotate` encrypts it while the server runs."""
    location = service.config.store.gallery_dir
    plain = draft(flight="GM703", tag="P")[0]
    plain = replace(plain, departure=datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(hours=2))
    open_store(location).write(plain)  # no keys: plaintext
    photo = (examples / "obama" / "obama2.jpg").read_bytes()
    for _ in range(2):
        refused = refusal(lambda: match(service.target, photo, "GM703"))
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "stored in plaintext" in refused.details() and location not in refused.details()
    assert match(service.target, photo).decision == match_pb2.DECISION_MATCH, "the other flights serve"

    audit = {"GATEMATCH_AUDIT_PATH": str(service.root / "audit.jsonl")}
    done = gatematch("keys", "rotate", "--store", location, "--keys", service.config.keys.file, env=audit)
    assert done.returncode == 0, done.stderr
    assert "galleries resealed under key" in done.stdout and plain.gallery_id in done.stdout
    wrong = refusal(lambda: match(service.target, photo, "GM703"))  # now it loads: a synthetic embedder
    assert wrong.code() == grpc.StatusCode.FAILED_PRECONDITION and "plaintext" not in wrong.details()
    assert records(service.root / "audit.jsonl", "keys.rotate")[-1]["client"].startswith("cli:")


def test_an_encounter_closed_by_timeout_names_its_camera_and_gate(service, video_dir) -> None:
    """A traveler not on the flight is never matched: the encounter ends when the face is gone, decided by the
    stream's timer while the camera sends nothing, and its audit record says which camera and gate."""
    finished = threading.Event()

    def frames():
        # three frames: fewer than the last checkpoint (5 usable frames), so no frame can decide it
        video = video_dir / "hieubkvn123_biden.mp4"  # biden: not on this flight
        yield from camera_frames(video, "cam-77", "B9", FLIGHT, fps=5, seconds=0.6)
        time.sleep(3.0)  # the camera is silent: only the stream's timer can close the encounter now
        finished.set()

    decided_while_silent = []
    with open_channel(service.target) as channel:
        for event in match_pb2_grpc.MatchServiceStub(channel).StreamMatch(frames(), timeout=60):
            if event.WhichOneof("event") == "decision":
                decided_while_silent.append(not finished.is_set())
    assert decided_while_silent and all(decided_while_silent)
    encounters = [r for r in records(service.root / "audit.jsonl", "encounter") if r["camera_id"] == "cam-77"]
    assert encounters and all((r["gate_id"], r["flight_id"]) == ("B9", FLIGHT) for r in encounters)
    assert {r["decision"] for r in encounters} == {"NO_MATCH"}


def test_the_server_and_the_commands_leave_one_intact_audit_chain(service) -> None:
    """Runs after the others in this module: their records, from the server and from `gatematch`."""
    path = service.root / "audit.jsonl"
    report = verify_log(path)
    assert report.ok, [str(p) for p in report.problems]
    events = {r["event"] for r in map(json.loads, path.read_text().splitlines())}
    assert {"gallery.load", "match", "encounter", "gallery.purge", "keys.rotate"} <= events
    done = gatematch("audit", "verify", str(path))
    assert done.returncode == 0 and "audit chain intact" in done.stdout


# -- key rotation while serving, on both store backends ---------------------------------------------------------


@pytest.mark.parametrize("backend", STORE_BACKENDS)
def test_keys_rotate_while_the_server_serves(
    backend: str, tmp_path: Path, model_store, faces_dir, examples, pipeline, postgres_cluster
) -> None:
    url = store_url(backend, postgres_cluster)
    # a generous frame budget: on a shared 2-core box the command starting beside the server could push a
    # frame past 500 ms (BUDGET_EXCEEDED), which would say nothing about the rotation
    config = replace(
        service_config(tmp_path, url), budgets=BudgetConfig(frame_ms=10_000, encounter_ms=20_000)
    )
    server, _ = start_server(config, model_store, calibration_for(pipeline, faces_dir), pipeline)
    target = f"127.0.0.1:{server.port}"
    location = config.store.location
    key_file = config.keys.file
    env = {"GATEMATCH_AUDIT_PATH": str(tmp_path / "audit.jsonl")}
    try:
        load(target, FLIGHT, [("obama", (examples / "obama" / "obama.jpg").read_bytes())])
        old_key = KeyFile(key_file).current().key_id
        photo = (examples / "obama" / "obama2.jpg").read_bytes()
        answers: list[str] = []
        stop = threading.Event()

        def keep_matching() -> None:
            while not stop.is_set():
                try:
                    answers.append(match_pb2.Decision.Name(match(target, photo).decision))
                except grpc.RpcError as exc:
                    answers.append(f"{exc.code().name}: {exc.details()}")

        matcher = threading.Thread(target=keep_matching)
        matcher.start()
        try:
            time.sleep(0.5)
            rotated = gatematch(
                "keys", "rotate", "--new-key", "--store", location, "--keys", key_file, env=env
            )
            time.sleep(1.5)  # a PostgreSQL replica follows within a second
        finally:
            stop.set()
            matcher.join()
        assert rotated.returncode == 0, rotated.stderr
        assert len(answers) >= 5 and set(answers) == {"DECISION_MATCH"}, answers
        new_key = KeyFile(key_file).current().key_id
        assert new_key != old_key and f"resealed under key {new_key}" in rotated.stdout

        retired = gatematch("keys", "retire", old_key, "--store", location, "--keys", key_file, env=env)
        assert retired.returncode == 0, retired.stderr
        assert [e.key_id for e in KeyFile(key_file).entries] == [new_key]
        assert match(target, photo).decision == match_pb2.DECISION_MATCH
        blob = StoreBackend(location).index_bytes(server.ready()[0].store.galleries(FLIGHT)[0].gallery_id)
        assert is_encrypted(blob) and sealed_key_id(blob) == new_key
        listed = gatematch("keys", "list", "--store", location, "--keys", key_file, "--json", env=env)
        assert json.loads(listed.stdout)["keys"] == [
            {"id": new_key, "created": KeyFile(key_file).entries[0].created, "current": True, "galleries": 1}
        ]
        wrong = gatematch("keys", "retire", new_key, "--store", location, "--keys", key_file, env=env)
        assert (
            wrong.returncode == 2
            and wrong.stderr.count("\n") == 1
            and "still seals 1 galleries" in wrong.stderr
        )
        missing = gatematch(
            "keys", "rotate", "--store", location, "--keys", str(tmp_path / "nope.json"), env=env
        )
        assert (
            missing.returncode == 2 and "no key file at" in missing.stderr and missing.stderr.count("\n") == 1
        )
        trail = verify_log(tmp_path / "audit.jsonl")
        assert trail.ok
        events = [r["event"] for r in map(json.loads, (tmp_path / "audit.jsonl").read_text().splitlines())]
        assert {"keys.create", "keys.rotate", "keys.retire", "match"} <= set(events)
        assert health_status(target) == health_pb2.HealthCheckResponse.SERVING
    finally:
        server.stop(1.0)
