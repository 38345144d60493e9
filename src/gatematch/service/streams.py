"""Camera streams: newest-frame slot per stream, shared inference pool, encounters decided across frames.

Per stream there is one light reader thread (it only moves received frames into the stream's LatestSlot) and
the call's own thread, which takes the newest frame, runs it on the shared WorkerPool and yields events. A
stream therefore holds at most one frame in flight and one waiting, however fast the camera sends: frames
replaced before processing are counted as dropped and reported. Inference never runs on a per-stream thread.

A frame goes through the data plane's one per-frame path (`DataPlane.examine`, as unary Match does); its
gate-sized faces (the primary one and its rivals) feed the stream's encounter tracker for the frame's flight
(as the frame names it: number, and date and direction when given).
Per-flight state is created only for a frame that passed authorization and the field checks, and dropped once
its encounters are decided, so frames naming ever-new flights allocate nothing that lasts. A frame older than
its budget when it is taken (counted from arrival, and from capture when the camera says when that was) is not
processed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime

import grpc

from gatematch.errors import BudgetExceededError, CapacityError, GatematchError, TimeLimitError
from gatematch.gallery import Gallery, GalleryInfo, SearchResult
from gatematch.service.audit import AuditLog, AuditRecord
from gatematch.service.config import EncounterConfig, FocusConfig, ServerConfig
from gatematch.service.dataplane import (
    Assessment,
    DataPlane,
    Decision,
    Probe,
    RawPixels,
    sightings,
)
from gatematch.service.encounter import EncounterOutcome, EncounterTracker
from gatematch.service.flow import Budget, LatestSlot
from gatematch.service.focus import Focus, FocusedFrame, warm_up
from gatematch.service.status import status_for
from gatematch.service.telemetry import Telemetry

TICK_S = 0.1  # how often an idle stream checks its encounters' budgets
MAX_FLIGHTS_PER_STREAM = 4  # a camera serves one flight at a time; a few overlap while encounters finish


FlightKey = tuple[str, date | None, str | None]  # a flight as frames name it: number, date, direction


@dataclass(frozen=True)
class StreamFrame:
    camera_id: str
    gate_id: str
    flight_id: str
    sequence: int
    image: bytes | RawPixels
    captured_at: datetime | None = None
    problem: GatematchError | None = None  # the frame's fields are unusable: answered with this error
    received: float = field(default_factory=time.monotonic)  # arrival, monotonic
    received_at: datetime = field(default_factory=lambda: datetime.now(UTC))  # arrival, wall clock
    flight_date: date | None = None  # the flight's date at the site, when the frame names it
    direction: str | None = None  # departure | arrival, when the frame names it

    @property
    def flight(self) -> FlightKey:
        return self.flight_id, self.flight_date, self.direction

    @property
    def capture_delay_s(self) -> float:
        """How long before arrival the camera captured the frame (0 when it did not say, or its clock is ahead)."""
        if self.captured_at is None:
            return 0.0
        return max((self.received_at - self.captured_at).total_seconds(), 0.0)


@dataclass(frozen=True)
class FrameEvent:
    """What became of one processed frame (or why it could not be used)."""

    frame: StreamFrame
    status: Decision | None  # None: the frame fed an encounter
    assessment: Assessment | None
    encounter_ids: dict[int, int]  # id(face) of each gate-sized face -> its encounter
    stage_s: dict[str, float]
    dropped: int
    error: tuple[grpc.StatusCode, str] | None = None
    passed_over: bool = False  # not analysed: it could change no decision (service/focus.py, "Passing over")


@dataclass(frozen=True)
class EncounterEvent:
    outcome: EncounterOutcome
    decision: Decision
    result: SearchResult | None
    flight_id: str
    gallery: GalleryInfo | None
    dropped: int
    flight_date: date | None = None  # the gallery's flight's date at the site


StreamEvent = FrameEvent | EncounterEvent


@dataclass(frozen=True)
class Verification:
    """A stream verified 1:1: its frames are searched in the reference's gallery of one, at this target FMR."""

    gallery: Gallery
    target_fmr: float


@dataclass
class _Flight:
    """Encounter state of one stream for one flight (a camera normally serves one flight at a time)."""

    tracker: EncounterTracker
    focus: Focus | None = None  # where the stream spends model time (None: every stage on every frame)
    gallery: Gallery | None = None  # the snapshot the last frame was searched in (decisions at ticks use it)
    reference: Gallery | None = None  # a verification stream's: searched instead of a flight's
    camera_id: str = ""
    gate_id: str = ""

    def search(self, plane: DataPlane) -> Callable[..., SearchResult] | None:
        gallery = self.gallery
        if gallery is None:
            return None
        return lambda template, target_fpir, frames: plane.search(
            gallery, template, target_fpir, frames=frames
        )


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
        idle_s: float = ServerConfig.stream_idle_s,
        max_s: float = ServerConfig.stream_max_s,
        focus: FocusConfig | None = None,
    ):
        self.plane = plane
        self.focus = focus or FocusConfig()
        if self.focus.enabled:
            warm_up()
        self.idle_s = idle_s
        self.max_s = max_s
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
        budget_for: Callable[[StreamFrame], Budget] | None = None,
        verification: Verification | None = None,
    ) -> Iterator[StreamEvent]:
        """Events of one stream until the client closes it, goes away, or the server drains.

        `budget_for` gives each frame its budget, counted from its arrival (the servicer tightens the configured
        frame budget by the stream's gRPC deadline); by default the configured budget alone. `verification`: the
        frames are verified 1:1 against its reference instead of matched against their flight's gallery.
        """
        plane = self.plane
        budget_for = budget_for or (
            lambda f: plane.budget(None, 0.0, arrived=f.received, age_s=f.capture_delay_s)
        )
        if self._draining.is_set():
            raise BudgetExceededError("server is shutting down; reconnect to another instance")
        slot: LatestSlot[StreamFrame] = LatestSlot()
        with self._cond:  # how many streams may be open is the edge's business (service/edge.py)
            self._open += 1
            self._slots.add(slot)
        self.telemetry.active_streams.inc()
        reader = threading.Thread(
            target=self._read, args=(frames, slot), name="gatematch-stream-reader", daemon=True
        )
        reader.start()
        flights: dict[FlightKey, _Flight] = {}
        opened = ticked = time.monotonic()
        ending: TimeLimitError | None = None
        try:
            while is_active():
                frame = slot.take(TICK_S)
                now = time.monotonic()
                if now - ticked >= TICK_S:  # budgets run out on every flight, busy or idle
                    ticked = now
                    yield from self._tick(flights, slot.dropped, client, ticked)
                if now - opened > self.max_s:
                    ending = TimeLimitError(f"the stream was open {self.max_s:g} s: reconnect to go on")
                    break
                if frame is None:
                    if not reader.is_alive() or self._draining.is_set():
                        break
                    if now - slot.last_put > self.idle_s:
                        ending = TimeLimitError(
                            f"the camera sent no frame for {self.idle_s:g} s: stream closed"
                        )
                        break
                    continue
                if frame.problem is not None:  # unusable fields: an error event, no state, no inference
                    yield self._event(
                        FrameEvent(frame, None, None, {}, {}, slot.dropped, status_for(frame.problem))
                    )
                    continue
                authorize(frame)
                yield from self._frame(flights, frame, slot.dropped, client, budget_for(frame), verification)
            # the stream ends: every open encounter gets its one decision now
            now = time.monotonic()
            for (flight_id, _, _), state in flights.items():
                closed = state.tracker.close(now, state.search(plane))
                yield from self._announce(closed, state, flight_id, client, slot.dropped)
            if ending is not None:
                raise ending
        finally:
            slot.close()
            self.telemetry.active_streams.dec()
            with self._cond:
                self._open -= 1
                self._slots.discard(slot)
                self._cond.notify_all()

    def _state(
        self, flights: dict[FlightKey, _Flight], frame: StreamFrame, verification: Verification | None
    ) -> _Flight:
        """The flight's encounter state (created for an authorized frame); flights with nothing open are dropped."""
        for flight in [f for f, state in flights.items() if not state.tracker.open_tracks]:
            if flight != frame.flight:
                del flights[flight]
        state = flights.get(frame.flight)
        if state is None:
            if len(flights) >= MAX_FLIGHTS_PER_STREAM:
                raise CapacityError(
                    f"this stream already follows encounters on {len(flights)} flights; finish them first"
                )
            tracker = EncounterTracker(
                self.encounter,
                verification.target_fmr if verification else self.plane.point.target_fpir,
                self.encounter_s,
                self.plane.same_person_min(self.encounter.same_person_fmr),
            )
            reference = verification.gallery if verification else None
            focus = (
                Focus(self.focus, self.encounter, tracker, self.plane.frame_budget_s)
                if self.focus.enabled
                else None
            )
            state = flights[frame.flight] = _Flight(tracker, focus, reference=reference)
        state.camera_id, state.gate_id = frame.camera_id, frame.gate_id
        return state

    def _event(self, event: FrameEvent) -> FrameEvent:
        self.telemetry.observe_stages(event.stage_s)
        label = (
            "ERROR" if event.error else "PASSED_OVER" if event.passed_over else (event.status or "ENCOUNTER")
        )
        self.telemetry.decisions.labels("frame", label).inc()
        return event

    def _frame(
        self,
        flights: dict[FlightKey, _Flight],
        frame: StreamFrame,
        dropped: int,
        client: str,
        budget: Budget,
        verification: Verification | None = None,
    ) -> Iterator[StreamEvent]:
        stage_s: dict[str, float] = {}
        claim = _Claim()
        outcomes: list[EncounterOutcome] = []
        state: _Flight | None = None
        try:
            budget.require("the frame")  # older than its budget already: dropped, not processed
            state = self._state(flights, frame, verification)
            if state.focus is not None and state.focus.pass_over(frame.received):
                yield self._event(FrameEvent(frame, None, None, {}, {}, dropped, passed_over=True))
                return
            event, outcomes = self.plane.pool.run(
                lambda b: self._process(state, frame, b, stage_s, dropped, claim),
                budget,
                lambda: claim.take("stream"),
            )
        except BudgetExceededError:
            if state is None:
                self.telemetry.stale_frames.inc()
            # a copy: an abandoned worker may still be adding its stage times
            event = FrameEvent(frame, Decision.BUDGET_EXCEEDED, None, {}, stage_s.copy(), dropped)
        except GatematchError as exc:
            event = FrameEvent(frame, None, None, {}, stage_s, dropped, status_for(exc))
        yield self._event(event)
        if state is not None:
            yield from self._announce(outcomes, state, frame.flight_id, client, dropped)

    def _process(
        self,
        state: _Flight,
        frame: StreamFrame,
        budget: Budget,
        stage_s: dict[str, float],
        dropped: int,
        claim: _Claim,
    ) -> tuple[FrameEvent, list[EncounterOutcome]]:
        """On a worker: the per-frame path, then the frame's gate-sized faces to their encounters."""
        plane, focus = self.plane, state.focus
        probe = Probe(
            frame.flight_id, frame.image, frame.sequence, frame.flight_date, frame.direction, state.reference
        )
        focused = FocusedFrame(frame.received)
        analyze = (lambda image: focus.analyze(plane.pipeline, image, focused)) if focus is not None else None
        examined = plane.examine(probe, budget, stage_s, analyze)
        assessment = examined.assessment
        faces = assessment.gate_faces
        budget.require("search", plane.costs.estimate("search") if faces else 0.0)
        if not claim.take("worker"):
            raise BudgetExceededError("the stream gave up on this frame")
        state.gallery = examined.gallery
        seen = sightings(assessment)
        start = time.perf_counter()
        ids, outcomes = state.tracker.observe(time.monotonic(), frame.sequence, seen, state.search(plane))
        if focus is not None:
            focus.follow(focused, faces, seen, ids)
        if any(s.fusable for s in seen):
            stage_s["search"] = time.perf_counter() - start
            plane.costs.observe("search", stage_s["search"])
        encounter_ids = {id(face): encounter for face, encounter in zip(faces, ids, strict=True)}
        return FrameEvent(frame, assessment.decision, assessment, encounter_ids, stage_s, dropped), outcomes

    def _tick(
        self, flights: dict[FlightKey, _Flight], dropped: int, client: str, now: float
    ) -> Iterator[StreamEvent]:
        for (flight_id, _, _), state in flights.items():
            outcomes = state.tracker.tick(now, state.search(self.plane))
            yield from self._announce(outcomes, state, flight_id, client, dropped)

    def _announce(
        self, outcomes: list[EncounterOutcome], state: _Flight, flight_id: str, client: str, dropped: int
    ) -> Iterator[EncounterEvent]:
        for outcome in outcomes:
            decision = Decision(outcome.decision)
            result = outcome.result
            self.telemetry.decisions.labels("encounter", decision).inc()
            if self.audit is not None:
                match = result.match if result is not None and decision is Decision.MATCH else None
                self.audit.record(
                    AuditRecord(
                        "encounter",
                        client,
                        flight_id=flight_id,
                        gallery_version=str(result.version) if result else "",
                        camera_id=state.camera_id,
                        gate_id=state.gate_id,
                        decision=decision.value,
                        traveler_id=match.traveler_id if match else "",
                        score=float(result.candidates[0].score) if result and result.candidates else None,
                        confidence=(
                            1.0 - outcome.false_match_probability
                            if outcome.false_match_probability is not None
                            else None
                        ),
                        encounter_id=outcome.encounter_id,
                        detail="tailgating" if outcome.tailgating else "",
                    )
                )
            info = state.gallery.info if state.gallery is not None else None
            yield EncounterEvent(
                outcome,
                decision,
                result,
                flight_id,
                info,
                dropped,
                self.plane.local_date(info) if info is not None and flight_id else None,
            )
