"""Who is calling, and may they: TLS/mTLS credentials, client identity, roles, flight scope, revocation.

Identity comes from the mTLS client certificate's subject common name, or from a bearer token (only its sha256
is kept in the policy file). The policy file maps each client to roles and a scope: cameras -> gate -> flights
(a camera may only match against a flight its gate is assigned to), and for gallery administrators, gate
administrators and analysts the flights they may touch. The file's gates are the static base: run-time gate
assignments (gatematch.gates, kept in the gallery store) add a flight to a gate for their time window. The
file is checked strictly (types, unknown keys, token format) because a typo in it is a hole in the border, and
it is reloaded atomically on SIGHUP: a bad new file keeps the old policy in force. Certificates listed in the
client CA's revocation list are refused.

Without a policy file every caller is an anonymous client with every role: only acceptable on loopback, which
`check_exposure` enforces at start-up.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509

from gatematch.errors import AuthenticationError, AuthorizationError, ConfigError
from gatematch.service.config import ServiceConfig, TLSConfig
from gatematch.tomlfile import read_toml

log = logging.getLogger("gatematch.security")

CAMERA, GALLERY_ADMIN, ANALYST, GATE_ADMIN = "camera", "gallery-admin", "analyst", "gate-admin"
ROLES = frozenset({CAMERA, GALLERY_ADMIN, ANALYST, GATE_ADMIN})
Assigned = Callable[[str], frozenset[str]]  # gate -> the flights run-time assignments give it now
ALL_FLIGHTS = "*"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_CLIENT_KEYS = {"roles", "cameras", "flights", "token_sha256"}


def token_digest(token: str) -> str:
    """What the policy file stores for a bearer token (never the token itself)."""
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass(frozen=True)
class Identity:
    name: str
    roles: frozenset[str]
    via: str  # "mtls", "token" or "anonymous"


@dataclass(frozen=True)
class ClientPolicy:
    roles: frozenset[str]
    cameras: frozenset[str] = frozenset()  # camera ids this client may send frames as
    flights: frozenset[str] = frozenset({ALL_FLIGHTS})  # administrators and analysts: flights in scope
    token_sha256: str = ""


def _strings(value: Any, where: str) -> frozenset[str]:
    """A TOML list of non-empty strings: a bare string is refused (it would silently become its letters)."""
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where} must be a list of non-empty strings, got {value!r}")
    return frozenset(value)


def _table(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table, got {value!r}")
    return value


@dataclass(frozen=True)
class Policy:
    clients: Mapping[str, ClientPolicy] = field(default_factory=dict)
    camera_gates: Mapping[str, str] = field(default_factory=dict)
    gate_flights: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | str) -> Policy:
        """Parse and check a policy file: [clients.NAME] roles / cameras / flights / token_sha256,
        [cameras] camera = "gate", [gates] gate = ["flight", ...]."""
        path = Path(path)
        doc = read_toml(path, ConfigError, "policy")
        where = f"policy {path}"
        unknown = set(doc) - {"clients", "cameras", "gates"}
        if unknown:
            raise ConfigError(f"{where}: unknown sections {sorted(unknown)} (known: clients, cameras, gates)")
        gates = {
            gate: _strings(flights, f"{where}: [gates] {gate}")
            for gate, flights in _table(doc.get("gates", {}), f"{where}: [gates]").items()
        }
        cameras: dict[str, str] = {}
        for camera, gate in _table(doc.get("cameras", {}), f"{where}: [cameras]").items():
            if not isinstance(gate, str) or gate not in gates:
                raise ConfigError(f"{where}: camera {camera!r} is at gate {gate!r}, which [gates] lacks")
            cameras[camera] = gate
        clients = {}
        for name, entry in _table(doc.get("clients", {}), f"{where}: [clients]").items():
            clients[name] = cls._client(name, _table(entry, f"{where}: [clients.{name}]"), where, cameras)
        tokens = [c.token_sha256 for c in clients.values() if c.token_sha256]
        if len(tokens) != len(set(tokens)):
            raise ConfigError(f"{where}: two clients share one token_sha256")
        return cls(clients, cameras, gates)

    @staticmethod
    def _client(name: str, entry: dict[str, Any], where: str, cameras: Mapping[str, str]) -> ClientPolicy:
        here = f"{where}: client {name!r}"
        unknown = set(entry) - _CLIENT_KEYS
        if unknown:
            raise ConfigError(f"{here}: unknown keys {sorted(unknown)} (known: {sorted(_CLIENT_KEYS)})")
        roles = _strings(entry.get("roles"), f"{here} roles")
        if roles - ROLES:
            raise ConfigError(f"{here}: roles must be among {sorted(ROLES)}, got {sorted(roles)}")
        own = _strings(entry["cameras"], f"{here} cameras") if "cameras" in entry else frozenset()
        if CAMERA in roles:
            own = own or frozenset({name})
            missing = sorted(own - set(cameras))
            if missing:
                raise ConfigError(f"{here}: cameras {missing} are at no gate in [cameras]")
        elif own:
            raise ConfigError(f"{here}: cameras are for the camera role only")
        flights = (
            _strings(entry["flights"], f"{here} flights") if "flights" in entry else frozenset({ALL_FLIGHTS})
        )
        token = entry.get("token_sha256", "")
        if token and (not isinstance(token, str) or not _SHA256_HEX.fullmatch(token)):
            raise ConfigError(f"{here}: token_sha256 must be 64 lowercase hex digits (sha256 of the token)")
        return ClientPolicy(roles, own, flights, token)

    def identify(self, common_name: str | None, token: str | None) -> Identity:
        """The caller, from its certificate CN (preferred) or bearer token; AuthenticationError if neither fits."""
        if common_name is not None:
            client = self.clients.get(common_name)
            if client is None:
                raise AuthenticationError(f"certificate subject {common_name!r} is not a known client")
            return Identity(common_name, client.roles, "mtls")
        if token:
            digest = token_digest(token)
            for name, client in self.clients.items():
                if client.token_sha256 and hmac.compare_digest(client.token_sha256, digest):
                    return Identity(name, client.roles, "token")
            raise AuthenticationError("bearer token not recognised")
        raise AuthenticationError("no client certificate or bearer token presented")

    def authorize_camera(self, identity: Identity, camera_id: str, gate_id: str) -> str:
        """The camera's gate; refused unless this client may speak for the camera and the camera is at the gate."""
        client = self.clients.get(identity.name)
        if client is None or camera_id not in client.cameras:
            raise AuthorizationError(f"client {identity.name!r} may not send frames as camera {camera_id!r}")
        gate = self.camera_gates.get(camera_id)
        if gate is None or (gate_id and gate_id != gate):
            raise AuthorizationError(f"camera {camera_id!r} is not assigned to gate {gate_id or '(none)'!r}")
        return gate

    def authorize_frame(
        self,
        identity: Identity,
        camera_id: str,
        gate_id: str,
        flight_id: str,
        assigned: Assigned | None = None,
    ) -> None:
        """Refuse unless this client may speak for the camera, the camera is at the gate, and the gate serves the
        flight: by the policy file, or by a run-time assignment in force now (`assigned`)."""
        gate = self.authorize_camera(identity, camera_id, gate_id)
        if flight_id in self.gate_flights.get(gate, frozenset()):
            return
        if assigned is None or flight_id not in assigned(gate):
            raise AuthorizationError(f"gate {gate!r} is not assigned to flight {flight_id!r}")

    def in_scope(self, identity: Identity, flight_id: str) -> bool:
        client = self.clients.get(identity.name)
        return client is not None and (ALL_FLIGHTS in client.flights or flight_id in client.flights)


ANONYMOUS = Identity("anonymous", ROLES, "anonymous")


class RevocationList:
    """Serial numbers the client CA revoked, from a CRL whose signature the CA's key must verify."""

    def __init__(self, serials: frozenset[int], issuer: str):
        self.serials = serials
        self.issuer = issuer

    @classmethod
    def load(cls, crl_file: str, ca_file: str) -> RevocationList:
        data = _read(crl_file, "certificate revocation list")
        try:
            crl = x509.load_pem_x509_crl(data) if b"-----BEGIN" in data else x509.load_der_x509_crl(data)
        except ValueError as exc:
            raise ConfigError(f"{crl_file} is not a certificate revocation list: {exc}") from None
        ca = x509.load_pem_x509_certificates(_read(ca_file, "client CA"))
        if not any(_signed_by(crl, cert) for cert in ca):
            raise ConfigError(f"{crl_file} is not signed by the client CA in {ca_file}")
        return cls(frozenset(r.serial_number for r in crl), crl.issuer.rfc4514_string())

    def check(self, pem: bytes) -> None:
        serial = x509.load_pem_x509_certificate(pem).serial_number
        if serial in self.serials:
            raise AuthenticationError("client certificate has been revoked")


def _signed_by(crl: x509.CertificateRevocationList, ca: x509.Certificate) -> bool:
    try:
        return crl.is_signature_valid(ca.public_key())
    except TypeError:  # a key type that cannot sign a CRL
        return False


class Authenticator:
    """Identity and authorization of calls; the policy and revocation list can be replaced while serving.

    Reads take a reference to the current (immutable) policy once per decision, so a reload never shows a
    caller half of the old file and half of the new one.
    """

    def __init__(self, policy: Policy | None, revoked: RevocationList | None = None):
        self.policy = policy
        self.revoked = revoked
        self.assigned: Assigned | None = None  # run-time gate assignments, once the store is open

    def follow_assignments(self, assigned: Assigned) -> None:
        """Honour run-time gate assignments (asked on every frame, so a change counts from the next frame)."""
        self.assigned = assigned

    def replace(self, policy: Policy | None, revoked: RevocationList | None) -> None:
        self.policy, self.revoked = policy, revoked

    def identify(self, context: grpc.ServicerContext) -> Identity:
        policy, revoked = self.policy, self.revoked
        if policy is None:
            return ANONYMOUS
        auth = context.auth_context()
        names = auth.get("x509_common_name") or []
        common_name = names[0].decode() if names else None
        if common_name is not None and revoked is not None:
            revoked.check((auth.get("x509_pem_cert") or [b""])[0])
        token = None
        for key, value in context.invocation_metadata():
            if key == "authorization" and value.lower().startswith("bearer "):
                token = value[7:].strip()
        return policy.identify(common_name, token)

    def authorize_frame(self, identity: Identity, camera_id: str, gate_id: str, flight_id: str) -> None:
        policy = self.policy
        if policy is not None:
            policy.authorize_frame(identity, camera_id, gate_id, flight_id, self.assigned)

    def authorize_camera(self, identity: Identity, camera_id: str, gate_id: str) -> None:
        """A camera's frame that names no flight (1:1 verification): the client speaks for the camera at the gate."""
        policy = self.policy
        if policy is not None:
            policy.authorize_camera(identity, camera_id, gate_id)

    def check_gate(self, gate_id: str) -> None:
        """A run-time assignment is for a gate the policy file knows (its cameras are mapped there)."""
        policy = self.policy
        if policy is not None and gate_id not in policy.gate_flights:
            raise AuthorizationError(
                f"gate {gate_id!r} is not in the policy file's [gates]; no camera could use the assignment"
            )

    def authorize_flight(self, identity: Identity, flight_id: str) -> None:
        """An administrator's or analyst's flight scope."""
        policy = self.policy
        if policy is not None and not policy.in_scope(identity, flight_id):
            raise AuthorizationError(f"client {identity.name!r} may not access flight {flight_id!r}")

    def in_scope(self, identity: Identity, flight_id: str) -> bool:
        policy = self.policy
        return policy is None or policy.in_scope(identity, flight_id)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def server_credentials(tls: TLSConfig) -> grpc.ServerCredentials | None:
    """TLS credentials from PEM files (mutual TLS when a client CA is set); None for plaintext."""
    if not tls.cert_file and not tls.key_file:
        if tls.client_ca_file or tls.crl_file:
            raise ConfigError("[tls] client_ca_file and crl_file need cert_file and key_file too")
        return None
    if not (tls.cert_file and tls.key_file):
        raise ConfigError("[tls] cert_file and key_file must be set together")
    if tls.crl_file and not tls.client_ca_file:
        raise ConfigError("[tls] crl_file revokes client certificates: it needs client_ca_file")
    pair = (_read(tls.key_file, "TLS key"), _read(tls.cert_file, "TLS certificate"))
    ca = _read(tls.client_ca_file, "client CA") if tls.client_ca_file else None
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=ca is not None)


def channel_credentials(ca_file: str, cert_file: str = "", key_file: str = "") -> grpc.ChannelCredentials:
    """Client side: trust `ca_file`; present a client certificate for mutual TLS when given."""
    cert = _read(cert_file, "client certificate") if cert_file else None
    key = _read(key_file, "client key") if key_file else None
    return grpc.ssl_channel_credentials(_read(ca_file, "CA"), private_key=key, certificate_chain=cert)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(config: ServiceConfig) -> None:
    """Beyond loopback: an authorization policy always, and TLS unless the operator insists on plaintext."""
    if _is_loopback(config.server.host):
        return
    if not config.auth.policy_file:
        raise ConfigError(
            f"listening on {config.server.host} needs [auth] policy_file: every caller must be known"
        )
    if not config.tls.cert_file:
        if not config.server.allow_insecure_remote:
            raise ConfigError(
                f"listening on {config.server.host} needs [tls] cert_file/key_file "
                "(or [server] allow_insecure_remote = true for plaintext on a network you trust)"
            )
        log.warning(
            "PLAINTEXT on a network address: biometric frames and bearer tokens cross the network unencrypted "
            "([server] allow_insecure_remote = true); authorization still applies",
            extra={"host": config.server.host},
        )


def load_authenticator(config: ServiceConfig) -> Authenticator:
    """The policy and revocation list the config names (ConfigError when either is unreadable or invalid)."""
    policy = Policy.load(config.auth.policy_file) if config.auth.policy_file else None
    revoked = (
        RevocationList.load(config.tls.crl_file, config.tls.client_ca_file) if config.tls.crl_file else None
    )
    return Authenticator(policy, revoked)
