"""Who is calling, and may they: TLS/mTLS credentials, client identity, roles, and flight authorization.

Identity comes from the mTLS client certificate's subject common name, or from a bearer token (only its sha256
is kept in the policy file). The policy file maps each client to roles and, for cameras, camera -> gate ->
flights: a camera may only match against a flight its gate is assigned to. Roles are checked per method by an
interceptor; the flight check needs the frame, so servicers call `Policy.authorize_frame` themselves.
Without a policy file every caller is an anonymous client with every role: only acceptable on loopback,
which `check_exposure` enforces at start-up.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from gatematch.errors import AuthenticationError, AuthorizationError, ConfigError
from gatematch.service.config import ServiceConfig, TLSConfig
from gatematch.service.status import status_for
from gatematch.tomlfile import read_toml
from gatematch.v1 import gallery_pb2, match_pb2

CAMERA, GALLERY_ADMIN, ANALYST = "camera", "gallery-admin", "analyst"
ROLES = frozenset({CAMERA, GALLERY_ADMIN, ANALYST})


def _method(descriptor: Any, service: str, name: str) -> str:
    return f"/{descriptor.services_by_name[service].full_name}/{name}"


METHOD_ROLES: dict[str, frozenset[str]] = {
    _method(match_pb2.DESCRIPTOR, "MatchService", "Match"): frozenset({CAMERA, ANALYST}),
    _method(match_pb2.DESCRIPTOR, "MatchService", "StreamMatch"): frozenset({CAMERA}),
    _method(gallery_pb2.DESCRIPTOR, "GalleryService", "Load"): frozenset({GALLERY_ADMIN}),
    _method(gallery_pb2.DESCRIPTOR, "GalleryService", "Delete"): frozenset({GALLERY_ADMIN}),
    _method(gallery_pb2.DESCRIPTOR, "GalleryService", "Get"): frozenset({GALLERY_ADMIN, ANALYST}),
    _method(gallery_pb2.DESCRIPTOR, "GalleryService", "List"): frozenset({GALLERY_ADMIN, ANALYST}),
}
# Load balancers and operators probe these without credentials; they reveal nothing about travelers.
OPEN_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


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
    token_sha256: str = ""


@dataclass(frozen=True)
class Policy:
    clients: Mapping[str, ClientPolicy] = field(default_factory=dict)
    camera_gates: Mapping[str, str] = field(default_factory=dict)
    gate_flights: Mapping[str, frozenset[str]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | str) -> Policy:
        """Parse a policy file ([clients.NAME] roles/cameras/token_sha256, [cameras] id=gate, [gates] gate=[...])."""
        path = Path(path)
        doc = read_toml(path, ConfigError, "policy")
        unknown = set(doc) - {"clients", "cameras", "gates"}
        if unknown:
            raise ConfigError(f"policy {path}: unknown sections {sorted(unknown)}")
        clients = {}
        for name, entry in doc.get("clients", {}).items():
            roles = frozenset(entry.get("roles", ()))
            if not roles or roles - ROLES:
                raise ConfigError(
                    f"policy {path}: client {name!r} roles must be among {sorted(ROLES)}, got {entry}"
                )
            cameras = frozenset(entry.get("cameras", [name] if CAMERA in roles else []))
            clients[name] = ClientPolicy(roles, cameras, str(entry.get("token_sha256", "")).lower())
        gates = {gate: frozenset(flights) for gate, flights in doc.get("gates", {}).items()}
        cameras = dict(doc.get("cameras", {}))
        for camera, gate in cameras.items():
            if gate not in gates:
                raise ConfigError(
                    f"policy {path}: camera {camera!r} is at gate {gate!r}, which [gates] lacks"
                )
        return cls(clients, cameras, gates)

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

    def authorize_frame(self, identity: Identity, camera_id: str, gate_id: str, flight_id: str) -> None:
        """Refuse unless this client may speak for the camera, the camera is at the gate, the gate serves the flight."""
        client = self.clients.get(identity.name)
        if client is None or camera_id not in client.cameras:
            raise AuthorizationError(f"client {identity.name!r} may not send frames as camera {camera_id!r}")
        gate = self.camera_gates.get(camera_id)
        if gate is None or (gate_id and gate_id != gate):
            raise AuthorizationError(f"camera {camera_id!r} is not assigned to gate {gate_id or '(none)'!r}")
        if flight_id not in self.gate_flights.get(gate, frozenset()):
            raise AuthorizationError(f"gate {gate!r} is not assigned to flight {flight_id!r}")


ANONYMOUS = Identity("anonymous", ROLES, "anonymous")


class Authenticator:
    """Identity of a call from its transport and metadata; with no policy, everyone is ANONYMOUS."""

    def __init__(self, policy: Policy | None):
        self.policy = policy

    def identify(self, context: grpc.ServicerContext) -> Identity:
        if self.policy is None:
            return ANONYMOUS
        names = context.auth_context().get("x509_common_name") or []
        common_name = names[0].decode() if names else None
        token = None
        for key, value in context.invocation_metadata():
            if key == "authorization" and value.lower().startswith("bearer "):
                token = value[7:].strip()
        return self.policy.identify(common_name, token)

    def authorize_frame(self, identity: Identity, camera_id: str, gate_id: str, flight_id: str) -> None:
        if self.policy is not None:
            self.policy.authorize_frame(identity, camera_id, gate_id, flight_id)


def require_role(identity: Identity, method: str) -> None:
    allowed = METHOD_ROLES.get(method)
    if allowed is None:
        raise AuthorizationError(f"method {method} is not served")
    if not identity.roles & allowed:
        raise AuthorizationError(
            f"client {identity.name!r} lacks a role for {method} (needs {sorted(allowed)})"
        )


def _guarded(
    behavior: Callable[..., Any], check: Callable[[grpc.ServicerContext], None]
) -> Callable[..., Any]:
    def guarded(request_or_iterator: Any, context: grpc.ServicerContext) -> Any:
        try:
            check(context)
        except (AuthenticationError, AuthorizationError) as exc:
            context.abort(*status_for(exc))
        return behavior(request_or_iterator, context)

    return guarded


class AuthInterceptor(grpc.ServerInterceptor):
    """Refuses unauthenticated callers (UNAUTHENTICATED) and callers without the method's role (PERMISSION_DENIED)."""

    def __init__(self, authenticator: Authenticator):
        self.authenticator = authenticator

    def intercept_service(self, continuation: Callable[..., Any], details: grpc.HandlerCallDetails) -> Any:
        handler = continuation(details)
        method = details.method
        if handler is None or method.startswith(OPEN_PREFIXES):
            return handler

        def check(context: grpc.ServicerContext) -> None:
            require_role(self.authenticator.identify(context), method)

        kinds = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
        changes = {kind: _guarded(getattr(handler, kind), check) for kind in kinds if getattr(handler, kind)}
        return handler._replace(**changes)


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


def server_credentials(tls: TLSConfig) -> grpc.ServerCredentials | None:
    """TLS credentials from PEM files (mutual TLS when a client CA is set); None for plaintext."""
    if not tls.cert_file and not tls.key_file:
        if tls.client_ca_file:
            raise ConfigError("[tls] client_ca_file needs cert_file and key_file too")
        return None
    if not (tls.cert_file and tls.key_file):
        raise ConfigError("[tls] cert_file and key_file must be set together")
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
    """Refuse to listen beyond loopback without TLS and a policy, unless the operator insists."""
    if _is_loopback(config.server.host) or config.server.allow_insecure_remote:
        return
    if not config.tls.cert_file or not config.auth.policy_file:
        raise ConfigError(
            f"listening on {config.server.host} needs [tls] cert_file/key_file and [auth] policy_file "
            "(or [server] allow_insecure_remote = true)"
        )


def authenticator_for(config: ServiceConfig) -> Authenticator:
    return Authenticator(Policy.load(config.auth.policy_file) if config.auth.policy_file else None)
