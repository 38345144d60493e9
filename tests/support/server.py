"""Shared pieces of the service end-to-end tests: a calibration table, a real server on a loopback port, clients.

Not a test module: imported by tests/test_service_e2e*.py.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gatematch.benchmarks.calibration import measure_calibration
from gatematch.errors import CardError
from gatematch.facepipeline import FacePipeline
from gatematch.gallery import Calibration, load_default_calibration
from gatematch.images import load_image
from gatematch.keyfile import KeyFile
from gatematch.modelstore import ModelStore
from gatematch.service.config import (
    AuditConfig,
    KeysConfig,
    RetentionConfig,
    ServerConfig,
    ServiceConfig,
    StoreConfig,
)
from gatematch.service.server import GateMatchServer, pipeline_config
from support.postgres import PostgresCluster, need_cluster

PER_IDENTITY = 12  # glint24 crops per identity for a test calibration: 288 crops, ~39k impostor pairs


def calibration_for(pipeline: FacePipeline, faces_dir: Path) -> Calibration:
    """The shipped table for the pack's embedder; until one is shipped, one measured on glint24 impostor pairs."""
    card = pipeline.pack.embedder
    try:
        return load_default_calibration(card.name)
    except CardError:
        pass
    crops, labels = [], []
    for label, person in enumerate(sorted((faces_dir / "glint24_aligned").iterdir())):
        for photo in sorted(person.iterdir())[:PER_IDENTITY]:
            crops.append(load_image(photo))
            labels.append(label)
    embeddings = pipeline.embedder.embed(np.stack(crops))
    scores = embeddings @ embeddings.T
    labels_arr = np.asarray(labels)
    upper = np.triu(np.ones_like(scores, dtype=bool), k=1)
    impostor = scores[upper & (labels_arr[:, None] != labels_arr[None, :])]
    return measure_calibration(
        impostor, embedder=card.name, embedder_sha256=card.sha256, dataset="glint24_aligned (tests)"
    )


STORE_BACKENDS = ("sqlite", "postgres")


def store_url(backend: str, postgres_cluster: PostgresCluster | str) -> str:
    """`[store] url` for a test server: "" (the embedded store) or a fresh database of the test cluster
    (skipped, or failed under CI=true, when PostgreSQL is not installed)."""
    return need_cluster(postgres_cluster).database() if backend == "postgres" else ""


def key_file_for(root: Path, store_url: str = "") -> Path:
    """The template key file of a test server: under `root` for the embedded store (the server creates it on
    its first start); for a PostgreSQL store one file per database, made here, that all its replicas share."""
    if not store_url:
        return root / "template-keys.json"
    digest = hashlib.sha256(store_url.encode()).hexdigest()[:16]
    path = Path(os.environ["XDG_DATA_HOME"]) / "test-keys" / f"{digest}.json"
    if not path.exists():
        KeyFile.create(path)
    return path


def service_config(root: Path, store_url: str = "", **server: object) -> ServiceConfig:
    """Loopback, port 0, a store, key file and audit log under `root` (or the galleries at `store_url`, with
    the key file its replicas share); two inference workers. The retention timer waits an hour: a test
    purges when it means to (one that sees an expired gallery refused before its purge would otherwise race
    the timer), and the timer's own test sets a short period."""
    config = ServiceConfig(
        server=ServerConfig(port=0, workers=2, max_streams=8, shutdown_grace_s=5.0),
        store=StoreConfig(gallery_dir=str(root / "galleries"), url=store_url),
        audit=AuditConfig(path=str(root / "audit.jsonl")),
        keys=KeysConfig(file=str(key_file_for(root, store_url))),
        retention=RetentionConfig(purge_every_s=3600.0),
    )
    return replace(config, server=replace(config.server, **server)) if server else config


def start_server(
    config: ServiceConfig,
    model_store: ModelStore,
    calibration: Calibration,
    pipeline: FacePipeline | None = None,
    credentials: grpc.ChannelCredentials | None = None,
) -> tuple[GateMatchServer, int]:
    """A started and loaded server; returns it with the health status it reported BEFORE loading."""
    pipeline = pipeline or FacePipeline.from_pack(
        "default", store=model_store, config=pipeline_config(config)
    )
    server = GateMatchServer(config, pipeline=pipeline, calibration=calibration)
    server.start()
    before = health_status(f"127.0.0.1:{server.port}", credentials)
    server.load()
    return server, before


def health_status(target: str, credentials: grpc.ChannelCredentials | None = None) -> int:
    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status


class ServeProcess:
    """`gatematch serve --config FILE` as a separate process (a replica that can be killed with SIGKILL); with
    no config file, the embedded defaults (`env` adds to the environment)."""

    def __init__(
        self,
        config_file: Path | None,
        model_dir: Path,
        port: int,
        log: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        config = ["--config", str(config_file)] if config_file is not None else []
        self.command = [sys.executable, "-m", "gatematch.cli", "serve", *config]
        self.env = {**os.environ, "GATEMATCH_MODEL_DIR": str(model_dir), **(env or {})}
        self.target = f"127.0.0.1:{port}"
        self.log = log
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 120) -> None:
        """Start and wait until its health says SERVING."""
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(self.command, env=self.env, stdout=log, stderr=log)
        deadline = time.monotonic() + timeout
        while True:
            try:
                if health_status(self.target) == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"gatematch serve did not come up: {self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def kill(self) -> None:
        """SIGKILL: no drain, no cleanup (what a crash or an OOM kill does)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


def free_port() -> int:
    """A loopback port nobody listens on now (for a second listener whose port the test must know)."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
