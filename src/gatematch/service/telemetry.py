"""Prometheus metrics of the service, on a registry of their own (so two servers in one process never clash)."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, start_http_server

# Stage times run from ~1 ms (search) to the 2 s encounter budget.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1.0, 2.0, 5.0)


class Telemetry:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage_seconds = Histogram(
            "gatematch_stage_seconds", "Time per pipeline stage", ["stage"], buckets=BUCKETS, registry=r
        )
        self.decisions = Counter(
            "gatematch_decisions",
            "Decisions by kind (frame, unary, encounter)",
            ["kind", "decision"],
            registry=r,
        )
        self.dropped_frames = Counter(
            "gatematch_dropped_frames", "Stream frames replaced by newer ones before processing", registry=r
        )
        self.stale_frames = Counter(
            "gatematch_stale_frames",
            "Stream frames older than their budget on arrival, not processed",
            registry=r,
        )
        self.queue_depth = Gauge("gatematch_queue_depth", "Tasks waiting for an inference worker", registry=r)
        self.active_streams = Gauge("gatematch_active_streams", "Open camera streams", registry=r)

    def observe_stages(self, seconds: Mapping[str, float]) -> None:
        for stage, value in seconds.items():
            self.stage_seconds.labels(stage).observe(value)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def serve(self, host: str, port: int) -> int:
        """Start the scrape endpoint in a daemon thread; return the bound port (port 0 picks a free one)."""
        server, _thread = start_http_server(port, addr=host, registry=self.registry)
        return server.server_port
