"""An L7 gRPC proxy in front of service replicas: HAProxy (Debian package `haproxy`) on a loopback port,
HTTP/2 on both sides, round robin per request: unary calls spread over the replicas, a stream stays on one."""

from __future__ import annotations

import glob
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import grpc

from support.data import missing
from support.postgres import free_port

GLOBAL = """
global
    maxconn 256
defaults
    mode http
    timeout connect 2s
    timeout client 120s
    timeout server 120s
    timeout tunnel 120s
backend replicas
    balance roundrobin
{servers}
"""
FRONTEND = """
frontend grpc{index}
    bind 127.0.0.1:{port} proto h2
    default_backend replicas
{extra}
"""


def find_haproxy() -> str | None:
    return shutil.which("haproxy") or next(iter(glob.glob("/usr/sbin/haproxy")), None)


class GrpcProxy:
    """`haproxy -db` in the foreground with a generated config; `stop()` ends it."""

    def __init__(
        self,
        binary: str,
        folder: Path,
        backends: list[int],
        frontends: Sequence[str] = ("",),
        source: str = "",
    ) -> None:
        """One frontend per entry of `frontends` (extra HAProxy lines for it, e.g. `option forwardfor`), each on
        a port of its own (`ports`); `source`: the address the proxy connects to the replicas from."""
        self.ports = [free_port() for _ in frontends]
        self.port = self.ports[0]
        via = f" source {source}" if source else ""
        servers = "\n".join(
            f"    server r{i} 127.0.0.1:{port} proto h2{via}" for i, port in enumerate(backends)
        )
        config = folder / "haproxy.cfg"
        config.write_text(
            GLOBAL.format(servers=servers)
            + "".join(
                FRONTEND.format(index=i, port=port, extra=f"    {extra}" if extra else "")
                for i, (port, extra) in enumerate(zip(self.ports, frontends, strict=True))
            )
        )
        self.log = folder / "haproxy.log"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen([binary, "-db", "-f", str(config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while True:
            try:
                with grpc.insecure_channel(f"127.0.0.1:{self.port}") as channel:
                    grpc.channel_ready_future(channel).result(timeout=1)
                return
            except grpc.FutureTimeoutError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"haproxy did not start: {self.log.read_text()[-2000:]}") from None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def start_proxy(
    folder: Path, backends: list[int], frontends: Sequence[str] = ("",), source: str = ""
) -> GrpcProxy:
    """A running proxy (see GrpcProxy); otherwise skip (fail under CI=true) saying HAProxy is missing."""
    binary = find_haproxy()
    if binary is None:
        missing("haproxy not found: install the Debian package haproxy")
    return GrpcProxy(binary, folder, backends, frontends, source)
