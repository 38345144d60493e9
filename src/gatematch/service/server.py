"""Server bootstrap: listen first (health NOT_SERVING), load models and galleries, then report SERVING.

Listening before loading lets orchestrators see the process come up and wait on its health instead of killing
it for a slow start. Inference runs on one WorkerPool sized to the cores; gRPC's own threads only move
messages (one per open call, capped by max_streams). Shutdown drains: health goes NOT_SERVING, streams stop
taking frames, finish the one in flight and announce their open encounters, then the server stops.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gatematch.errors import GatematchError, ModelError, PackError
from gatematch.facepipeline import FacePipeline, PipelineConfig
from gatematch.gallery import Calibration, load_default_calibration, load_fused_calibrations
from gatematch.gallery_store import flight_of, open_store
from gatematch.gates import flights_in_force
from gatematch.images import ImageLimits, decodes_by_region
from gatematch.keyfile import template_keys
from gatematch.modelstore import ModelStore
from gatematch.process import configure_server_process
from gatematch.service.audit import MAX_TEXT, AuditLog, AuditRecord, AuditSink, DatabaseAuditLog
from gatematch.service.config import ServiceConfig
from gatematch.service.dataplane import DataPlane
from gatematch.service.edge import Admission, Edge, grpc_threads
from gatematch.service.flow import WorkerPool
from gatematch.service.security import check_exposure, load_authenticator, server_credentials
from gatematch.service.servicers import GalleryServicer, GateServicer, MatchServicer
from gatematch.service.stderr_capture import QuietStreamHandler, capture_stderr
from gatematch.service.streams import StreamScheduler
from gatematch.service.telemetry import Telemetry
from gatematch.v1 import gallery_pb2, gallery_pb2_grpc, gate_pb2, gate_pb2_grpc, match_pb2, match_pb2_grpc

log = logging.getLogger("gatematch.service")

RETENTION_TIMER = "retention-timer"  # the audit trail's client name for the service's own purges
GALLERY_SERVICE = gallery_pb2.DESCRIPTOR.services_by_name["GalleryService"].full_name
GATE_SERVICE = gate_pb2.DESCRIPTOR.services_by_name["GateService"].full_name
SERVICE_NAMES = (
    match_pb2.DESCRIPTOR.services_by_name["MatchService"].full_name,
    GALLERY_SERVICE,
    GATE_SERVICE,
)
# Health of the gallery database: NOT_SERVING while a replica cannot reach it (matching goes on from the
# galleries in memory; loads and deletes cannot), so probes and operators see it without losing the replica.
STORE_HEALTH = "gatematch.store"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, plus any `extra` fields given to the call."""

    _STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update({k: v for k, v in record.__dict__.items() if k not in self._STANDARD})
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr, and whatever C libraries print there captured into them (stderr_capture)."""
    handler = QuietStreamHandler(capture_stderr())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


def pipeline_config(config: ServiceConfig) -> PipelineConfig:
    """Gate-probe pipeline: one thread per session call, because the worker pool already fills the cores."""
    return PipelineConfig(
        runtime=config.inference.runtime(intra_op_threads=1),
        limits=ImageLimits(max_pixels=config.match.max_pixels, max_bytes=config.server.max_message_bytes),
        liveness=config.match.liveness,
    )


@dataclass
class _Loaded:
    plane: DataPlane
    scheduler: StreamScheduler


class GateMatchServer:
    """One gatematch service: `start()` listens, `load()` makes it ready, `stop()` drains and ends it."""

    def __init__(
        self,
        config: ServiceConfig,
        *,
        pipeline: FacePipeline | None = None,
        calibration: Calibration | None = None,
        model_store: ModelStore | None = None,
    ):
        check_exposure(config)
        self.config = config
        self._pipeline = pipeline
        self._calibration = calibration
        self._model_store = model_store
        self.telemetry = Telemetry()
        self.audit: AuditSink = AuditLog(config.audit.path, config.audit.rotate_bytes)
        if config.audit.sink == "store":
            self.audit = DatabaseAuditLog(config.store.url, self.audit)
        self.health = health.HealthServicer()
        self._loaded: _Loaded | None = None
        self._stopped = threading.Event()
        self._purger: threading.Thread | None = None
        self.pool = WorkerPool(
            config.server.worker_count,
            config.server.max_streams + 2 * config.server.worker_count,
            self.telemetry,
        )
        limit = config.server.max_message_bytes
        # gRPC threads carry calls (a stream holds one while open); they never run inference. The edge admits
        # calls within its caps, which leave threads free for health checks (edge.HEALTH_SLOTS).
        threads = grpc_threads(config.server)
        self.auth = load_authenticator(config)
        self.admission = Admission(config.server)
        self.grpc = grpc.server(
            ThreadPoolExecutor(threads, thread_name_prefix="gatematch-grpc"),
            interceptors=[
                Edge(
                    self.auth,
                    self.audit,
                    self.admission,
                    config.server.reflection,
                    proxies=config.auth.proxy_networks(),
                )
            ],
            options=[("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)],
            maximum_concurrent_rpcs=threads,
        )
        match_pb2_grpc.add_MatchServiceServicer_to_server(
            MatchServicer(
                self.ready,
                self.auth,
                self.audit,
                self.telemetry,
                config.budgets.reply_margin_ms / 1000,
                config.verify,
            ),
            self.grpc,
        )
        gallery_pb2_grpc.add_GalleryServiceServicer_to_server(
            GalleryServicer(
                self.ready, self.auth, self.audit, config.server.load_idle_s, config.server.load_max_s
            ),
            self.grpc,
        )
        gate_pb2_grpc.add_GateServiceServicer_to_server(
            GateServicer(self.ready, self.auth, self.audit), self.grpc
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.grpc)
        if config.server.reflection:
            reflection.enable_server_reflection(
                (*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self.grpc
            )
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        self.port = 0
        self.health_port = 0
        self._health_only: grpc.Server | None = None
        self.metrics_port = 0

    def _set_health(self, status: int) -> None:
        for name in ("", *SERVICE_NAMES, STORE_HEALTH):
            self.health.set(name, status)

    def _store_reachable(self, reachable: bool, _detail: str) -> None:
        """The gallery database went away or came back (the store logs why)."""
        if self._loaded is None or self._stopped.is_set():
            return
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if reachable
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in (GALLERY_SERVICE, GATE_SERVICE, STORE_HEALTH):
            self.health.set(name, status)

    def ready(self) -> tuple[DataPlane, StreamScheduler]:
        loaded = self._loaded
        if loaded is None or self._stopped.is_set():
            raise ModelError("the service is not ready (loading models and galleries, or shutting down)")
        return loaded.plane, loaded.scheduler

    def start(self) -> int:
        """Listen (NOT_SERVING until `load`); returns the bound port."""
        configure_server_process()
        server = self.config.server
        address = f"{server.host}:{server.port}"
        credentials = server_credentials(self.config.tls)
        if credentials is None:
            self.port = self.grpc.add_insecure_port(address)
        else:
            self.port = self.grpc.add_secure_port(address, credentials)
        self.grpc.start()
        if server.health_port:
            self._health_only = grpc.server(ThreadPoolExecutor(2, thread_name_prefix="gatematch-health"))
            health_pb2_grpc.add_HealthServicer_to_server(self.health, self._health_only)
            self.health_port = self._health_only.add_insecure_port(f"{server.host}:{server.health_port}")
            self._health_only.start()
        if self.config.metrics.port:
            self.metrics_port = self.telemetry.serve(self.config.metrics.host, self.config.metrics.port)
        log.info(
            "listening",
            extra={
                "host": server.host,
                "port": self.port,
                "tls": credentials is not None,
                "health_port": self.health_port,
                "metrics": self.metrics_port,
                # False where gatematch was installed without gcc and libjpeg's headers: frames decoded whole
                "frames_decoded_by_region": decodes_by_region(),
            },
        )
        return self.port

    def load(self) -> None:
        """Models, calibration and galleries; then SERVING and the retention timer."""
        config = self.config
        pipeline = self._pipeline or FacePipeline.from_pack(
            config.store.pack,
            store=self._model_store or ModelStore(config.store.model_dir or None),
            config=pipeline_config(config),
        )
        if pipeline.pack.embedder is None:
            raise PackError(
                f"pack '{pipeline.pack.name}' has no embedder: it can detect faces but not match them"
            )
        calibration = self._calibration or load_default_calibration(pipeline.pack.embedder.name)
        fused = {
            frames: table
            for frames, table in load_fused_calibrations(pipeline.pack.embedder.name).items()
            if table.embedder_sha256 == calibration.embedder_sha256
        }
        if not fused:
            log.warning(
                "no fused-frame calibration for this embedder: encounters judge averaged frames by the "
                "single-photo table, which understates their false-match rate",
                extra={"embedder": pipeline.pack.embedder.name},
            )
        # Templates are stored only encrypted: the embedded store makes its key file on first use.
        keys = template_keys(config.keys.file, config.store.location, create=True)
        store = open_store(
            config.store.location,
            keys,
            config.retention.policy(),
            follow=True,
            on_reachable=self._store_reachable,
        )
        plane = DataPlane(
            pipeline,
            store,
            calibration,
            self.pool,
            target_fpir=config.match.target_fpir,
            max_candidates=config.match.max_candidates,
            frame_budget_s=config.budgets.frame_ms / 1000,
            fused_calibration=fused,
            timezone=config.match.zone(),
        )
        purged = self._purged(store.purge_expired())
        galleries = plane.warm()
        scheduler = StreamScheduler(
            plane,
            config.encounter,
            config.budgets.encounter_ms / 1000,
            self.telemetry,
            self.audit,
            idle_s=config.server.stream_idle_s,
            max_s=config.server.stream_max_s,
            focus=config.focus,
        )
        self.auth.follow_assignments(
            lambda gate: flights_in_force(store.gate_assignments(gate_id=gate), gate, datetime.now(UTC))
        )
        self._loaded = _Loaded(plane, scheduler)
        self._purger = threading.Thread(target=self._purge_loop, name="gatematch-retention", daemon=True)
        self._purger.start()
        self._set_health(health_pb2.HealthCheckResponse.SERVING)
        self._store_reachable(store.reachable, "")
        log.info(
            "serving",
            extra={
                "pack": pipeline.pack.name,
                "galleries": galleries,
                "purged": purged,
                "workers": config.server.worker_count,
                "template_key": keys.current().key_id if keys is not None else None,
            },
        )

    def reload_policy(self) -> bool:
        """Read the policy and revocation list again (SIGHUP); a bad file keeps the ones in force. True if swapped."""
        try:
            fresh = load_authenticator(self.config)
        except GatematchError as exc:
            log.error("policy reload refused: the previous policy stays in force", extra={"reason": str(exc)})
            self.audit.record(AuditRecord("policy.reload", "operator", detail=f"refused: {exc}"[:MAX_TEXT]))
            return False
        self.auth.replace(fresh.policy, fresh.revoked)
        log.info("policy reloaded", extra={"file": self.config.auth.policy_file})
        self.audit.record(AuditRecord("policy.reload", "operator", detail="applied"))
        return True

    def _purge_loop(self) -> None:
        while not self._stopped.wait(self.config.retention.purge_every_s):
            self.purge_expired()

    def purge_expired(self) -> list[str]:
        """Run the retention purge now (the timer calls this every `[retention] purge_every_s`)."""
        loaded = self._loaded
        if loaded is None:
            return []
        try:
            purged = loaded.plane.store.purge_expired()
        except Exception:  # the timer must outlive a transient store problem; it retries next interval
            log.exception("retention purge failed")
            return []
        if purged:
            log.info("retention purge", extra={"galleries": purged})
        return self._purged(purged)

    def _purged(self, gallery_ids: list[str]) -> list[str]:
        """Record the retention purge of each gallery in the audit trail."""
        for gallery_id in gallery_ids:
            self.audit.record(
                AuditRecord(
                    "gallery.purge", RETENTION_TIMER, flight_id=flight_of(gallery_id), detail=gallery_id
                )
            )
        return gallery_ids

    def stop(self, grace_s: float | None = None) -> None:
        """Drain streams (up to the grace period), then stop listening and release the workers."""
        grace = self.config.server.shutdown_grace_s if grace_s is None else grace_s
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        loaded = self._loaded
        drained = loaded.scheduler.drain(grace) if loaded else True
        self._stopped.set()
        self.grpc.stop(grace).wait()
        if self._health_only is not None:
            self._health_only.stop(0).wait()
        self.pool.shutdown(wait=True)
        if loaded:
            loaded.plane.store.close()
        self.audit.close()
        log.info("stopped", extra={"drained": drained})

    def wait(self) -> None:
        self.grpc.wait_for_termination()


def serve_forever(server: GateMatchServer) -> None:
    """Start, load and serve until SIGTERM/SIGINT, then shut down gracefully (main thread only)."""
    stopping = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if not stopping.is_set():
            stopping.set()
            log.info("shutting down", extra={"signal": signal.Signals(signum).name})
            threading.Thread(target=server.stop, name="gatematch-shutdown").start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, lambda _signum, _frame: server.reload_policy())
    server.start()
    try:
        server.load()
    except BaseException:
        server.stop(0)
        raise
    server.wait()
