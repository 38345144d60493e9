"""Message conversion both ways, and the contract's privacy rule: only MATCH names a traveler."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gatematch.errors import ManifestError
from gatematch.gallery import OperatingPoint
from gatematch.service.converters import (
    decision_message,
    disclosed,
    frame_problem,
    image_of,
    load_header,
    match_response,
    stream_frame,
)
from gatematch.service.dataplane import Decision, FrameResult, RawPixels
from gatematch.service.encounter import EncounterOutcome
from gatematch.service.streams import EncounterEvent
from gatematch.v1 import gallery_pb2, match_pb2
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
