"""Camera streams: newest-frame slot per stream, shared inference pool, encounters decided across frames.

Per stream there is one light reader thread (it only moves received frames into the stream's LatestSlot) and
the call's own thread, which takes the newest frame, runs it on the shared WorkerPool and yields events. A
stream therefore holds at most one frame in flight and one waiting, however fast the camera sends: frames
replaced before processing are counted as dropped and reported. Inference never runs on a per-stream thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import grpc

from gatematch.errors import BudgetExceededError, CapacityError, GatematchError
from gatematch.gallery import GalleryInfo, SearchResult
from gatematch.service.audit import AuditLog, AuditRecord
from gatematch.service.config import EncounterConfig, ServerConfig
from gatematch.service.dataplane import Assessment, DataPlane, Decision, RawPixels, sighting_quality
from gatematch.service.encounter import EncounterOutcome, EncounterTracker, Sighting
from gatematch.service.flow import Budget, LatestSlot
from gatematch.service.status import status_for
from gatematch.service.telemetry import Telemetry

TICK_S = 0.1  # how often an idle stream checks its encounters' budgets


@dataclass(frozen=True)
class StreamFrame:
    camera_id: str
    gate_id: str
    flight_id: str
    sequence: int
    image: bytes | RawPixels
    captured_at: datetime | None = None
    problem: GatematchError | None = None  # the frame's fields are unusable: answered with this error
    received: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class FrameEvent:
    """What became of one processed frame (or why it could not be used)."""

    frame: StreamFrame
    status: Decision | None  # None: the frame fed an encounter
    assessment: Assessment | None
    encounter_id: int  # of the primary face; 0 = none
    stage_s: dict[str, float]
    dropped: int
    error: tuple[grpc.StatusCode, str] | None = None


@dataclass(frozen=True)
class EncounterEvent:
    outcome: EncounterOutcome
    decision: Decision
    result: SearchResult | None
    flight_id: str
    gallery: GalleryInfo | None
    dropped: int
    elapsed_s: float


StreamEvent = FrameEvent | EncounterEvent


@dataclass
class _Flight:
    """Encounter state of one stream for one flight (a camera normally serves one flight at a time)."""

    tracker: EncounterTracker
    gallery: GalleryInfo | None = None


class _Claim:
    """Who decides one frame's effect on its stream's encounters: the worker, if it gets there within the
    budget, or the stream giving up on it. Exactly one wins, so abandoned work never changes encounters late."""

    def __init__(self) -> None:
        self._owner = ""
        self._lock = threading.Lock()

    def take(self, owner: str) -> bool:
        with self._lock:
            self._owner = self._owner or owner
            return self._owner == owner


class StreamScheduler:
    """Runs every camera stream of the server over the data plane's one worker pool."""

    def __init__(
        self,
        plane: DataPlane,
        encounter: EncounterConfig,
        encounter_s: float,
        telemetry: Telemetry,
        audit: AuditLog | None = None,
        max_streams: int = ServerConfig.max_streams,
    ):
        self.plane = plane
        self.max_streams = max_streams
        self.encounter = encounter
        self.encounter_s = encounter_s
        self.telemetry = telemetry
        self.audit = audit
        self._draining = threading.Event()
        self._open = 0
        self._slots: set[LatestSlot[StreamFrame]] = set()
        self._cond = threading.Condition()

    # -- lifecycle -------------------------------------------------------------------------------------

    def drain(self, timeout: float) -> bool:
        """Stop taking new frames, let every stream finish its frame in flight and announce its open
        encounters, then end. True if all streams ended within `timeout`."""
        self._draining.set()
        with self._cond:
            for slot in self._slots:
                slot.close()
            return self._cond.wait_for(lambda: self._open == 0, timeout)

    @property
    def open_streams(self) -> int:
        return self._open

    # -- one stream ------------------------------------------------------------------------------------

    def _read(self, frames: Iterator[StreamFrame], slot: LatestSlot[StreamFrame]) -> None:
        try:
            for frame in frames:
                if self._draining.is_set():
                    break
                if slot.put(frame):
                    self.telemetry.dropped_frames.inc()
        except (grpc.RpcError, GatematchError, ValueError):
            pass  # the client went away or sent something unreadable: the stream ends
        finally:
            slot.close()

    def run(
        self,
        frames: Iterator[StreamFrame],
        authorize: Callable[[StreamFrame], None],
        client: str,
        is_active: Callable[[], bool] = lambda: True,
        budget_for: Callable[[], Budget] | None = None,
    ) -> Iterator[StreamEvent]:
        """Events of one stream until the client closes it, goes away, or the server drains.

        `budget_for` gives each frame its budget when it starts (the servicer tightens the configured frame
        budget by the stream's gRPC deadline); by default the configured budget alone.
        """
        budget_for = budget_for or (lambda: self.plane.budget(None, 0.0))
        if self._draining.is_set():
            raise BudgetExceededError("server is shutting down; reconnect to another instance")
        slot: LatestSlot[StreamFrame] = LatestSlot()
        with self._cond:
            # Refused here, not by gRPC's call limit: that limit would refuse health checks and unary calls too.
            if self._open >= self.max_streams:
                raise CapacityError(
                    f"the server already serves its maximum of {self.max_streams} camera streams"
                )
            self._open += 1
            self._slots.add(slot)
        self.telemetry.active_streams.inc()
        reader = threading.Thread(
            target=self._read, args=(frames, slot), name="gatematch-stream-reader", daemon=True
        )
        reader.start()
        flights: dict[str, _Flight] = {}
        try:
            while is_active():
                frame = slot.take(TICK_S)
                if frame is None:
                    if not reader.is_alive() or self._draining.is_set():
                        break
                    yield from self._tick(flights, slot.dropped, client, time.monotonic())
                    continue
                if frame.problem is None:
                    authorize(frame)
                yield from self._frame(flights, frame, slot.dropped, client, budget_for())
            # the stream ends: every open encounter gets its one decision now
            yield from self._tick(flights, slot.dropped, client, time.monotonic(), closing=True)
        finally:
            slot.close()
            self.telemetry.active_streams.dec()
            with self._cond:
                self._open -= 1
                self._slots.discard(slot)
                self._cond.notify_all()

    def _state(self, flights: dict[str, _Flight], flight_id: str) -> _Flight:
        state = flights.get(flight_id)
        if state is None:
            state = flights[flight_id] = _Flight(
                EncounterTracker(self.encounter, self.encounter_s, lambda e: None)
            )
        return state

    def _frame(
        self, flights: dict[str, _Flight], frame: StreamFrame, dropped: int, client: str, budget: Budget
    ) -> Iterator[StreamEvent]:
        state = self._state(flights, frame.flight_id)
        stage_s: dict[str, float] = {}
        claim = _Claim()
        try:
            if frame.problem is not None:
                raise frame.problem
            event, outcomes = self.plane.pool.run(
                lambda b: self._process(state, frame, b, stage_s, dropped, claim),
                budget,
                lambda: claim.take("stream"),
            )
        except BudgetExceededError:
            # a copy: an abandoned worker may still be adding its stage times
            event = FrameEvent(frame, Decision.BUDGET_EXCEEDED, None, 0, stage_s.copy(), dropped)
            outcomes = []
        except GatematchError as exc:
            event, outcomes = FrameEvent(frame, None, None, 0, stage_s, dropped, status_for(exc)), []
        self.telemetry.observe_stages(event.stage_s)
        label = "ERROR" if event.error else (event.status or "ENCOUNTER")
        self.telemetry.decisions.labels("frame", label).inc()
        yield event
        yield from self._announce(
            outcomes, state, frame.flight_id, dropped, client, frame.camera_id, frame.gate_id
        )

    def _process(
        self,
        state: _Flight,
        frame: StreamFrame,
        budget: Budget,
        stage_s: dict[str, float],
        dropped: int,
        claim: _Claim,
    ) -> tuple[FrameEvent, list[EncounterOutcome]]:
        """On a worker: resolve the gallery, assess the frame, feed the primary face to its encounter."""
        plane = self.plane
        stage_s["queue"] = budget.elapsed()
        gallery = plane._timed("gallery", budget, stage_s, plane.resolve, frame.flight_id)
        assessment = plane.assess(frame.image, budget, stage_s)
        face = assessment.face
        usable = face is not None and assessment.decision is None
        budget.require("search", plane.costs.estimate("search") if usable else 0.0)
        if not claim.take("worker"):
            raise BudgetExceededError("the stream gave up on this frame")
        state.gallery = gallery.info
        if face is None:
            return FrameEvent(
                frame, assessment.decision, assessment, 0, stage_s, dropped
            ), state.tracker.tick(time.monotonic())
        state.tracker.search = lambda embedding: plane.search(gallery, embedding)
        box = tuple(float(v) for v in face.detection.box)
        sighting = Sighting(box, sighting_quality(face), face.embedding if usable else None)
        start = time.perf_counter()
        ids, outcomes = state.tracker.observe(time.monotonic(), frame.sequence, [sighting])
        if usable:
            stage_s["search"] = time.perf_counter() - start
            plane.costs.observe("search", stage_s["search"])
        return FrameEvent(frame, assessment.decision, assessment, ids[0], stage_s, dropped), outcomes

    def _tick(
        self, flights: dict[str, _Flight], dropped: int, client: str, now: float, closing: bool = False
    ) -> Iterator[StreamEvent]:
        # Closing: move the clock past every budget and loss timeout so each open encounter is decided now;
        # the shift is taken off the reported elapsed time again.
        shift = self.encounter_s + self.encounter.lost_after_ms / 1000 + 1.0 if closing else 0.0
        for flight_id, state in flights.items():
            outcomes = state.tracker.tick(now + shift)
            yield from self._announce(outcomes, state, flight_id, dropped, client, shift=shift)

    def _announce(
        self,
        outcomes: list[EncounterOutcome],
        state: _Flight,
        flight_id: str,
        dropped: int,
        client: str,
        camera_id: str = "",
        gate_id: str = "",
        shift: float = 0.0,
    ) -> Iterator[EncounterEvent]:
        for outcome in outcomes:
            decision = Decision(outcome.decision)
            result = outcome.result
            self.telemetry.decisions.labels("encounter", decision).inc()
            if self.audit is not None:
                top = result.candidates[0] if result and result.candidates else None
                self.audit.record(
                    AuditRecord(
                        "encounter",
                        client,
                        flight_id=flight_id,
                        gallery_version=str(result.version) if result else "",
                        camera_id=camera_id,
                        gate_id=gate_id,
                        decision=decision.value,
                        traveler_id=result.match.traveler_id if result and result.match else "",
                        score=float(top.score) if top else None,
                        confidence=float(top.confidence) if top and top.confidence is not None else None,
                        encounter_id=outcome.encounter_id,
                    )
                )
            yield EncounterEvent(
                outcome,
                decision,
                result,
                flight_id,
                state.gallery,
                dropped,
                max(outcome.elapsed_s - shift, 0.0),
            )
