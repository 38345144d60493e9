"""TLS, mTLS, bearer tokens and authorization against a real gRPC server on 127.0.0.1 with real certificates."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gatematch.errors import AuthorizationError, ConfigError
from gatematch.service.audit import AuditRecord
from gatematch.service.config import AuthConfig, ServerConfig, ServiceConfig, TLSConfig, load_config
from gatematch.service.edge import Admission, CallContext, Caller, Edge, Lockout, caller_of
from gatematch.service.security import (
    Authenticator,
    Policy,
    channel_credentials,
    check_exposure,
    server_credentials,
    token_digest,
)
from gatematch.v1 import gallery_pb2, gallery_pb2_grpc
from support.pki import issue
from support.proxy import start_proxy

ADMIN_TOKEN = "admin-token-7f3a"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki")
    ca = issue(folder, "ca")
    issue(folder, "server", ca, server=True)
    for cn in ("cam-a12-1", "ops-admin", "stranger"):
        issue(folder, cn, ca)
    issue(folder, "forged-admin", issue(folder, "rogue-ca"))
    return folder


@pytest.fixture(scope="module")
def policy_file(pki: Path) -> Path:
    path = pki / "policy.toml"
    path.write_text(
        f"""
[clients.cam-a12-1]
roles = ["camera"]
[clients.ops-admin]
roles = ["gallery-admin"]
token_sha256 = "{token_digest(ADMIN_TOKEN)}"
[clients.auditor]
roles = ["analyst"]
token_sha256 = "{token_digest("auditor-token")}"
[cameras]
cam-a12-1 = "A12"
[gates]
A12 = ["BA117-20250601"]
B03 = ["LH903-20250601"]
"""
    )
    return path


class _EchoGalleries(gallery_pb2_grpc.GalleryServiceServicer):
    """Answers List with the caller's identity, so the test sees who the edge says is calling."""

    def List(self, request: gallery_pb2.ListGalleriesRequest, context: CallContext):
        return gallery_pb2.ListGalleriesResponse(
            galleries=[gallery_pb2.GalleryInfo(flight_id=context.identity.name)]
        )


class Recorded(list):
    """An audit sink that keeps its records in memory."""

    def record(self, record: AuditRecord) -> None:
        self.append(record)

    def close(self) -> None:
        pass


def _edge(policy: Path, audit: Recorded | None = None, **options: object) -> Edge:
    return Edge(
        Authenticator(Policy.load(policy)),
        audit if audit is not None else Recorded(),
        Admission(ServerConfig()),
        False,
        **options,
    )


@contextlib.contextmanager
def _edge_server(edge: Edge, tls: TLSConfig | None = None) -> Iterator[int]:
    """A real gRPC server on 127.0.0.1 behind `edge` (TLS when given), answering List with the caller's
    identity, and health; yields its port."""
    server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[edge])
    gallery_pb2_grpc.add_GalleryServiceServicer_to_server(_EchoGalleries(), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    address = "127.0.0.1:0"
    port = (
        server.add_secure_port(address, server_credentials(tls)) if tls else server.add_insecure_port(address)
    )
    server.start()
    try:
        yield port
    finally:
        server.stop(None)


def _serve(tls: TLSConfig, policy: Path) -> Iterator[int]:
    with _edge_server(_edge(policy), tls) as port:
        yield port


@pytest.fixture(scope="module")
def mtls_port(pki: Path, policy_file: Path) -> Iterator[int]:
    tls = TLSConfig(str(pki / "server.pem"), str(pki / "server.key"), str(pki / "ca.pem"))
    yield from _serve(tls, policy_file)


@pytest.fixture(scope="module")
def tls_port(pki: Path, policy_file: Path) -> Iterator[int]:
    yield from _serve(TLSConfig(str(pki / "server.pem"), str(pki / "server.key")), policy_file)


def _list(port: int, credentials: grpc.ChannelCredentials, token: str | None = None) -> str:
    metadata = [("authorization", f"Bearer {token}")] if token else None
    with grpc.secure_channel(f"localhost:{port}", credentials) as channel:
        stub = gallery_pb2_grpc.GalleryServiceStub(channel)
        reply = stub.List(gallery_pb2.ListGalleriesRequest(), metadata=metadata, timeout=10)
    return reply.galleries[0].flight_id


def _client(pki: Path, cn: str | None) -> grpc.ChannelCredentials:
    if cn is None:
        return channel_credentials(str(pki / "ca.pem"))
    return channel_credentials(str(pki / "ca.pem"), str(pki / f"{cn}.pem"), str(pki / f"{cn}.key"))


def _code(call) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()


def test_mtls_identity_is_the_certificate_subject(pki: Path, mtls_port: int) -> None:
    assert _list(mtls_port, _client(pki, "ops-admin")) == "ops-admin"


def test_mtls_refuses_wrong_role_unknown_subject_and_foreign_ca(pki: Path, mtls_port: int) -> None:
    assert _code(lambda: _list(mtls_port, _client(pki, "cam-a12-1"))) == grpc.StatusCode.PERMISSION_DENIED
    assert _code(lambda: _list(mtls_port, _client(pki, "stranger"))) == grpc.StatusCode.UNAUTHENTICATED
    # A certificate from another CA, or none at all, never gets past the handshake.
    assert _code(lambda: _list(mtls_port, _client(pki, "forged-admin"))) == grpc.StatusCode.UNAVAILABLE
    assert _code(lambda: _list(mtls_port, _client(pki, None))) == grpc.StatusCode.UNAVAILABLE


def test_tls_with_bearer_tokens(pki: Path, tls_port: int) -> None:
    creds = _client(pki, None)
    assert _list(tls_port, creds, ADMIN_TOKEN) == "ops-admin"
    assert _list(tls_port, creds, "auditor-token") == "auditor"  # analysts may list
    assert _code(lambda: _list(tls_port, creds, "guessed")) == grpc.StatusCode.UNAUTHENTICATED
    assert _code(lambda: _list(tls_port, creds)) == grpc.StatusCode.UNAUTHENTICATED


def test_repeated_failed_authentication_locks_the_address_out(pki: Path, policy_file: Path) -> None:
    """AC-7: ten wrong tokens from one address, and even the right token is refused until the lock ends."""
    edge = _edge(policy_file, audit := Recorded(), lockout=Lockout(attempts=10, window_s=60, lock_s=0.5))
    tls = TLSConfig(str(pki / "server.pem"), str(pki / "server.key"))
    with _edge_server(edge, tls) as port:
        creds = _client(pki, None)
        for _ in range(10):
            assert _code(lambda: _list(port, creds, "guessed")) == grpc.StatusCode.UNAUTHENTICATED
        assert _code(lambda: _list(port, creds, ADMIN_TOKEN)) == grpc.StatusCode.UNAUTHENTICATED
        assert sum("address locked out" in r.detail for r in audit) == 1
        time.sleep(0.6)
        assert _list(port, creds, ADMIN_TOKEN) == "ops-admin"  # the lock ends on its own


def test_health_is_open(pki: Path, tls_port: int) -> None:
    with grpc.secure_channel(f"localhost:{tls_port}", _client(pki, None)) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_camera_may_only_match_its_gates_flight(policy_file: Path) -> None:
    policy = Policy.load(policy_file)
    camera = policy.identify("cam-a12-1", None)
    policy.authorize_frame(camera, "cam-a12-1", "A12", "BA117-20250601")
    policy.authorize_frame(camera, "cam-a12-1", "", "BA117-20250601")  # gate may be left to the policy
    for args, message in [
        (("cam-a12-1", "A12", "LH903-20250601"), "not assigned to flight"),
        (("cam-a12-1", "B03", "LH903-20250601"), "not assigned to gate"),
        (("cam-b03-1", "B03", "LH903-20250601"), "may not send frames as camera"),
    ]:
        with pytest.raises(AuthorizationError, match=message):
            policy.authorize_frame(camera, *args)
    admin = policy.identify(None, ADMIN_TOKEN)
    with pytest.raises(AuthorizationError):
        policy.authorize_frame(admin, "cam-a12-1", "A12", "BA117-20250601")


def test_run_time_assignments_add_flights_to_the_files_gates(policy_file: Path) -> None:
    """The file is the static base; what is assigned now adds to it, for the camera's own gate only."""
    auth = Authenticator(Policy.load(policy_file))
    camera = auth.policy.identify("cam-a12-1", None)
    with pytest.raises(AuthorizationError, match="not assigned to flight 'GM555'"):
        auth.authorize_frame(camera, "cam-a12-1", "A12", "GM555")
    assigned = {"A12": frozenset({"GM555"}), "B03": frozenset({"GM777"})}
    auth.follow_assignments(lambda gate: assigned.get(gate, frozenset()))
    auth.authorize_frame(camera, "cam-a12-1", "A12", "GM555")
    auth.authorize_frame(camera, "cam-a12-1", "A12", "BA117-20250601")  # the file's flight stays
    with pytest.raises(AuthorizationError, match="not assigned to flight 'GM777'"):
        auth.authorize_frame(camera, "cam-a12-1", "A12", "GM777")  # another gate's assignment
    assigned["A12"] = frozenset()  # released
    with pytest.raises(AuthorizationError):
        auth.authorize_frame(camera, "cam-a12-1", "A12", "GM555")
    auth.authorize_camera(camera, "cam-a12-1", "A12")  # a 1:1 verification names no flight
    with pytest.raises(AuthorizationError, match="not assigned to gate"):
        auth.authorize_camera(camera, "cam-a12-1", "B03")
    auth.check_gate("B03")
    with pytest.raises(AuthorizationError, match="not in the policy file"):
        auth.check_gate("Z99")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[clients.x]\nroles = ["superuser"]\n', "roles must be among"),
        ('[clients.x]\nroles = ["gate-admin", "root"]\n', "roles must be among"),
        ('[cameras]\ncam = "Z9"\n', "which \\[gates\\] lacks"),
        # a string where a list belongs silently became the flights {G, M, 1, 0} before
        ('[gates]\nA1 = "GM101"\n', "must be a list of non-empty strings"),
        ('[clients.x]\nroles = "camera"\n', "must be a list of non-empty strings"),
        ('[clients.x]\nroles = ["analyst"]\nrole = ["camera"]\n', "unknown keys \\['role'\\]"),
        ('[clients.x]\nroles = ["analyst"]\ntoken_sha256 = "secret"\n', "64 lowercase hex"),
        ('[clients.x]\nroles = ["analyst"]\ncameras = ["c"]\n', "camera role only"),
        ('[clients.x]\nroles = ["camera"]\n', "at no gate"),
        ("[clienst.x]\n", "unknown sections"),
        ('[clients]\nx = "camera"\n', "must be a table"),
    ],
)
def test_a_policy_typo_is_refused_not_guessed(tmp_path: Path, text: str, message: str) -> None:
    bad = tmp_path / "p.toml"
    bad.write_text(text)
    with pytest.raises(ConfigError, match=message):
        Policy.load(bad)


def test_two_clients_cannot_share_a_token(tmp_path: Path) -> None:
    digest = token_digest("t")
    bad = tmp_path / "p.toml"
    bad.write_text(
        f'[clients.a]\nroles = ["analyst"]\ntoken_sha256 = "{digest}"\n'
        f'[clients.b]\nroles = ["analyst"]\ntoken_sha256 = "{digest}"\n'
    )
    with pytest.raises(ConfigError, match="share one token"):
        Policy.load(bad)


def test_bad_tls_settings(tmp_path: Path, pki: Path) -> None:
    with pytest.raises(ConfigError, match="must be set together"):
        server_credentials(TLSConfig(cert_file=str(pki / "server.pem")))
    with pytest.raises(ConfigError, match="cannot read TLS key"):
        server_credentials(TLSConfig(str(pki / "server.pem"), str(tmp_path / "absent.key")))


def test_plaintext_beyond_loopback_is_refused_and_never_without_a_policy(caplog) -> None:
    check_exposure(ServiceConfig())
    policy = AuthConfig("policy.toml")
    with pytest.raises(ConfigError, match="needs \\[tls\\]"):
        check_exposure(ServiceConfig(server=ServerConfig(host="0.0.0.0"), auth=policy))
    # allow_insecure_remote allows plaintext, loudly, but never drops authorization
    insecure = ServerConfig(host="0.0.0.0", allow_insecure_remote=True)
    with pytest.raises(ConfigError, match="needs \\[auth\\] policy_file"):
        check_exposure(ServiceConfig(server=insecure))
    check_exposure(ServiceConfig(server=insecure, auth=policy))
    assert "PLAINTEXT" in caplog.text
    check_exposure(
        ServiceConfig(
            server=ServerConfig(host="0.0.0.0"),
            tls=TLSConfig("s.pem", "s.key"),
            auth=AuthConfig("policy.toml"),
        )
    )


# -- behind an L7 proxy ------------------------------------------------------------------------------------

ATTACKER, DESK = "198.51.100.7", "198.51.100.8"


def _list_plain(target: str, token: str, forwarded_for: str = "") -> str:
    metadata = [("authorization", f"Bearer {token}")]
    if forwarded_for:
        metadata.append(("x-forwarded-for", forwarded_for))
    with grpc.insecure_channel(target) as channel:
        reply = gallery_pb2_grpc.GalleryServiceStub(channel).List(
            gallery_pb2.ListGalleriesRequest(), metadata=metadata, timeout=10
        )
    return reply.galleries[0].flight_id


@pytest.mark.parametrize("trusted", [("127.0.0.2",), ()], ids=["proxy trusted", "proxy not trusted"])
def test_behind_a_proxy_a_lockout_is_of_the_caller_it_names_never_of_the_proxy(
    policy_file: Path, tmp_path: Path, trusted: tuple[str, ...]
) -> None:
    """AC-7 behind an L7 proxy (HAProxy): every call reaches the service from the proxy's address. Ten wrong
    tokens from one caller used to lock every token caller behind the same proxy out for a minute. With the
    proxy in `[auth] trusted_proxies` the caller is the one its x-forwarded-for names, and a caller cannot
    choose whom its failures count against by sending that header itself."""
    edge = _edge(
        policy_file,
        audit := Recorded(),
        lockout=Lockout(attempts=10, window_s=60, lock_s=60),
        proxies=AuthConfig(trusted_proxies=trusted).proxy_networks(),
    )
    with _edge_server(edge) as port:
        _lockouts_behind_a_proxy(tmp_path, port, audit, bool(trusted))


def _lockouts_behind_a_proxy(tmp_path: Path, port: int, audit: Recorded, trusted: bool) -> None:
    proxy = start_proxy(
        tmp_path,
        [port],
        frontends=(
            f"http-request set-header x-forwarded-for {ATTACKER}",  # as an outer proxy that named its caller
            f"http-request set-header x-forwarded-for {DESK}",
            "option forwardfor",  # appends the address it saw: 127.0.0.1
        ),
        source="127.0.0.2",  # the proxy reaches the service from here
    )
    attacker, desk, forger = (f"127.0.0.1:{p}" for p in proxy.ports)
    try:
        assert _list_plain(desk, ADMIN_TOKEN) == "ops-admin"
        for _ in range(10):
            assert _code(lambda: _list_plain(attacker, "guessed")) == grpc.StatusCode.UNAUTHENTICATED
        assert _code(lambda: _list_plain(attacker, ADMIN_TOKEN)) == grpc.StatusCode.UNAUTHENTICATED
        if not trusted:  # every caller is the proxy: the attacker locked the desk out too
            assert _code(lambda: _list_plain(desk, ADMIN_TOKEN)) == grpc.StatusCode.UNAUTHENTICATED
            assert all("from 127.0.0.2:" in r.detail for r in audit)
            return
        assert _list_plain(desk, ADMIN_TOKEN) == "ops-admin", "another caller behind the proxy is not locked"
        locked = [r.detail for r in audit if "address locked out" in r.detail]
        assert len(locked) == 1 and f"from {ATTACKER} via 127.0.0.2:" in locked[0]
        # A forged x-forwarded-for through the proxy counts against the address the proxy saw, not the desk's.
        for _ in range(10):
            call = lambda: _list_plain(forger, "guessed", forwarded_for=DESK)  # noqa: E731
            assert _code(call) == grpc.StatusCode.UNAUTHENTICATED
        assert _list_plain(desk, ADMIN_TOKEN) == "ops-admin"
        assert _code(lambda: _list_plain(forger, ADMIN_TOKEN)) == grpc.StatusCode.UNAUTHENTICATED
        # So does one sent straight to the service, around the proxy: its own address is the untrusted peer.
        direct = f"127.0.0.1:{port}"
        assert (
            _code(lambda: _list_plain(direct, ADMIN_TOKEN, forwarded_for=DESK))
            == grpc.StatusCode.UNAUTHENTICATED
        )
        assert _list_plain(desk, ADMIN_TOKEN) == "ops-admin"
    finally:
        proxy.stop()


class _Peer:
    """The two things `caller_of` reads from a call."""

    def __init__(self, peer: str, forwarded: list[str]):
        self._peer, self._metadata = peer, [("x-forwarded-for", value) for value in forwarded]

    def peer(self) -> str:
        return self._peer

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self._metadata


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        ("ipv4:10.0.0.5:4242", ["198.51.100.7"], "198.51.100.7 via 10.0.0.5"),
        (
            "ipv4:10.0.0.5:4242",
            ["203.0.113.1, 198.51.100.7"],
            "198.51.100.7 via 10.0.0.5",
        ),  # left: forged
        ("ipv4:10.0.0.5:4242", ["203.0.113.1", "198.51.100.7, 10.0.0.9"], "198.51.100.7 via 10.0.0.5"),
        ("ipv4:10.0.0.5:4242", ["10.0.0.9"], "10.0.0.5"),  # only proxies: the proxy's own
        ("ipv4:10.0.0.5:4242", ["198.51.100.7, not-an-address"], "10.0.0.5"),  # malformed: not trusted
        ("ipv4:10.0.0.5:4242", [], "10.0.0.5"),
        ("ipv4:192.0.2.1:4242", ["198.51.100.7"], "192.0.2.1"),  # not a trusted proxy: header ignored
        ("ipv6:[fd00::5]:4242", ["2001:db8::7"], "2001:db8::7 via fd00::5"),
        ("ipv6:[::ffff:10.0.0.5]:4242", ["::ffff:198.51.100.7"], "198.51.100.7 via 10.0.0.5"),  # dual stack
        ("ipv4:10.0.0.5:4242", ["198.51.100.7:5555"], "10.0.0.5"),  # an entry with a port: not trusted
        ("ipv4:10.0.0.5:4242", ["fe80::7%eth0"], "fe80::7 via 10.0.0.5"),  # one address whatever its zone
        # A caller inside a trusted network is taken for a proxy, so what it wrote is believed: list proxies only.
        ("ipv4:10.0.0.5:4242", ["203.0.113.6, 10.1.2.3"], "203.0.113.6 via 10.0.0.5"),
        ("unix:/run/gatematch.sock", ["198.51.100.7"], "unix:/run/gatematch.sock"),
    ],
)
def test_the_caller_behind_trusted_proxies(peer: str, forwarded: list[str], expected: str) -> None:
    proxies = AuthConfig(trusted_proxies=("10.0.0.0/8", "fd00::/8")).proxy_networks()
    assert str(caller_of(_Peer(peer, forwarded), proxies)) == expected


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ("ingress", "'ingress' is not an IP address"),
        ("10.0.0.5/8", "'10.0.0.5/8' is not an IP address"),  # host bits set: a typo, not all of 10/8
        ("0.0.0.0/0", "would trust every caller"),
        ("::/0", "would trust every caller"),
    ],
)
def test_a_trusted_proxy_that_is_no_address_or_trusts_everyone_is_refused(entry: str, message: str) -> None:
    with pytest.raises(ConfigError, match=rf"\[auth\] trusted_proxies: .*{message}"):
        AuthConfig(trusted_proxies=("10.0.12.7", entry))


def test_trusted_proxies_from_the_environment_may_be_empty_or_a_list() -> None:
    assert load_config(env={"GATEMATCH_AUTH_TRUSTED_PROXIES": ""}).auth.proxy_networks() == ()
    listed = load_config(env={"GATEMATCH_AUTH_TRUSTED_PROXIES": "10.0.12.7, fd00::5"}).auth.proxy_networks()
    assert [str(n) for n in listed] == ["10.0.12.7/32", "fd00::5/128"]


def test_ipv6_failures_count_against_the_callers_slash_64() -> None:
    """One subscriber holds a /64 and could take a fresh address from it for every attempt."""
    assert (
        Caller("2001:db8:1:2::7").lockout_key
        == Caller("2001:db8:1:2:ffff::9").lockout_key
        == "2001:db8:1:2::/64"
    )
    assert Caller("198.51.100.7", via="10.0.12.7").lockout_key == "198.51.100.7"
    assert Caller("unix:/run/gatematch.sock").lockout_key == "unix:/run/gatematch.sock"
