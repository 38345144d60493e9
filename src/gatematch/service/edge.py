"""The one door every RPC passes: who is calling, may they, is there room, and what a failure becomes.

Servicers only convert messages and call the data plane; they raise typed errors. This interceptor, for every
method, unary and streaming alike: authenticates the caller (certificate or bearer token; revoked certificates
refused), checks the method's role, admits the call against the server's caps and the client's own (streams
and loads open at once, a request rate), maps any error to its status (one table: service.status) and audits
every refusal. Health answers outside all of it, on thread slots no other call can take, so a flood of
callers can never make a load balancer think the service is dead. Reflection is off unless configured, and
then only for authenticated administrators and analysts.
"""

from __future__ import annotations

import contextlib
import ipaddress
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

from gatematch.errors import AuthenticationError, AuthorizationError, CapacityError
from gatematch.service.audit import MAX_TEXT, AuditRecord, AuditSink
from gatematch.service.config import IPNetwork, ServerConfig
from gatematch.service.security import ANALYST, CAMERA, GALLERY_ADMIN, GATE_ADMIN, Authenticator, Identity
from gatematch.service.status import abort
from gatematch.v1 import gallery_pb2, gate_pb2, match_pb2

HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIX = "/grpc.reflection."
HEALTH_SLOTS = 4  # gRPC threads kept free for health checks whatever else is going on


@dataclass(frozen=True)
class MethodRule:
    roles: frozenset[str]
    kind: str  # "stream": a camera stream, "load": a gallery upload, "unary": everything short


def _method(descriptor: Any, service: str, name: str) -> str:
    return f"/{descriptor.services_by_name[service].full_name}/{name}"


METHODS: dict[str, MethodRule] = {
    _method(match_pb2.DESCRIPTOR, "MatchService", "Match"): MethodRule(frozenset({CAMERA, ANALYST}), "unary"),
    _method(match_pb2.DESCRIPTOR, "MatchService", "StreamMatch"): MethodRule(frozenset({CAMERA}), "stream"),
    _method(match_pb2.DESCRIPTOR, "MatchService", "Verify"): MethodRule(
        frozenset({CAMERA, ANALYST}), "unary"
    ),
    _method(match_pb2.DESCRIPTOR, "MatchService", "StreamVerify"): MethodRule(frozenset({CAMERA}), "stream"),
    _method(gallery_pb2.DESCRIPTOR, "GalleryService", "Load"): MethodRule(frozenset({GALLERY_ADMIN}), "load"),
    _method(gallery_pb2.DESCRIPTOR, "GalleryService", "Delete"): MethodRule(
        frozenset({GALLERY_ADMIN}), "unary"
    ),
    _method(gallery_pb2.DESCRIPTOR, "GalleryService", "Get"): MethodRule(
        frozenset({GALLERY_ADMIN, ANALYST}), "unary"
    ),
    _method(gallery_pb2.DESCRIPTOR, "GalleryService", "List"): MethodRule(
        frozenset({GALLERY_ADMIN, ANALYST}), "unary"
    ),
    _method(gallery_pb2.DESCRIPTOR, "GalleryService", "Update"): MethodRule(
        frozenset({GALLERY_ADMIN}), "load"
    ),
    _method(gate_pb2.DESCRIPTOR, "GateService", "Assign"): MethodRule(frozenset({GATE_ADMIN}), "unary"),
    _method(gate_pb2.DESCRIPTOR, "GateService", "Release"): MethodRule(frozenset({GATE_ADMIN}), "unary"),
    _method(gate_pb2.DESCRIPTOR, "GateService", "List"): MethodRule(
        frozenset({GATE_ADMIN, GALLERY_ADMIN, ANALYST}), "unary"
    ),
}
REFLECTION = MethodRule(frozenset({GALLERY_ADMIN, ANALYST}), "stream")


def grpc_threads(server: ServerConfig) -> int:
    """Every call the caps can admit, plus the slots kept for health checks and for refusing callers."""
    return server.max_streams + server.max_loads + server.max_unary + HEALTH_SLOTS


class _Bucket:
    """A token bucket: `rate` tokens a second, at most `burst` saved up."""

    def __init__(self, rate: float, burst: int):
        self.rate, self.burst = rate, float(burst)
        self.tokens, self.stamp = float(burst), time.monotonic()

    def take(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True


class Admission:
    """The server's caps per kind of call and each client's own caps, checked before a call does any work."""

    def __init__(self, server: ServerConfig):
        self.caps = {"stream": server.max_streams, "load": server.max_loads, "unary": server.max_unary}
        self.client_streams = server.client_streams
        self.rate, self.burst = server.client_rate, server.client_burst
        self._open = dict.fromkeys(self.caps, 0)
        self._client_open: dict[str, int] = {}
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def admit(self, client: str, kind: str) -> Iterator[None]:
        with self._lock:
            bucket = self._buckets.setdefault(client, _Bucket(self.rate, self.burst))
            if not bucket.take():
                raise CapacityError(f"client {client!r} is over its rate of {self.rate:g} calls per second")
            if self._open[kind] >= self.caps[kind]:
                raise CapacityError(
                    f"the server already has its maximum of {self.caps[kind]} {kind} calls open"
                )
            long_lived = kind != "unary"
            if long_lived and self._client_open.get(client, 0) >= self.client_streams:
                raise CapacityError(
                    f"client {client!r} already has its maximum of {self.client_streams} streams and loads open"
                )
            self._open[kind] += 1
            if long_lived:
                self._client_open[client] = self._client_open.get(client, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._open[kind] -= 1
                if long_lived:
                    self._client_open[client] -= 1
                    if not self._client_open[client]:
                        del self._client_open[client]

    def open_calls(self, kind: str) -> int:
        return self._open[kind]


class Lockout:
    """AC-7: an address that fails to authenticate without a certificate (a missing or wrong bearer token)
    `attempts` times within `window_s` may not use a token for `lock_s`, so tokens cannot be guessed at
    network speed. Certificates are not guessable (the handshake checks them), so mTLS callers sharing the
    address (a NAT, a gate's switch) keep working."""

    def __init__(self, attempts: int = 10, window_s: float = 60.0, lock_s: float = 60.0):
        self.attempts, self.window_s, self.lock_s = attempts, window_s, lock_s
        self._failures: dict[str, list[float]] = {}
        self._locked: dict[str, float] = {}
        self._lock = threading.Lock()

    def check(self, address: str) -> None:
        with self._lock:
            until = self._locked.get(address, 0.0)
            if until and time.monotonic() >= until:
                del self._locked[address]
            elif until:
                raise AuthenticationError(
                    f"too many failed authentications from this address; retry in {until - time.monotonic():.0f} s"
                )

    def failed(self, address: str) -> bool:
        """Count a failure; True when it locks the address out."""
        now = time.monotonic()
        with self._lock:
            recent = [t for t in self._failures.get(address, []) if now - t < self.window_s] + [now]
            if len(recent) >= self.attempts:
                self._failures.pop(address, None)
                self._locked[address] = now + self.lock_s
                return True
            self._failures[address] = recent
            if len(self._failures) > 10_000:  # many addresses failing once each: forget the oldest
                self._failures.pop(next(iter(self._failures)))
            return False


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Caller:
    """Where a call comes from: its address, and the trusted proxy it came through."""

    address: str
    via: str = ""

    def __str__(self) -> str:
        return f"{self.address} via {self.via}" if self.via else self.address

    @property
    def lockout_key(self) -> str:
        """What failed authentications count against: the address, or for IPv6 its /64 (one subscriber's
        network: a caller could take a new address from it for every attempt)."""
        try:
            ip = ipaddress.ip_address(self.address)
        except ValueError:
            return self.address
        return str(ipaddress.ip_network(f"{ip}/64", strict=False)) if ip.version == 6 else self.address


def _peer_ip(peer: str) -> IPAddress | None:
    """The IP of a gRPC peer string ("ipv4:10.0.0.7:51234", "ipv6:[::1]:51234"); None for others (unix:)."""
    kind, _, rest = peer.partition(":")
    host = rest.rsplit(":", 1)[0].strip("[]") if kind in ("ipv4", "ipv6") else ""
    try:
        return _unmapped(ipaddress.ip_address(host))
    except ValueError:
        return None


def _unmapped(ip: IPAddress) -> IPAddress:
    """An IPv4 address as itself when a dual-stack listener reports it IPv4-mapped (::ffff:10.0.0.5); an IPv6
    address without its zone (fe80::1%eth0), so one address is one caller."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return ip
    return ip.ipv4_mapped or ipaddress.IPv6Address(ip.packed)


def caller_of(context: grpc.ServicerContext, proxies: tuple[IPNetwork, ...] = ()) -> Caller:
    """The caller's IP ("ipv4:10.0.0.7:51234" -> "10.0.0.7"; other peers as they are). A call from a trusted
    proxy is the caller's its x-forwarded-for names: the rightmost entry that is not itself a trusted proxy
    (each proxy appends the address it saw, so entries to the left of it are whatever the caller chose to
    send). Without such an entry, or with a malformed one there, it stays the proxy's."""
    peer = context.peer()
    ip = _peer_ip(peer)
    address = str(ip) if ip is not None else peer
    if not proxies or ip is None or not any(ip in network for network in proxies):
        return Caller(address)
    forwarded = [
        entry.strip()
        for key, value in context.invocation_metadata()
        if key == "x-forwarded-for"
        for entry in str(value).split(",")
    ]
    for entry in reversed(forwarded):
        try:
            hop = _unmapped(ipaddress.ip_address(entry))
        except ValueError:
            break
        if not any(hop in network for network in proxies):
            return Caller(str(hop), via=address)
    return Caller(address)


class CallContext:
    """The servicer's view of a call: the gRPC context plus who is calling (set by the edge)."""

    def __init__(self, context: grpc.ServicerContext, identity: Identity):
        self._context = context
        self.identity = identity

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


class Edge(grpc.ServerInterceptor):
    def __init__(
        self,
        auth: Authenticator,
        audit: AuditSink,
        admission: Admission,
        reflection: bool,
        lockout: Lockout | None = None,
        proxies: tuple[IPNetwork, ...] = (),
    ):
        self.auth = auth
        self.audit = audit
        self.admission = admission
        self.reflection = reflection
        self.lockout = lockout or Lockout()
        self.proxies = proxies  # [auth] trusted_proxies: whose x-forwarded-for names the caller

    def _enter(self, method: str, rule: MethodRule, context: grpc.ServicerContext) -> Identity:
        """Identify and authorize the caller, or end the call with the refusal (audited)."""
        identity: Identity | None = None
        try:
            identity = self.auth.identify(context)
            if identity.via == "token":  # a guessable secret: refused from an address that kept guessing
                self.lockout.check(caller_of(context, self.proxies).lockout_key)
            if not identity.roles & rule.roles:
                raise AuthorizationError(
                    f"client {identity.name!r} lacks a role for {method} (needs one of {sorted(rule.roles)})"
                )
        except (AuthenticationError, AuthorizationError) as exc:
            self._refused(method, identity, context, exc)
        return identity

    def _refused(
        self, method: str, identity: Identity | None, context: grpc.ServicerContext, exc: Exception
    ) -> None:
        caller = caller_of(context, self.proxies)
        guessing = isinstance(exc, AuthenticationError) and not context.auth_context().get("x509_common_name")
        locked = guessing and self.lockout.failed(caller.lockout_key)
        self.audit.record(
            AuditRecord(
                "denied",
                identity.name if identity else "unauthenticated",
                detail=(("address locked out; " if locked else "") + f"{method} from {caller}: {exc}")[
                    :MAX_TEXT
                ],
            )
        )
        abort(context, exc)

    def intercept_service(self, continuation: Callable[..., Any], details: grpc.HandlerCallDetails) -> Any:
        method = details.method
        if method.startswith(HEALTH_PREFIX):
            return continuation(details)
        if method.startswith(REFLECTION_PREFIX):
            if not self.reflection:
                return None  # UNIMPLEMENTED, as if reflection were not there
            rule: MethodRule | None = REFLECTION
        else:
            rule = METHODS.get(method)
        handler = continuation(details)
        if handler is None:
            return None
        if rule is None:  # a method the server has but no rule for: refuse rather than serve it unchecked
            return handler._replace(**{kind: self._closed(method) for kind in _kinds(handler)})
        return handler._replace(
            **{kind: self._guard(method, rule, getattr(handler, kind), kind) for kind in _kinds(handler)}
        )

    def _closed(self, method: str) -> Callable[..., Any]:
        def refuse(_request: Any, context: grpc.ServicerContext) -> Any:
            abort(context, AuthorizationError(f"method {method} is not served"))

        return refuse

    def _guard(
        self, method: str, rule: MethodRule, behavior: Callable[..., Any], kind: str
    ) -> Callable[..., Any]:
        streaming_response = kind in ("unary_stream", "stream_stream")

        def unary(request: Any, context: grpc.ServicerContext) -> Any:
            identity = self._enter(method, rule, context)
            try:
                with self.admission.admit(_client_key(identity, context), rule.kind):
                    return behavior(request, CallContext(context, identity))
            except Exception as exc:  # typed errors get their code; a bug is INTERNAL and leaks nothing
                abort(context, exc)

        def streaming(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            identity = self._enter(method, rule, context)
            try:
                with self.admission.admit(_client_key(identity, context), rule.kind):
                    yield from behavior(request, CallContext(context, identity))
            except Exception as exc:  # typed errors get their code; a bug is INTERNAL and leaks nothing
                abort(context, exc)

        return streaming if streaming_response else unary


def _client_key(identity: Identity, context: grpc.ServicerContext) -> str:
    """Whose limits a call counts against: the client's name, or for anonymous loopback callers (no policy)
    their connection, so several local cameras are not one client."""
    return identity.name if identity.via != "anonymous" else f"anonymous@{context.peer()}"


def _kinds(handler: grpc.RpcMethodHandler) -> list[str]:
    return [
        k for k in ("unary_unary", "unary_stream", "stream_unary", "stream_stream") if getattr(handler, k)
    ]
