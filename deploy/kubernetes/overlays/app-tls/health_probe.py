"""Readiness and liveness for overlays/app-tls: grpc.health.v1 Check over mutual TLS, as an exec probe.

The kubelet's native gRPC probe speaks plaintext only, and this overlay's service accepts nothing but mutual
TLS, so the probe runs inside the container: it dials localhost with the probe's own client certificate
(health needs no role) and exits 0 when the service reports SERVING, 1 otherwise, 2 on bad arguments.

    python health_probe.py [--target localhost:50051] [--tls-dir /etc/gatematch/tls] [--timeout 2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gatematch.errors import ConfigError
from gatematch.service.security import channel_credentials  # what gatematch.client uses, without cv2


def check(target: str, tls_dir: Path, timeout: float) -> str:
    """The service's health status name ('SERVING', 'NOT_SERVING', ...), or the gRPC error that replaced it."""
    files = [str(tls_dir / name) for name in ("ca.crt", "probe.crt", "probe.key")]
    try:
        with grpc.secure_channel(target, channel_credentials(*files)) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
    except grpc.RpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", default="localhost:50051")
    parser.add_argument("--tls-dir", type=Path, default=Path("/etc/gatematch/tls"))
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    try:
        status = check(args.target, args.tls_dir, args.timeout)
    except ConfigError as exc:  # a certificate file missing or unreadable
        print(f"health probe: {exc}", file=sys.stderr)
        return 2
    print(f"health probe: {status}")
    return 0 if status == "SERVING" else 1


if __name__ == "__main__":
    sys.exit(main())
