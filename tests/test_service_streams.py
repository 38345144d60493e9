"""The stream scheduler with a scripted pipeline over a real store and worker pool (no models, no gRPC)."""

from __future__ import annotations

import threading
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import pytest

from gatematch.errors import AuthorizationError, RequestError
from gatematch.facepipeline import Skip
from gatematch.service.config import EncounterConfig, FocusConfig
from gatematch.service.dataplane import Decision
from gatematch.service.focus import Focus, FocusedFrame
from gatematch.service.streams import EncounterEvent, FrameEvent, StreamFrame, StreamScheduler
from gatematch.service.telemetry import Telemetry
from support.fakes import FakeFace, FakePipeline, at, data_plane, frame, write_gallery
from support.synthetic import at_cosine, strangers

CENTRES = strangers(30, seed=5)
SCENES = {
    **{
        i: [FakeFace(at(240 + 4 * i), at_cosine(CENTRES[4], 0.8, seed=i), look=4)] for i in range(1, 6)
    },  # T004
    **{
        i: [FakeFace(at(240 + 4 * i), at_cosine(CENTRES[9], 0.8, seed=i), look=9)] for i in range(6, 11)
    },  # T009
    11: [FakeFace(at(240), strangers(1, seed=901)[0])],
}


@pytest.fixture
def scheduler(tmp_path: Path):
    plane = data_plane(tmp_path, FakePipeline(SCENES))
    write_gallery(plane.store, CENTRES)
    yield StreamScheduler(plane, EncounterConfig(), 2.0, Telemetry())
    plane.pool.shutdown()


def stream_frame(scene: int, sequence: int, **fields: object) -> StreamFrame:
    return StreamFrame("cam-1", "A1", "GM101", sequence, frame(scene), **fields)


def run_paced(scheduler: StreamScheduler, frames: list[StreamFrame], gap_s: float = 0.03) -> list:
    """Frames as a camera sends them (received when sent), each `gap_s` after the previous one was observed:
    nothing is dropped however long one frame takes (a fixed pace lost a frame to any stall of two gaps)."""
    turn = threading.Semaphore(1)

    def camera() -> Iterator[StreamFrame]:
        for f in frames:
            turn.acquire(timeout=30)
            time.sleep(gap_s)
            yield replace(f, received=time.monotonic(), received_at=datetime.now(UTC))

    events = []
    for event in scheduler.run(camera(), lambda frame: None, "test-client"):
        events.append(event)
        if isinstance(event, FrameEvent):
            turn.release()
    return events


def run(scheduler: StreamScheduler, frames: Iterator[StreamFrame], authorize=lambda frame: None) -> list:
    return list(scheduler.run(frames, authorize, "test-client"))


def decisions(events: list) -> list[EncounterEvent]:
    return [e for e in events if isinstance(e, EncounterEvent)]


def test_a_traveler_gets_one_match_and_every_frame_an_observation(tmp_path) -> None:
    """On the real clock: a scan every 10 s and tracks kept 10 s, so that which frame is passed over does not
    depend on how fast this machine answers (at the defaults, a stall of a fifth of a second would change it)."""
    plane = data_plane(tmp_path, FakePipeline(SCENES))
    write_gallery(plane.store, CENTRES)
    rule, focus = EncounterConfig(lost_after_ms=10_000), FocusConfig(scan_ms=10_000)
    scheduler = StreamScheduler(plane, rule, 2.0, Telemetry(), focus=focus)
    try:
        events = run_paced(scheduler, [stream_frame(i, i) for i in range(1, 6)])
    finally:
        plane.pool.shutdown()
    observations = [e for e in events if isinstance(e, FrameEvent)]
    assert [o.frame.sequence for o in observations] == [1, 2, 3, 4, 5]
    analysed = [o for o in observations if not o.passed_over]
    assert all(set(o.encounter_ids.values()) == {1} for o in analysed)
    # decided at frame 1, still through frames 2 and 3: frame 4 is passed over, answered with nothing analysed
    passed_over = [o for o in observations if o.passed_over]
    assert [o.frame.sequence for o in passed_over] == [4], "the decided face stood still"
    assert all(o.assessment is None and not o.stage_s and not o.encounter_ids for o in passed_over)
    decided = decisions(events)
    assert [(d.decision, d.outcome.encounter_id) for d in decided] == [(Decision.MATCH, 1)]
    # a clear face is decided on its first frame (the first checkpoint spends a fifth of the target)
    assert decided[0].result.match.traveler_id == "T004" and decided[0].outcome.last_sequence == 1


def test_a_tailgater_right_behind_a_match_gets_a_decision_of_their_own(scheduler) -> None:
    events = run_paced(scheduler, [stream_frame(i, i) for i in range(1, 11)])
    decided = [(d.outcome.encounter_id, d.decision, d.result.match.traveler_id) for d in decisions(events)]
    assert decided == [(1, Decision.MATCH, "T004"), (2, Decision.MATCH, "T009")]
    # the first traveler, once matched, was followed by position (the stream's focus), not embedded again
    observed = {
        e.frame.sequence: e.assessment.analysis.faces[0].skipped
        for e in events
        if isinstance(e, FrameEvent) and not e.passed_over
    }
    assert observed[2] is Skip.ASSESSMENT and observed[6] is Skip.NOTHING


def test_without_focus_every_frame_gets_every_stage(tmp_path) -> None:
    plane = data_plane(tmp_path, FakePipeline(SCENES))
    write_gallery(plane.store, CENTRES)
    scheduler = StreamScheduler(plane, EncounterConfig(), 2.0, Telemetry(), focus=FocusConfig(enabled=False))
    try:
        events = run_paced(scheduler, [stream_frame(i, i) for i in range(1, 11)])
    finally:
        plane.pool.shutdown()
    assert [d.result.match.traveler_id for d in decisions(events)] == ["T004", "T009"]
    assert plane.pipeline.embedded == 10 and set(plane.pipeline.windows) == {None}


def test_the_focus_plans_each_frame_on_its_arrival_and_the_servers_frame_budget(
    tmp_path, monkeypatch
) -> None:
    """What passing over and the scans are planned on is when each frame arrived (not when a worker got to
    it, after a queue and decoding) and the budget frames get: a review found four MATCH decisions for one
    traveler when the plan read the worker's clock."""
    planned: list[tuple[str, float]] = []
    budgets: set[float] = set()
    pass_over, analyze = Focus.pass_over, Focus.analyze

    def spy_pass_over(focus: Focus, arrived: float) -> bool:
        planned.append(("pass_over", arrived))
        budgets.add(focus.frame_budget_s)
        return pass_over(focus, arrived)

    def spy_analyze(focus: Focus, pipeline, image, frame: FocusedFrame):
        planned.append(("analyze", frame.arrived))
        return analyze(focus, pipeline, image, frame)

    monkeypatch.setattr(Focus, "pass_over", spy_pass_over)
    monkeypatch.setattr(Focus, "analyze", spy_analyze)
    plane = data_plane(tmp_path, FakePipeline(SCENES))
    write_gallery(plane.store, CENTRES)
    scheduler = StreamScheduler(plane, EncounterConfig(), 2.0, Telemetry())
    try:
        events = run_paced(scheduler, [stream_frame(i, i) for i in range(1, 6)])
    finally:
        plane.pool.shutdown()
    received = [e.frame.received for e in events if isinstance(e, FrameEvent)]
    assert [t for what, t in planned if what == "pass_over"] == received
    analysed = [e.frame.received for e in events if isinstance(e, FrameEvent) and not e.passed_over]
    assert [t for what, t in planned if what == "analyze"] == analysed
    assert budgets == {plane.frame_budget_s}


def test_the_stream_ending_decides_the_open_encounter(scheduler) -> None:
    events = run_paced(scheduler, [stream_frame(11, 1)])
    decided = decisions(events)
    assert [d.decision for d in decided] == [Decision.NO_MATCH]
    # the first checkpoint (1 frame) said no; closing spends the rest of the target in one last search
    assert decided[0].outcome.frames_used == 1 and decided[0].outcome.searches == 2


def test_a_frame_older_than_its_budget_is_not_processed(scheduler) -> None:
    stale = stream_frame(1, 1, captured_at=datetime.now(UTC) - timedelta(seconds=2))
    events = run(scheduler, iter([stale]))
    assert [(e.frame.sequence, e.status) for e in events] == [(1, Decision.BUDGET_EXCEEDED)]
    assert scheduler.plane.pipeline.calls == 0
    assert scheduler.telemetry.stale_frames._value.get() == 1


def test_a_camera_clock_ahead_of_the_server_does_not_age_its_frames(scheduler) -> None:
    ahead = [stream_frame(i, i, captured_at=datetime.now(UTC) + timedelta(seconds=30)) for i in range(1, 4)]
    assert [d.decision for d in decisions(run_paced(scheduler, ahead))] == [Decision.MATCH]


def test_frames_with_unusable_fields_allocate_nothing_and_cost_no_inference(scheduler) -> None:
    def spam() -> Iterator[StreamFrame]:
        for n in range(10_000):
            flight = f"X{n:06d}" + "F" * 300  # ever-new, over-long flight ids
            yield StreamFrame("cam-1", "A1", flight, n, b"", problem=RequestError("flight_id is too long"))

    run(scheduler, spam())  # warm-up: the allocator reaches its steady state
    answered = errors = dropped = 0
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for event in scheduler.run(spam(), lambda frame: None, "test-client"):  # counted, not kept
            answered, errors, dropped = answered + 1, errors + (event.error is not None), event.dropped
        growth = sum(s.size_diff for s in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert errors == answered and answered + dropped == 10_000  # each answered, or replaced by a newer one
    assert scheduler.plane.pipeline.calls == 0
    # per-flight encounter state for each would be several MB (it was ~100 KB a frame before)
    assert growth < 2 * 1024 * 1024, f"{growth} bytes kept after 10,000 refused frames"


def test_a_frame_for_a_flight_the_camera_may_not_use_ends_the_stream_before_any_work(scheduler) -> None:
    def authorize(frame: StreamFrame) -> None:
        if frame.flight_id != "GM101":
            raise AuthorizationError(f"gate A1 is not assigned to flight {frame.flight_id!r}")

    foreign = StreamFrame("cam-1", "A1", "ZZ999", 1, frame(1))
    with pytest.raises(AuthorizationError):
        run(scheduler, iter([foreign]), authorize)
    assert scheduler.plane.pipeline.calls == 0 and scheduler.open_streams == 0


def test_frames_naming_a_direction_follow_that_gallery_and_an_ambiguous_one_is_answered_with_an_error(
    scheduler,
) -> None:
    """GM101 also arrives (other travelers): frames that say `arrival` are matched against the arrival's
    gallery; a frame that does not say, while both are in service, is refused with a status, not guessed."""
    now = datetime.now(UTC)
    write_gallery(scheduler.plane.store, CENTRES, departure=now + timedelta(hours=2))
    inbound = strangers(30, seed=6)
    write_gallery(
        scheduler.plane.store, inbound, departure=now - timedelta(hours=1), direction="arrival", prefix="A"
    )
    scheduler.plane.pipeline.scenes.update(
        {20 + i: [FakeFace(at(240 + 4 * i), at_cosine(inbound[3], 0.8, seed=i))] for i in range(1, 6)}
    )
    frames = [stream_frame(20 + i, i, direction="arrival") for i in range(1, 6)]
    events = run_paced(scheduler, [stream_frame(1, 0), *frames])
    refused = [e for e in events if isinstance(e, FrameEvent) and e.error is not None]
    assert len(refused) == 1 and refused[0].frame.sequence == 0
    assert refused[0].error[0] is grpc.StatusCode.FAILED_PRECONDITION and "direction" in refused[0].error[1]
    [decision] = decisions(events)
    assert decision.decision is Decision.MATCH and decision.result.match.traveler_id == "A003"
    assert (
        decision.gallery.direction == "arrival" and decision.flight_date == (now - timedelta(hours=1)).date()
    )
