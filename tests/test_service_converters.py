"""Message conversion both ways, and the contract's privacy rule: only MATCH names a traveler."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime, timedelta

import pytest

from gatematch.errors import ManifestError, RequestError
from gatematch.gallery import ARRIVAL, DEPARTURE, ModelRef, OperatingPoint
from gatematch.gates import GateAssignment
from gatematch.service.converters import (
    assign_request,
    assignment_pb,
    date_of,
    decision_message,
    direction_of,
    direction_pb,
    disclosed,
    flight_ref,
    frame_problem,
    gallery_pb,
    image_of,
    load_header,
    match_response,
    observation_pb,
    reference_of,
    stream_frame,
    update_header,
    verify_response,
)
from gatematch.service.dataplane import Decision, FlightRef, FrameResult, RawPixels, VerifyResult
from gatematch.service.encounter import EncounterOutcome
from gatematch.service.streams import EncounterEvent, FrameEvent
from gatematch.v1 import flight_pb2, gallery_pb2, gate_pb2, match_pb2
from support.synthetic import EMBEDDER, at_cosine, calibration, gallery, strangers

CENTRES = strangers(10, seed=3)
GALLERY = gallery(CENTRES)
MATCHED = GALLERY.search(at_cosine(CENTRES[2], 0.9), EMBEDDER, calibration(), k=5, point=OperatingPoint())
UNMATCHED = GALLERY.search(strangers(1, seed=70)[0], EMBEDDER, calibration(), k=5, point=OperatingPoint())


def test_only_a_match_names_travelers_and_never_more_than_asked() -> None:
    assert MATCHED.match is not None and UNMATCHED.match is None and len(UNMATCHED.candidates) == 5
    assert disclosed(UNMATCHED, Decision.NO_MATCH, 5) == []
    assert [c.traveler_id for c in disclosed(MATCHED, Decision.MATCH, 1)] == ["T002"]
    assert len(disclosed(MATCHED, Decision.MATCH, 3)) == 3
    assert disclosed(MATCHED, Decision.MATCH, 0) == []
    assert len(disclosed(UNMATCHED, Decision.NO_MATCH, 4, ranking=True)) == 4  # an analyst's ranking
    assert disclosed(None, Decision.MATCH, 5) == []


def frame_result(decision: Decision, search) -> FrameResult:
    return FrameResult(decision, None, search, GALLERY.info, {"detect": 0.01}, 0.5)


def test_a_unary_no_match_carries_no_candidate_and_a_match_its_false_match_probability() -> None:
    frame = match_pb2.Frame(flight_id="GM101", sequence=7)
    no = match_response(frame_result(Decision.NO_MATCH, UNMATCHED), frame, 5)
    assert no.decision == match_pb2.DECISION_NO_MATCH and len(no.candidates) == 0
    assert no.false_match_probability == 0.0
    yes = match_response(frame_result(Decision.MATCH, MATCHED), frame, 2)
    assert [c.traveler_id for c in yes.candidates][:1] == ["T002"] and len(yes.candidates) == 2
    assert 0 < yes.false_match_probability <= 0.003
    assert yes.stage_ms["detect"] == pytest.approx(10.0) and yes.sequence == 7


def encounter_event(decision: Decision, result, tailgating: bool = False) -> EncounterEvent:
    outcome = EncounterOutcome(
        encounter_id=4,
        decision=decision.value,
        result=result,
        frames_used=3,
        frames_seen=5,
        first_sequence=10,
        last_sequence=14,
        elapsed_s=0.6,
        searches=1,
        tailgating=tailgating,
        false_match_probability=0.001 if decision is Decision.MATCH else None,
    )
    return EncounterEvent(outcome, decision, result, "GM101", GALLERY.info, 2)


def test_an_encounter_decision_names_the_matched_traveler_only() -> None:
    message = decision_message(encounter_event(Decision.MATCH, MATCHED, tailgating=True))
    assert [c.traveler_id for c in message.candidates] == ["T002"]
    assert message.tailgating and message.false_match_probability == pytest.approx(0.001)
    assert (message.frames_used, message.frames_seen, message.elapsed_ms) == (3, 5, pytest.approx(600.0))
    message = decision_message(encounter_event(Decision.NO_MATCH, UNMATCHED))
    assert message.decision == match_pb2.DECISION_NO_MATCH and len(message.candidates) == 0
    assert not message.tailgating and message.false_match_probability == 0.0


def test_a_frame_passed_over_says_so_and_carries_no_faces_or_stage_times() -> None:
    frame = stream_frame(match_pb2.Frame(camera_id="c", gate_id="g", flight_id="GM101", sequence=7))
    message = observation_pb(FrameEvent(frame, None, None, {}, {}, 2, passed_over=True))
    assert message.passed_over and message.sequence == 7 and message.dropped_frames == 2
    assert message.status == match_pb2.DECISION_UNSPECIFIED and not message.faces and not message.stage_ms
    assert not observation_pb(FrameEvent(frame, Decision.NO_FACE, None, {}, {}, 0)).passed_over


def test_capture_time_becomes_the_frame_age_and_an_impossible_one_a_problem() -> None:
    frame = match_pb2.Frame(camera_id="c", gate_id="g", flight_id="GM101", sequence=1)
    frame.captured_at.FromDatetime(datetime.now(UTC) - timedelta(milliseconds=300))
    assert stream_frame(frame).capture_delay_s == pytest.approx(0.3, abs=0.05)
    frame.captured_at.seconds = 2**62
    assert isinstance(frame_problem(frame), Exception) and stream_frame(frame).captured_at is None
    assert stream_frame(match_pb2.Frame()).capture_delay_s == 0.0


def test_raw_pixels_keep_their_layout() -> None:
    frame = match_pb2.Frame()
    frame.image.raw.CopyFrom(
        match_pb2.RawImage(
            pixels=b"\x00" * 12,
            width=2,
            height=2,
            channels=3,
            dtype=match_pb2.PIXEL_TYPE_UINT8,
            channel_order=match_pb2.CHANNEL_ORDER_RGB,
        )
    )
    assert image_of(frame) == RawPixels(b"\x00" * 12, 2, 2, 3, "uint8", True)
    assert image_of(match_pb2.Frame()) == b""


def test_a_gallery_header_needs_a_flight_and_a_departure() -> None:
    with pytest.raises(ManifestError):
        load_header(gallery_pb2.GalleryHeader(flight_id="GM101"))
    header = gallery_pb2.GalleryHeader(flight_id="GM101")
    header.departure_utc.FromDatetime(datetime(2030, 1, 1, tzinfo=UTC))
    assert load_header(header).retention is None


# -- flights as they are identified, deltas, verification, gate assignments --------------------------------


def test_a_frame_names_its_flights_date_and_direction_or_leaves_them_open() -> None:
    frame = match_pb2.Frame(
        camera_id="c", flight_id="GM101", flight_date="2030-05-01", direction=flight_pb2.DIRECTION_ARRIVAL
    )
    received = stream_frame(frame)
    assert (received.flight_date, received.direction) == (date(2030, 5, 1), ARRIVAL)
    assert received.flight == ("GM101", date(2030, 5, 1), ARRIVAL)
    assert flight_ref("GM101", "", flight_pb2.DIRECTION_UNSPECIFIED) == FlightRef("GM101")
    assert direction_of(flight_pb2.DIRECTION_DEPARTURE) == DEPARTURE and direction_pb(ARRIVAL) == 2


@pytest.mark.parametrize("text", ["2030-5-1", "01/05/2030", "2030-02-30", "tomorrow", "2030-05-01T10:00"])
def test_a_flight_date_that_is_not_yyyy_mm_dd_is_a_problem_of_the_frame(text: str) -> None:
    frame = match_pb2.Frame(camera_id="c", flight_id="GM101", flight_date=text)
    assert isinstance(frame_problem(frame), RequestError)
    assert stream_frame(frame).problem is not None and stream_frame(frame).flight_date is None
    with pytest.raises(RequestError, match="YYYY-MM-DD"):
        date_of(text)


def test_an_unknown_direction_number_is_refused() -> None:
    with pytest.raises(RequestError):
        direction_of(7)


def test_responses_say_which_flight_the_gallery_is_for() -> None:
    arrival = replace(GALLERY.info, direction=ARRIVAL)
    result = FrameResult(Decision.NO_MATCH, None, UNMATCHED, arrival, {}, 0.5)
    message = match_response(result, match_pb2.Frame(flight_id="GM101"), 1, flight_date=date(2030, 5, 1))
    assert (message.flight_date, message.direction) == ("2030-05-01", flight_pb2.DIRECTION_ARRIVAL)
    event = replace(
        encounter_event(Decision.NO_MATCH, UNMATCHED), gallery=arrival, flight_date=date(2030, 5, 2)
    )
    decision = decision_message(event)
    assert (decision.flight_date, decision.direction) == ("2030-05-02", flight_pb2.DIRECTION_ARRIVAL)
    info = gallery_pb(arrival, date(2030, 5, 1))
    assert info.direction == flight_pb2.DIRECTION_ARRIVAL and info.content_hash == arrival.content_hash
    assert info.flight_date == "2030-05-01"


def test_a_load_header_carries_the_direction_departure_by_default() -> None:
    header = gallery_pb2.GalleryHeader(flight_id="GM101")
    header.departure_utc.FromDatetime(datetime(2030, 1, 1, tzinfo=UTC))
    assert load_header(header).direction == DEPARTURE
    header.direction = flight_pb2.DIRECTION_ARRIVAL
    assert load_header(header).direction == ARRIVAL


def test_an_update_header_names_the_gallery_and_whom_it_removes() -> None:
    header = gallery_pb2.UpdateHeader(
        flight_id="GM101",
        flight_date="2030-05-01",
        direction=flight_pb2.DIRECTION_DEPARTURE,
        remove=["P007", "P009"],
        reason="no-shows",
    )
    update = update_header(header)
    assert update.flight == FlightRef("GM101", date(2030, 5, 1), DEPARTURE)
    assert update.removals == ("P007", "P009") and update.reason == "no-shows"
    with pytest.raises(ManifestError):
        update_header(gallery_pb2.UpdateHeader(remove=["P007"]))
    with pytest.raises(RequestError):
        update_header(gallery_pb2.UpdateHeader(flight_id="GM101", reason="x" * 201))


def test_a_verification_carries_a_photo_or_a_template_and_answers_with_the_calibrated_fmr() -> None:
    photo = match_pb2.VerifyRequest(reference_photo=match_pb2.Image(encoded=b"\xff\xd8jpeg"))
    assert reference_of(photo) == b"\xff\xd8jpeg"
    template = match_pb2.VerifyRequest(
        reference_template=match_pb2.ReferenceTemplate(
            embedder="m", embedder_sha256="a" * 64, values=[0.6, 0.8]
        )
    )
    embedder, values = reference_of(template)
    assert embedder == ModelRef("m", "a" * 64) and list(values) == pytest.approx([0.6, 0.8])
    with pytest.raises(RequestError, match="reference"):
        reference_of(match_pb2.VerifyRequest())
    streamed = match_pb2.VerifyReference(photo=match_pb2.Image(encoded=b"\xff\xd8jpeg"))
    assert reference_of(streamed) == b"\xff\xd8jpeg"
    result = VerifyResult(Decision.MATCH, None, 0.61, 2e-5, 0.34, 1e-3, {"embed": 0.01}, 0.5)
    message = verify_response(result, match_pb2.Frame(sequence=3))
    assert message.decision == match_pb2.DECISION_MATCH and message.score == pytest.approx(0.61)
    assert message.false_match_rate == pytest.approx(2e-5) and message.target_fmr == pytest.approx(1e-3)
    assert message.sequence == 3 and message.stage_ms["embed"] == pytest.approx(10.0)
    nothing = VerifyResult(Decision.NO_FACE, None, None, None, 0.34, 1e-3, {}, 0.5)
    assert verify_response(nothing, match_pb2.Frame()).false_match_rate == 1.0


def test_gate_assignments_both_ways() -> None:
    now = datetime(2030, 5, 1, 12, 0, tzinfo=UTC)
    request = gate_pb2.AssignGateRequest(gate_id="A1", flight_id="GM101", replace=True, reason="gate change")
    with pytest.raises(RequestError, match="ends_at"):
        assign_request(request, now)
    request.ends_at.FromDatetime(now + timedelta(hours=2))
    wanted = assign_request(request, now)
    assert (wanted.starts_at, wanted.ends_at, wanted.replace) == (now, now + timedelta(hours=2), True)
    made = GateAssignment(7, "A1", "GM101", now, now + timedelta(hours=2), "ops", now)
    message = assignment_pb(made)
    assert (message.assignment_id, message.assigned_by) == (7, "ops") and not message.HasField("released_at")
    released = assignment_pb(replace(made, released_at=now, released_by="ops"))
    assert released.released_at.ToDatetime(UTC) == now
