"""The data plane's per-frame path and frame rules, with a scripted pipeline over a real store (no models)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from gatematch.errors import AmbiguousFlightError, BadImageError, GalleryNotFoundError
from gatematch.gallery import ARRIVAL, DEPARTURE
from gatematch.images import JpegFrame, decodes_by_region, encode_jpeg
from gatematch.service.dataplane import Decision, FlightRef, Probe
from gatematch.service.flow import Budget
from support.fakes import FakeFace, FakePipeline, at, data_plane, frame, write_gallery
from support.jpegs import cut_and_terminate
from support.synthetic import at_cosine, strangers

CENTRES = strangers(30, seed=5)
SCENES = {
    1: [FakeFace(at(240), at_cosine(CENTRES[4], 0.8))],  # traveler T004, clearly
    2: [FakeFace(at(240), strangers(1, seed=900)[0])],  # nobody on the flight
    3: [],  # nobody in view
    4: [FakeFace(at(100), at_cosine(CENTRES[1], 0.8)), FakeFace(at(380), at_cosine(CENTRES[2], 0.8))],
    5: [FakeFace(at(240), at_cosine(CENTRES[4], 0.8), quality_passed=False)],
    6: [FakeFace(at(240), at_cosine(CENTRES[4], 0.8), liveness=0.1)],
    7: [FakeFace(at(240), at_cosine(CENTRES[4], 0.8)), FakeFace(at(10, size=30), at_cosine(CENTRES[2], 0.8))],
}


@pytest.fixture
def plane(tmp_path: Path):
    plane = data_plane(tmp_path, FakePipeline(SCENES))
    write_gallery(plane.store, CENTRES)
    yield plane
    plane.pool.shutdown()


def decide(plane, scene: int, flight: str = "GM101", **budget: float):
    return plane.match(Probe(flight, frame(scene)), Budget.start(budget.get("seconds", 0.5)))


def test_a_traveler_matches_with_a_false_match_probability_within_the_target(plane) -> None:
    result = decide(plane, 1)
    assert result.decision is Decision.MATCH and result.search.match.traveler_id == "T004"
    assert 0 < result.false_match_probability <= 0.003
    assert result.search.comparisons == 30 and result.search.target_fpir == 0.003
    assert {"queue", "gallery", "decode", "search"} <= set(result.stage_s)


def test_a_stranger_is_no_match_and_the_search_still_ran(plane) -> None:
    result = decide(plane, 2)
    assert result.decision is Decision.NO_MATCH and result.search.match is None
    assert result.false_match_probability is None


@pytest.mark.parametrize(
    ("scene", "decision"),
    [
        (3, Decision.NO_FACE),
        (4, Decision.MULTIPLE_FACES),
        (5, Decision.QUALITY_FAILED),
        (6, Decision.LIVENESS_FAILED),
    ],
)
def test_frame_rules_decide_before_any_search(plane, scene: int, decision: Decision) -> None:
    result = decide(plane, scene)
    assert result.decision is decision and result.search is None


def test_a_small_face_in_the_background_is_no_rival(plane) -> None:
    result = decide(plane, 7)
    assert result.decision is Decision.MATCH and result.assessment.rivals == 0
    assert len(result.assessment.analysis.faces) == 2


def test_two_gate_sized_faces_are_both_reported_for_the_encounters(plane) -> None:
    examined = plane.examine(Probe("GM101", frame(4)), Budget.start(0.5), {})
    assert len(examined.assessment.gate_faces) == 2 and examined.assessment.rivals == 1


def test_an_unknown_flight_costs_no_inference(plane) -> None:
    with pytest.raises(GalleryNotFoundError):
        decide(plane, 1, flight="ZZ999")
    assert plane.pipeline.calls == 0


def test_a_spent_budget_is_budget_exceeded_and_nothing_runs(plane) -> None:
    result = decide(plane, 1, seconds=0.0)
    assert result.decision is Decision.BUDGET_EXCEEDED and "not started" in result.detail
    assert plane.pipeline.calls == 0


def test_a_frame_budget_counts_from_arrival_and_capture(plane) -> None:
    import time

    arrived = time.monotonic() - 0.2
    budget = plane.budget(None, 0.0, arrived=arrived, age_s=0.1)
    assert budget.seconds == pytest.approx(0.4) and budget.remaining() == pytest.approx(0.2, abs=0.05)
    assert plane.budget(None, 0.0, arrived=time.monotonic(), age_s=0.9).seconds == 0.0


# -- which gallery a frame is matched against ---------------------------------------------------------------

INBOUND = strangers(30, seed=6)  # the arriving flight's travelers: other people than the departing ones
SCENES[8] = [FakeFace(at(240), at_cosine(INBOUND[7], 0.8))]  # arriving traveler A007


@pytest.fixture
def day(tmp_path: Path):
    """GM101 arrived an hour ago and departs in two hours (one aircraft, one flight number), GM101 departs
    again in two days (tomorrow's date would be shared with the departure in two hours late in the day); another
    flight's gallery is loaded too."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    plane = data_plane(tmp_path, FakePipeline(SCENES))
    write_gallery(plane.store, CENTRES, departure=now + timedelta(hours=2))
    write_gallery(plane.store, INBOUND, departure=now - timedelta(hours=1), direction=ARRIVAL, prefix="A")
    write_gallery(plane.store, INBOUND, departure=now + timedelta(days=2), prefix="N")
    yield plane, now
    plane.pool.shutdown()


def test_a_frame_naming_only_the_flight_number_is_refused_when_an_arrival_and_a_departure_are_in_service(day):
    plane, _ = day
    with pytest.raises(
        AmbiguousFlightError, match="2 of them in service now: name the flight's date and direction"
    ):
        decide(plane, 1)
    assert plane.pipeline.calls == 0, "refused before any inference"


def test_each_frame_is_matched_against_the_gallery_it_names(day) -> None:
    plane, now = day
    outbound = plane.match(Probe("GM101", frame(1), direction=DEPARTURE), Budget.start(0.5))
    assert outbound.decision is Decision.MATCH and outbound.search.match.traveler_id == "T004"
    assert outbound.gallery.direction == DEPARTURE and outbound.gallery.departure == now + timedelta(hours=2)
    inbound = plane.match(
        Probe("GM101", frame(8), flight_date=(now - timedelta(hours=1)).date(), direction=ARRIVAL),
        Budget.start(0.5),
    )
    assert inbound.decision is Decision.MATCH and inbound.search.match.traveler_id == "A007"
    crossed = plane.match(Probe("GM101", frame(1), direction=ARRIVAL), Budget.start(0.5))
    assert crossed.decision is Decision.NO_MATCH, "a departing traveler is not on the arriving flight"
    later = plane.find(FlightRef("GM101", (now + timedelta(days=2)).date(), DEPARTURE))
    assert later.departure == now + timedelta(days=2)


def test_among_two_dates_the_flight_in_service_now_is_taken(day) -> None:
    plane, now = day
    assert plane.find(FlightRef("GM101", direction=DEPARTURE), now).departure == now + timedelta(hours=2)
    later = now + timedelta(hours=40)  # the first has left; the next one boards
    assert plane.find(FlightRef("GM101", direction=DEPARTURE), later).departure == now + timedelta(days=2)


def test_a_date_without_a_gallery_is_not_found(day) -> None:
    plane, now = day
    with pytest.raises(GalleryNotFoundError, match="GM101"):
        plane.find(FlightRef("GM101", (now + timedelta(days=5)).date()))


def test_flight_dates_are_the_sites_local_dates(tmp_path: Path) -> None:
    """A flight at 23:30 UTC leaves Tokyo the next day (local time): frames name that date."""
    plane = data_plane(tmp_path, FakePipeline(SCENES), timezone=ZoneInfo("Asia/Tokyo"))
    scheduled = datetime.now(UTC).replace(hour=23, minute=30, second=0, microsecond=0) + timedelta(days=1)
    write_gallery(plane.store, CENTRES, departure=scheduled)
    local = (scheduled + timedelta(days=1)).date()
    assert plane.find(FlightRef("GM101", local)).departure == scheduled
    with pytest.raises(GalleryNotFoundError):
        plane.find(FlightRef("GM101", scheduled.date()))
    plane.pool.shutdown()


def test_a_streams_frame_is_opened_for_its_plan_and_its_decoding_reported_as_decode(plane) -> None:
    """A camera stream's plan gets a JPEG opened, to decode what it reads (images.JpegFrame); the stage times
    name it "decode" whatever happened, never the opening's own estimate ("open")."""
    jpeg = encode_jpeg(np.full((480, 640, 3), 1, np.uint8))
    given = []

    def plan(image):
        given.append(image)
        pixels = image.reveal((0, 0, 640, 480)) if isinstance(image, JpegFrame) else image
        return plane.pipeline.analyze_batch([pixels])[0]

    stage_s: dict[str, float] = {}
    examined = plane.examine(Probe("GM101", jpeg), Budget.start(0.5), stage_s, plan)
    assert examined.assessment.decision is None and len(examined.assessment.gate_faces) == 1
    assert isinstance(given[0], JpegFrame) is decodes_by_region()
    assert "decode" in stage_s and "open" not in stage_s
    stage_s = {}
    with pytest.raises(BadImageError, match="corrupt JPEG"):
        plane.examine(Probe("GM101", cut_and_terminate(jpeg, 0.5)), Budget.start(0.5), stage_s, plan)
    assert "open" not in stage_s
    stage_s = {}
    plane.examine(Probe("GM101", jpeg), Budget.start(0.5), stage_s)  # unary Match: decoded whole, as ever
    assert "decode" in stage_s and plane.pipeline.calls == 2  # the corrupt frame reached no model
