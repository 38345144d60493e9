"""End to end over mutual TLS with a policy: the wrong client is refused with the right status code.

Certificates are made here (a test CA, the server on 127.0.0.1, clients named in the policy, and a client from
a rogue CA); the server, models and photos are real.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from gatematch.client import load_requests, make_frame
from gatematch.facepipeline import FacePipeline
from gatematch.service.config import AuthConfig, TLSConfig
from gatematch.service.security import channel_credentials
from gatematch.service.server import pipeline_config
from gatematch.v1 import gallery_pb2, gallery_pb2_grpc, match_pb2, match_pb2_grpc
from support.pki import Issued, issue, revocation_list
from support.server import calibration_for, free_port, health_status, service_config, start_server

FLIGHT, OTHER_FLIGHT, SCRATCH = "GM202", "GM303", "GM404"
POLICY = f"""
[clients.cam-a1]
roles = ["camera"]
[clients.admin]
roles = ["gallery-admin"]
flights = ["{FLIGHT}", "{SCRATCH}"]
[clients.analyst]
roles = ["analyst"]
flights = ["{FLIGHT}"]
[clients.operator]
roles = ["gallery-admin"]
[cameras]
cam-a1 = "A1"
[gates]
A1 = ["{FLIGHT}"]
B2 = ["{OTHER_FLIGHT}"]
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> dict[str, Issued]:
    tmp = tmp_path_factory.mktemp("pki")
    ca = issue(tmp, "test-ca")
    made = {
        "ca": ca,
        "server": issue(tmp, "server", ca, server=True),
        "rogue": issue(tmp / "rogue", "cam-a1", issue(tmp, "rogue-ca")),
    }
    for name in ("cam-a1", "admin", "analyst", "operator", "stranger"):
        made[name] = issue(tmp, name, ca)
    made["crl"] = revocation_list(tmp, ca, [])  # nobody revoked yet
    return made


@pytest.fixture(scope="module")
def service(tmp_path_factory, model_store, faces_dir, pki):
    root = tmp_path_factory.mktemp("secure")
    (root / "policy.toml").write_text(POLICY)
    config = service_config(root, health_port=free_port())
    config = replace(
        config,
        tls=TLSConfig(
            cert_file=pki["server"].cert_file,
            key_file=pki["server"].key_file,
            client_ca_file=pki["ca"].cert_file,
            crl_file=pki["crl"],
        ),
        auth=AuthConfig(policy_file=str(root / "policy.toml")),
    )
    pipeline = FacePipeline.from_pack("default", store=model_store, config=pipeline_config(config))
    server, _ = start_server(
        config, model_store, calibration_for(pipeline, faces_dir), pipeline, credentials=client(pki, "admin")
    )
    yield server
    server.stop(1.0)


def client(pki, name: str) -> grpc.ChannelCredentials:
    return channel_credentials(pki["ca"].cert_file, pki[name].cert_file, pki[name].key_file)


def channel(service, credentials: grpc.ChannelCredentials | None) -> grpc.Channel:
    target = f"127.0.0.1:{service.port}"
    return grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)


@pytest.fixture(scope="module")
def loaded(service, pki, examples) -> None:
    photos = [("obama", (examples / "obama" / "obama.jpg").read_bytes())]
    with channel(service, client(pki, "admin")) as ch:
        departure = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        gallery_pb2_grpc.GalleryServiceStub(ch).Load(load_requests(FLIGHT, departure, photos), timeout=60)
        gallery_pb2_grpc.GalleryServiceStub(ch).Load(load_requests(SCRATCH, departure, photos), timeout=60)
    with channel(service, client(pki, "operator")) as ch:  # the admin's scope does not reach OTHER_FLIGHT
        gallery_pb2_grpc.GalleryServiceStub(ch).Load(
            load_requests(OTHER_FLIGHT, departure, photos), timeout=60
        )


def match(
    ch: grpc.Channel,
    examples: Path,
    flight: str = FLIGHT,
    camera: str = "cam-a1",
    gate: str = "A1",
    photo: str = "obama/obama2.jpg",
    **request: object,
):
    frame = make_frame(camera, gate, flight, 1, (examples / photo).read_bytes())
    return match_pb2_grpc.MatchServiceStub(ch).Match(
        match_pb2.MatchRequest(frame=frame, **request), timeout=30
    )


def refused(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value.code()


def test_the_assigned_camera_matches_over_mtls(service, pki, loaded, examples):
    with channel(service, client(pki, "cam-a1")) as ch:
        response = match(ch, examples)
    assert response.decision == match_pb2.DECISION_MATCH and response.candidates[0].traveler_id == "obama"
    records = Path(service.config.audit.path).read_text()
    assert '"client":"cam-a1"' in records and '"event":"match"' in records and "obama" in records


def test_a_certificate_from_another_ca_is_refused_at_the_handshake(service, pki, loaded, examples):
    rogue = channel_credentials(pki["ca"].cert_file, pki["rogue"].cert_file, pki["rogue"].key_file)
    with channel(service, rogue) as ch:
        assert refused(lambda: match(ch, examples)) == grpc.StatusCode.UNAVAILABLE


def test_no_client_certificate_or_plaintext_is_refused(service, pki, loaded, examples):
    with channel(service, channel_credentials(pki["ca"].cert_file)) as ch:
        assert refused(lambda: match(ch, examples)) == grpc.StatusCode.UNAVAILABLE
    with channel(service, None) as ch:
        assert refused(lambda: match(ch, examples)) == grpc.StatusCode.UNAVAILABLE


def test_a_valid_certificate_unknown_to_the_policy_is_unauthenticated(service, pki, loaded, examples):
    with channel(service, client(pki, "stranger")) as ch:
        assert refused(lambda: match(ch, examples)) == grpc.StatusCode.UNAUTHENTICATED


def test_a_camera_asking_for_another_flight_or_gate_is_denied(service, pki, loaded, examples):
    with channel(service, client(pki, "cam-a1")) as ch:
        assert refused(lambda: match(ch, examples, flight=OTHER_FLIGHT)) == grpc.StatusCode.PERMISSION_DENIED
        assert refused(lambda: match(ch, examples, gate="B2")) == grpc.StatusCode.PERMISSION_DENIED
        assert refused(lambda: match(ch, examples, camera="cam-b2")) == grpc.StatusCode.PERMISSION_DENIED
        frame = make_frame("cam-a1", "A1", OTHER_FLIGHT, 1, (examples / "obama" / "obama2.jpg").read_bytes())
        stream = match_pb2_grpc.MatchServiceStub(ch).StreamMatch(iter([frame]), timeout=30)
        assert refused(lambda: list(stream)) == grpc.StatusCode.PERMISSION_DENIED
        assert match(ch, examples).decision == match_pb2.DECISION_MATCH  # the right flight still works


def test_a_camera_cannot_administer_galleries_nor_ask_for_rankings(service, pki, loaded, examples):
    with channel(service, client(pki, "cam-a1")) as ch:
        stub = gallery_pb2_grpc.GalleryServiceStub(ch)
        departure = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        assert refused(lambda: stub.Load(load_requests(FLIGHT, departure, []), timeout=30)) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert refused(lambda: stub.Delete(gallery_pb2.DeleteGalleryRequest(flight_id=FLIGHT))) == (
            grpc.StatusCode.PERMISSION_DENIED
        )
        assert (
            refused(lambda: stub.List(gallery_pb2.ListGalleriesRequest()))
            == grpc.StatusCode.PERMISSION_DENIED
        )
        assert refused(lambda: match(ch, examples, include_ranking=True)) == grpc.StatusCode.PERMISSION_DENIED
    with channel(service, client(pki, "analyst")) as ch:
        # an analyst may see how a stranger ranked against the flight (a camera only learns NO_MATCH)
        ranked = match(ch, examples, photo="biden/biden2.jpg", include_ranking=True, max_candidates=3)
        assert ranked.decision == match_pb2.DECISION_NO_MATCH
        assert [c.traveler_id for c in ranked.candidates] == ["obama"]  # the flight's only traveler
        listed = gallery_pb2_grpc.GalleryServiceStub(ch).List(gallery_pb2.ListGalleriesRequest())
        assert {g.flight_id for g in listed.galleries} == {FLIGHT}  # its scope, not every flight


def test_the_health_only_port_answers_plaintext_probes_and_nothing_else(service, pki, loaded):
    target = f"127.0.0.1:{service.health_port}"
    assert health_status(target) == health_pb2.HealthCheckResponse.SERVING  # a kubelet's probe: no TLS
    with grpc.insecure_channel(target) as ch:
        for action in (
            lambda: gallery_pb2_grpc.GalleryServiceStub(ch).List(
                gallery_pb2.ListGalleriesRequest(), timeout=5
            ),
            lambda: match_pb2_grpc.MatchServiceStub(ch).Match(match_pb2.MatchRequest(), timeout=5),
        ):
            with pytest.raises(grpc.RpcError) as caught:
                action()
            assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_health_answers_any_tls_client_and_admin_can_purge(service, pki, loaded, examples):
    target = f"127.0.0.1:{service.port}"
    assert health_status(target, client(pki, "cam-a1")) == health_pb2.HealthCheckResponse.SERVING
    with channel(service, client(pki, "operator")) as ch:
        stub = gallery_pb2_grpc.GalleryServiceStub(ch)
        departure = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        photos = [("obama", (examples / "obama" / "obama.jpg").read_bytes())]
        stub.Load(load_requests("GM505", departure, photos), timeout=60)
        deleted = stub.Delete(gallery_pb2.DeleteGalleryRequest(flight_id="GM505", reason="departed"))
    assert deleted.deleted and deleted.templates_purged == 1
    assert '"event":"gallery.delete"' in Path(service.config.audit.path).read_text()


# -- every RPC x every role x a flight in and out of the caller's scope --------------------------------------

OK = grpc.StatusCode.OK
DENIED = grpc.StatusCode.PERMISSION_DENIED
UNKNOWN_CALLER = grpc.StatusCode.UNAUTHENTICATED
ROLES = ("stranger", "cam-a1", "admin", "analyst")  # stranger: a valid certificate the policy does not know
RPCS = ("Match", "StreamMatch", "Load", "Get", "List", "Delete")
EXPECTED = {  # (rpc, role) -> (status for the flight in scope, status for the one out of scope)
    **{(rpc, "stranger"): (UNKNOWN_CALLER, UNKNOWN_CALLER) for rpc in RPCS},
    ("Match", "cam-a1"): (OK, DENIED),
    ("StreamMatch", "cam-a1"): (OK, DENIED),
    **{(rpc, "cam-a1"): (DENIED, DENIED) for rpc in ("Load", "Get", "List", "Delete")},
    ("Match", "admin"): (DENIED, DENIED),
    ("StreamMatch", "admin"): (DENIED, DENIED),
    ("Load", "admin"): (OK, DENIED),
    ("Get", "admin"): (OK, DENIED),
    ("List", "admin"): (OK, OK),  # List has no flight: what it shows is checked below
    ("Delete", "admin"): (OK, DENIED),
    ("Match", "analyst"): (OK, DENIED),
    ("StreamMatch", "analyst"): (DENIED, DENIED),
    ("Load", "analyst"): (DENIED, DENIED),
    ("Get", "analyst"): (OK, DENIED),
    ("List", "analyst"): (OK, OK),
    ("Delete", "analyst"): (DENIED, DENIED),
}
SCOPE = {
    "stranger": (FLIGHT, OTHER_FLIGHT),
    "cam-a1": (FLIGHT, OTHER_FLIGHT),
    "analyst": (FLIGHT, OTHER_FLIGHT),
}
SCOPE["admin"] = (SCRATCH, OTHER_FLIGHT)  # the admin's in-scope call of Delete must not remove FLIGHT


def call(rpc: str, ch: grpc.Channel, flight: str, examples: Path) -> object:
    photo = (examples / "obama" / "obama2.jpg").read_bytes()
    matches = match_pb2_grpc.MatchServiceStub(ch)
    galleries = gallery_pb2_grpc.GalleryServiceStub(ch)
    if rpc == "Match":
        return matches.Match(
            match_pb2.MatchRequest(frame=make_frame("cam-a1", "A1", flight, 1, photo)), timeout=30
        )
    if rpc == "StreamMatch":
        return list(matches.StreamMatch(iter([make_frame("cam-a1", "A1", flight, 1, photo)]), timeout=30))
    if rpc == "Load":
        departure = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
        return galleries.Load(load_requests(flight, departure, [("obama", photo)]), timeout=60)
    if rpc == "Get":
        return galleries.Get(gallery_pb2.GetGalleryRequest(flight_id=flight), timeout=30)
    if rpc == "List":
        return galleries.List(gallery_pb2.ListGalleriesRequest(), timeout=30)
    return galleries.Delete(
        gallery_pb2.DeleteGalleryRequest(flight_id=flight, reason="matrix test"), timeout=30
    )


def status(action) -> grpc.StatusCode:
    try:
        action()
    except grpc.RpcError as exc:
        return exc.code()
    return OK


def test_authorization_matrix_every_rpc_every_role_in_and_out_of_scope(service, pki, loaded, examples):
    seen = {}
    for role in ROLES:
        with channel(service, client(pki, role)) as ch:
            for rpc in RPCS:
                seen[(rpc, role)] = tuple(
                    status(lambda rpc=rpc, flight=flight: call(rpc, ch, flight, examples))
                    for flight in SCOPE[role]
                )
    assert seen == EXPECTED
    for role, visible in (("admin", {FLIGHT, SCRATCH}), ("analyst", {FLIGHT})):
        with channel(service, client(pki, role)) as ch:
            listed = gallery_pb2_grpc.GalleryServiceStub(ch).List(
                gallery_pb2.ListGalleriesRequest(), timeout=30
            )
        assert {g.flight_id for g in listed.galleries} <= visible and FLIGHT in {
            g.flight_id for g in listed.galleries
        }
    refusals = [r for r in _audit(service) if r["event"] == "denied"]
    assert len(refusals) >= sum(code != OK for codes in EXPECTED.values() for code in codes) - 2 * 3
    assert {r["client"] for r in refusals} >= {"unauthenticated", "cam-a1", "admin", "analyst"}


def _audit(service) -> list[dict]:
    import json

    return [json.loads(line) for line in Path(service.config.audit.path).read_text().splitlines()]


def test_policy_reload_applies_a_good_file_and_keeps_the_old_on_a_bad_one(service, pki, loaded, examples):
    policy = Path(service.config.auth.policy_file)
    original = policy.read_text()
    try:
        with channel(service, client(pki, "cam-a1")) as ch:
            assert status(lambda: call("Match", ch, OTHER_FLIGHT, examples)) == DENIED
            policy.write_text(original.replace(f'A1 = ["{FLIGHT}"]', f'A1 = ["{FLIGHT}", "{OTHER_FLIGHT}"]'))
            assert service.reload_policy()  # what SIGHUP does
            assert status(lambda: call("Match", ch, OTHER_FLIGHT, examples)) == OK  # the gate took the flight
            policy.write_text(original.replace('A1 = ["', 'A1 = "').replace(f'{FLIGHT}"]', f'{FLIGHT}"', 1))
            assert not service.reload_policy()  # a typo: refused, the previous policy stays in force
            assert status(lambda: call("Match", ch, OTHER_FLIGHT, examples)) == OK
    finally:
        policy.write_text(original)
        assert service.reload_policy()
    reloads = [r["detail"] for r in _audit(service) if r["event"] == "policy.reload"]
    assert reloads[-3:][0] == "applied" and reloads[-3:][1].startswith("refused")


def test_a_revoked_certificate_is_refused_after_the_revocation_list_is_reloaded(
    service, pki, loaded, examples
):
    crl = Path(pki["crl"])
    empty = crl.read_bytes()
    try:
        with channel(service, client(pki, "analyst")) as ch:
            assert status(lambda: call("Get", ch, FLIGHT, examples)) == OK
        revocation_list(crl.parent, pki["ca"], [pki["analyst"]], name=crl.name)
        assert service.reload_policy()
        with channel(service, client(pki, "analyst")) as ch:
            assert status(lambda: call("Get", ch, FLIGHT, examples)) == UNKNOWN_CALLER
        with channel(service, client(pki, "admin")) as ch:  # others are not affected
            assert status(lambda: call("Get", ch, FLIGHT, examples)) == OK
    finally:
        crl.write_bytes(empty)
        assert service.reload_policy()
