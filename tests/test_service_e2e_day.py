"""End to end, the gate day as it happens: a real server on 127.0.0.1 with an authorization policy (bearer
tokens), real models, photos from ../shared/faces/examples6, on both gallery store backends.

- a late passenger added by a delta is matched on the next frame, and only their photo was embedded; a removed
  no-show no longer matches; versions and the audit trail follow each change;
- an arrival and a departure of one flight number on one day are two galleries; each frame is matched against
  the one it names, and one that does not say is refused with a clear status;
- a gate reassigned at run time: its camera matches the new flight at once (on another replica too) and is
  refused the old one; the audit trail says who did it;
- 1:1 verification against a reference photo or template: MATCH for one person, NO_MATCH for two, with the
  calibrated false-match rate, and nothing of the reference on disk;
- the command-line clients' JSON lines and exit codes.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from google.protobuf import json_format

from gatematch.client import (
    call_metadata,
    camera_frames,
    load_requests,
    make_frame,
    open_channel,
    update_requests,
    verify_stream_requests,
)
from gatematch.facepipeline import FacePipeline
from gatematch.gallery import ARRIVAL, DEPARTURE
from gatematch.service.config import AuditConfig, AuthConfig
from gatematch.service.security import token_digest
from gatematch.service.server import pipeline_config
from gatematch.v1 import (
    flight_pb2,
    gallery_pb2,
    gallery_pb2_grpc,
    gate_pb2,
    gate_pb2_grpc,
    match_pb2,
    match_pb2_grpc,
)
from support.cli import run_gatematch
from support.server import STORE_BACKENDS, calibration_for, service_config, start_server, store_url

TOKENS = {name: f"{name}-token" for name in ("cam-a1", "ops", "gates", "gates-gm303", "analyst")}
POLICY = f"""
[clients.cam-a1]
roles = ["camera"]
token_sha256 = "{token_digest(TOKENS["cam-a1"])}"
[clients.ops]
roles = ["gallery-admin"]
token_sha256 = "{token_digest(TOKENS["ops"])}"
[clients.gates]
roles = ["gate-admin"]
token_sha256 = "{token_digest(TOKENS["gates"])}"
[clients.gates-gm303]
roles = ["gate-admin"]
flights = ["GM303"]
token_sha256 = "{token_digest(TOKENS["gates-gm303"])}"
[clients.analyst]
roles = ["analyst"]
token_sha256 = "{token_digest(TOKENS["analyst"])}"
[cameras]
cam-a1 = "A1"
[gates]
A1 = ["GM101", "GM202"]
B2 = []
"""
BOARDING = {  # GM101's passengers as loaded: traveler -> enrollment photo
    "obama": "obama/obama.jpg",
    "biden": "biden/biden.jpg",
    "rose_leslie": "rose_leslie/img1.jpg",
    "lin_manuel_miranda": "lin_manuel_miranda/lin-manuel-miranda.png",
}
LATE = ("alex_lacamoire", "alex_lacamoire/alex-lacamoire.png")  # checks in late: added by a delta
LATE_PROBE = "alex_lacamoire/alex_lacamoire_test1.jpg"


@pytest.fixture(scope="module", params=STORE_BACKENDS)
def day(request, tmp_path_factory, model_store, faces_dir, examples, postgres_cluster):
    root = tmp_path_factory.mktemp("day")
    (root / "policy.toml").write_text(POLICY)
    url = store_url(request.param, postgres_cluster)
    config = service_config(root, url)
    config = replace(config, auth=AuthConfig(policy_file=str(root / "policy.toml")))
    pipeline = FacePipeline.from_pack("default", store=model_store, config=pipeline_config(config))
    calibration = calibration_for(pipeline, faces_dir)
    server, _ = start_server(config, model_store, calibration, pipeline)
    server.root, server.pipeline, server.calibration, server.model_store = (
        root,
        pipeline,
        calibration,
        model_store,
    )
    server.target = f"127.0.0.1:{server.port}"
    with open_channel(server.target) as channel:
        photos = [(who, (examples / photo).read_bytes()) for who, photo in BOARDING.items()]
        server.loaded = load(channel, "GM101", datetime.now(UTC) + timedelta(hours=2), photos)
    yield server
    server.stop(1.0)


def as_(name: str) -> tuple[tuple[str, str], ...]:
    return call_metadata(TOKENS[name])


def load(channel, flight: str, scheduled: datetime, photos, direction: str = DEPARTURE):
    stub = gallery_pb2_grpc.GalleryServiceStub(channel)
    return stub.Load(
        load_requests(flight, scheduled, photos, direction=direction), metadata=as_("ops"), timeout=120
    )


def match(channel, examples: Path, photo: str, flight: str, **names) -> match_pb2.MatchResponse:
    frame = make_frame("cam-a1", "A1", flight, 1, (examples / photo).read_bytes(), **names)
    return match_pb2_grpc.MatchServiceStub(channel).Match(
        match_pb2.MatchRequest(frame=frame), metadata=as_("cam-a1"), timeout=30
    )


def matched(response: match_pb2.MatchResponse) -> str | None:
    return response.candidates[0].traveler_id if response.decision == match_pb2.DECISION_MATCH else None


def refused(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def audited(server, event: str) -> list[dict]:
    lines = Path(server.config.audit.path).read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["event"] == event]


# -- gallery deltas ----------------------------------------------------------------------------------------


def test_a_late_passenger_added_by_delta_is_matched_on_the_next_frame_with_no_other_template_recomputed(
    day, examples, monkeypatch
):
    plane, _ = day.ready()
    first = day.loaded.gallery
    gallery_id = plane.find("GM101").gallery_id
    before = plane.store.load(gallery_id)
    with open_channel(day.target) as channel:
        assert matched(match(channel, examples, LATE_PROBE, "GM101")) is None, "not on the flight yet"
        embedder = day.pipeline.embedder
        embedded: list[int] = []
        real_embed = embedder.embed
        monkeypatch.setattr(embedder, "embed", lambda crops: embedded.append(len(crops)) or real_embed(crops))
        stub = gallery_pb2_grpc.GalleryServiceStub(channel)
        photos = [(LATE[0], (examples / LATE[1]).read_bytes())]
        added = stub.Update(update_requests("GM101", photos, reason="late check-in"), metadata=as_("ops"))
        assert sum(embedded) == 1, f"only the late passenger's photo is embedded, got {embedded}"
        monkeypatch.undo()
        assert list(added.added) == [LATE[0]] and not added.unchanged and not added.rejected
        assert int(added.gallery.version) == int(first.version) + 1
        assert added.gallery.traveler_count == first.traveler_count + 1
        assert added.gallery.content_hash != first.content_hash
        assert matched(match(channel, examples, LATE_PROBE, "GM101")) == LATE[0], "matched on the next frame"
        after = plane.store.load(gallery_id)
        kept = before.index.ntotal
        assert (after.vectors()[:kept] == before.vectors()).all(), (
            "the other templates are carried over bit for bit"
        )

        done = run_gatematch(
            "update-gallery",
            "--flight",
            "GM101",
            "--remove",
            "biden",
            "--reason",
            "no-show",
            "--target",
            day.target,
            "--token",
            TOKENS["ops"],
        )
        assert done.returncode == 0, done.stderr
        removed = json_format.Parse(done.stdout, gallery_pb2.UpdateGalleryResponse())
        assert (
            list(removed.removed) == ["biden"]
            and int(removed.gallery.version) == int(added.gallery.version) + 1
        )
        assert matched(match(channel, examples, "biden/biden2.jpg", "GM101")) is None, (
            "a no-show no longer matches"
        )
        assert matched(match(channel, examples, "obama/obama3.jpg", "GM101")) == "obama"
        current = stub.Get(gallery_pb2.GetGalleryRequest(flight_id="GM101"), metadata=as_("ops"))
        assert (
            current.version == removed.gallery.version
            and current.content_hash == removed.gallery.content_hash
        )
        error = refused(
            lambda: stub.Update(update_requests("GM101", removals=["nobody"]), metadata=as_("ops"))
        )
        assert error.code() == grpc.StatusCode.NOT_FOUND and "nobody" in error.details()
        camera = refused(
            lambda: stub.Update(update_requests("GM101", removals=["obama"]), metadata=as_("cam-a1"))
        )
        assert camera.code() == grpc.StatusCode.PERMISSION_DENIED
    adds, removes = audited(day, "gallery.add"), audited(day, "gallery.remove")
    assert [(r["client"], r["gallery_version"]) for r in adds] == [("ops", added.gallery.version)]
    assert LATE[0] in adds[0]["detail"] and "late check-in" in adds[0]["detail"]
    assert [(r["client"], r["gallery_version"]) for r in removes] == [("ops", removed.gallery.version)]
    assert "biden" in removes[0]["detail"] and "no-show" in removes[0]["detail"]


# -- arrivals and departures -------------------------------------------------------------------------------


def test_an_arrival_and_a_departure_of_one_flight_number_coexist_and_each_frame_gets_its_own(day, examples):
    now = datetime.now(UTC)
    arrived = now - timedelta(hours=1)
    with open_channel(day.target) as channel:
        load(
            channel,
            "GM202",
            now + timedelta(hours=2),
            [("obama", (examples / "obama/obama.jpg").read_bytes())],
        )
        inbound = [("rose_leslie", (examples / "rose_leslie/img1.jpg").read_bytes())]
        arrival = load(channel, "GM202", arrived, inbound, direction=ARRIVAL).gallery
        assert arrival.direction == flight_pb2.DIRECTION_ARRIVAL

        entry = match(
            channel, examples, "rose_leslie/img2.jpg", "GM202", flight_date=arrived.date(), direction=ARRIVAL
        )
        assert matched(entry) == "rose_leslie"
        assert (
            entry.direction == flight_pb2.DIRECTION_ARRIVAL
            and entry.flight_date == arrived.date().isoformat()
        )
        exit_ = match(channel, examples, "obama/obama2.jpg", "GM202", direction=DEPARTURE)
        assert matched(exit_) == "obama" and exit_.direction == flight_pb2.DIRECTION_DEPARTURE
        assert matched(match(channel, examples, "obama/obama2.jpg", "GM202", direction=ARRIVAL)) is None
        assert matched(match(channel, examples, "rose_leslie/img2.jpg", "GM202", direction=DEPARTURE)) is None

        ambiguous = refused(lambda: match(channel, examples, "rose_leslie/img2.jpg", "GM202"))
        assert ambiguous.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "name the flight's date and direction" in ambiguous.details()
        stub = gallery_pb2_grpc.GalleryServiceStub(channel)
        got = stub.Get(
            gallery_pb2.GetGalleryRequest(flight_id="GM202", direction=flight_pb2.DIRECTION_ARRIVAL),
            metadata=as_("ops"),
        )
        assert got.direction == flight_pb2.DIRECTION_ARRIVAL and got.version == arrival.version


# -- gate assignments at run time --------------------------------------------------------------------------


def assign(channel, who: str, gate: str, flight: str, replace: bool = False) -> gate_pb2.AssignGateResponse:
    request = gate_pb2.AssignGateRequest(
        gate_id=gate, flight_id=flight, replace=replace, reason="gate change"
    )
    request.ends_at.FromDatetime(datetime.now(UTC) + timedelta(hours=2))
    return gate_pb2_grpc.GateServiceStub(channel).Assign(request, metadata=as_(who), timeout=30)


def test_reassigning_a_gate_lets_its_camera_match_the_new_flight_at_once_and_refuses_the_old_one(
    day, examples, tmp_path
):
    photo = [("obama", (examples / "obama/obama.jpg").read_bytes())]
    probe = "obama/obama2.jpg"
    replica = None
    with open_channel(day.target) as channel:
        for flight in ("GM303", "GM404"):
            load(channel, flight, datetime.now(UTC) + timedelta(hours=3), photo)
        assert (
            refused(lambda: match(channel, examples, probe, "GM303")).code()
            == grpc.StatusCode.PERMISSION_DENIED
        )
        assert (
            refused(lambda: assign(channel, "ops", "A1", "GM303")).code() == grpc.StatusCode.PERMISSION_DENIED
        )
        scoped = refused(lambda: assign(channel, "gates-gm303", "A1", "GM404"))
        assert scoped.code() == grpc.StatusCode.PERMISSION_DENIED, "a gate admin's flight scope holds"
        unknown = refused(lambda: assign(channel, "gates", "Z9", "GM303"))
        assert unknown.code() == grpc.StatusCode.PERMISSION_DENIED and "policy file" in unknown.details()

        first = assign(channel, "gates", "A1", "GM303").assignment
        assert matched(match(channel, examples, probe, "GM303")) == "obama", "the camera follows at once"

        if day.config.store.url:  # a second replica on the same PostgreSQL store follows the assignments
            config = replace(day.config, audit=AuditConfig(path=str(tmp_path / "b.jsonl")))
            replica, _ = start_server(config, day.model_store, day.calibration, day.pipeline)

        moved = assign(channel, "gates", "A1", "GM404", replace=True)
        assert [a.assignment_id for a in moved.released] == [first.assignment_id]
        assert moved.released[0].released_by == "gates"
        assert matched(match(channel, examples, probe, "GM404")) == "obama"
        old = refused(lambda: match(channel, examples, probe, "GM303"))
        assert old.code() == grpc.StatusCode.PERMISSION_DENIED and "GM303" in old.details()

        if replica is not None:
            with open_channel(f"127.0.0.1:{replica.port}") as other:
                deadline = time.monotonic() + 1.0
                while True:
                    try:
                        assert matched(match(other, examples, probe, "GM404")) == "obama"
                        break
                    except grpc.RpcError:
                        assert time.monotonic() < deadline, "replica B did not follow the reassignment in 1 s"
                        time.sleep(0.05)
                assert (
                    refused(lambda: match(other, examples, probe, "GM303")).code()
                    == grpc.StatusCode.PERMISSION_DENIED
                )
            replica.stop(1.0)

        listed = run_gatematch(
            "gate", "list", "--gate", "A1", "--json", "--target", day.target, "--token", TOKENS["analyst"]
        )
        assert listed.returncode == 0, listed.stderr
        assert [json.loads(line)["flight_id"] for line in listed.stdout.splitlines()] == ["GM404"]
        released = run_gatematch(
            "gate",
            "release",
            str(moved.assignment.assignment_id),
            "--reason",
            "flight left",
            "--target",
            day.target,
            "--token",
            TOKENS["gates"],
        )
        assert released.returncode == 0, released.stderr
        assert (
            refused(lambda: match(channel, examples, probe, "GM404")).code()
            == grpc.StatusCode.PERMISSION_DENIED
        )
    assigns, releases = audited(day, "gate.assign"), audited(day, "gate.release")
    assert [(r["client"], r["gate_id"], r["flight_id"]) for r in assigns] == [
        ("gates", "A1", "GM303"),
        ("gates", "A1", "GM404"),
    ]
    assert [(r["client"], r["flight_id"]) for r in releases] == [("gates", "GM303"), ("gates", "GM404")]
    assert f"replaced by {moved.assignment.assignment_id}" in releases[0]["detail"]
    assert "flight left" in releases[1]["detail"]
    assert any(
        r["event"] == "denied" and r["client"] == "ops"
        for r in map(json.loads, Path(day.config.audit.path).read_text().splitlines())
    )


# -- 1:1 verification --------------------------------------------------------------------------------------


def verify(
    channel, examples: Path, live: str, reference: str | None = None, template=None, photo: bytes = b""
) -> match_pb2.VerifyResponse:
    frame = make_frame("cam-a1", "A1", "", 5, (examples / live).read_bytes())
    request = match_pb2.VerifyRequest(frame=frame)
    if template is not None:
        request.reference_template.CopyFrom(template)
    else:
        request.reference_photo.encoded = photo or (examples / reference).read_bytes()
    return match_pb2_grpc.MatchServiceStub(channel).Verify(request, metadata=as_("cam-a1"), timeout=30)


def files_under(root: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_verify_answers_match_for_one_person_and_no_match_for_two_with_the_calibrated_fmr_and_stores_nothing(
    day, examples
):
    reference = examples / "alex_lacamoire/img1.jpg"  # in no gallery: its template must be nowhere on disk
    face = day.pipeline.analyze(str(reference)).primary()
    template = match_pb2.ReferenceTemplate(
        embedder=day.pipeline.pack.embedder.name,
        embedder_sha256=day.pipeline.pack.embedder.sha256,
        values=face.embedding.tolist(),
    )
    blank = cv2.imencode(".jpg", np.full((240, 320, 3), 128, np.uint8))[1].tobytes()
    before = files_under(day.root)
    with open_channel(day.target) as channel:
        same = verify(channel, examples, LATE_PROBE, "alex_lacamoire/img1.jpg")
        other = verify(channel, examples, "obama/obama2.jpg", "alex_lacamoire/img1.jpg")
        by_template = verify(channel, examples, LATE_PROBE, template=template)
        noface = refused(lambda: verify(channel, examples, LATE_PROBE, photo=blank))
    table = day.calibration
    assert same.decision == match_pb2.DECISION_MATCH and same.sequence == 5
    assert same.false_match_rate == pytest.approx(table.fmr_at(same.score)) and same.false_match_rate <= 1e-3
    assert same.target_fmr == pytest.approx(1e-3) and same.threshold == pytest.approx(
        table.threshold_for_fmr(1e-3)
    )
    assert other.decision == match_pb2.DECISION_NO_MATCH and other.score < same.threshold
    assert (
        other.false_match_rate == pytest.approx(table.fmr_at(other.score)) and other.false_match_rate > 1e-3
    )
    assert by_template.decision == match_pb2.DECISION_MATCH and by_template.score == pytest.approx(
        same.score, abs=0.02
    )
    assert noface.code() == grpc.StatusCode.INVALID_ARGUMENT and "reference photo" in noface.details()

    after = files_under(day.root)
    secrets = [reference.read_bytes()[1000:1064], face.embedding.astype("<f4").tobytes()[:64]]
    changed = {name: data for name, data in after.items() if before.get(name) != data}
    assert changed.keys() <= {day.config.audit.path}, f"only the audit log may change, not {sorted(changed)}"
    assert not any(secret in data for secret in secrets for data in after.values()), "reference on disk"
    records = audited(day, "verify")
    assert [r["decision"] for r in records[-3:]] == ["MATCH", "NO_MATCH", "MATCH"]
    assert all(r["traveler_id"] == "" and len(r["detail"]) < 80 for r in records)


# -- machine-readable clients ------------------------------------------------------------------------------


def test_clients_print_one_json_object_per_line_and_exit_codes_tell_match_no_match_and_error(
    day, examples, video_dir
):
    client = ("--target", day.target, "--token", TOKENS["cam-a1"], "--camera", "cam-a1", "--gate", "A1")
    yes = run_gatematch("match", str(examples / "obama/obama3.jpg"), "--flight", "GM101", "--json", *client)
    missing = run_gatematch(
        "match", str(examples / "obama/obama3.jpg"), "--flight", "GM999", "--json", *client
    )
    bad = run_gatematch(
        "match",
        str(examples / "obama/obama3.jpg"),
        "--flight",
        "GM101",
        "--json",
        "--date",
        "2030-13-01",
        *client,
    )
    assert (yes.returncode, missing.returncode) == (0, 2), (yes.stderr, missing.stderr)
    [answer] = [json.loads(line) for line in yes.stdout.splitlines()]
    assert answer["decision"] == "DECISION_MATCH" and answer["candidates"][0]["traveler_id"] == "obama"
    [error] = [json.loads(line) for line in missing.stdout.splitlines()]
    assert error["error"]["code"] == "PERMISSION_DENIED" and "GM999" in error["error"]["message"]
    assert missing.stderr.startswith("gatematch: error: PERMISSION_DENIED")
    assert bad.returncode == 2 and "YYYY-MM-DD" in bad.stderr

    stranger = run_gatematch(
        "match", str(examples / "kit_harington/john1.jpg"), "--flight", "GM101", "--json", *client
    )
    assert stranger.returncode == 1 and json.loads(stranger.stdout)["decision"] == "DECISION_NO_MATCH"

    reference = ("--reference", str(examples / "biden/biden.jpg"))
    same = run_gatematch("verify", str(examples / "biden/biden2.jpg"), *reference, "--json", *client)
    other = run_gatematch("verify", str(examples / "obama/obama3.jpg"), *reference, *client)
    assert same.returncode == 0, same.stdout
    assert json.loads(same.stdout)["decision"] == "DECISION_MATCH"
    assert other.returncode == 1 and other.stdout.startswith("NO_MATCH: score")

    camera = run_gatematch(
        "camera",
        "--video",
        str(video_dir / "hieubkvn123_obama.mp4"),
        "--flight",
        "GM101",
        "--direction",
        "departure",
        "--fps",
        "5",
        "--seconds",
        "2",
        "--json",
        *client,
    )
    assert camera.returncode == 0, camera.stderr
    events = [json.loads(line) for line in camera.stdout.splitlines()]
    assert {next(iter(e)) for e in events} == {"observation", "decision"}
    assert any(e.get("decision", {}).get("decision") == "DECISION_MATCH" for e in events)


def test_a_camera_stream_is_verified_one_to_one_encounter_by_encounter(day, examples, video_dir):
    """StreamVerify: the encounter rules of StreamMatch against the reference alone, at the target FMR."""

    def decided(reference: str) -> list[match_pb2.EncounterDecision]:
        frames = camera_frames(video_dir / "hieubkvn123_obama.mp4", "cam-a1", "A1", "", fps=5, seconds=2)
        requests = verify_stream_requests(frames, (examples / reference).read_bytes())
        with open_channel(day.target) as channel:
            events = match_pb2_grpc.MatchServiceStub(channel).StreamVerify(
                requests, metadata=as_("cam-a1"), timeout=120
            )
            return [e.decision for e in events if e.WhichOneof("event") == "decision"]

    same = [d for d in decided("obama/obama.jpg") if d.decision == match_pb2.DECISION_MATCH]
    assert same, "the speaker in the video is the person of the reference photo"
    assert same[0].candidates[0].traveler_id == "reference" and 0 < same[0].false_match_probability <= 1e-3
    other = decided("biden/biden.jpg")
    assert other and all(d.decision == match_pb2.DECISION_NO_MATCH and not d.candidates for d in other)
    with open_channel(day.target) as channel:
        frames = iter([match_pb2.VerifyStreamRequest(frame=make_frame("cam-a1", "A1", "", 1, b""))])
        stub = match_pb2_grpc.MatchServiceStub(channel)
        error = refused(lambda: list(stub.StreamVerify(frames, metadata=as_("cam-a1"), timeout=30)))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "starts with its reference" in error.details()
