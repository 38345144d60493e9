"""Messages <-> data-plane types, both ways, and nothing else (no I/O, no authorization, no state).

The servicers call these; unit tests and the fuzz harness call them directly. The contract's privacy rule lives
here in one place: only MATCH names a traveler, unless an analyst asked for the ranking.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from gatematch.errors import ManifestError, RequestError
from gatematch.facepipeline import Skip
from gatematch.gallery import ARRIVAL, DEPARTURE, Candidate, GalleryInfo, ModelRef, SearchResult
from gatematch.gates import GateAssignment
from gatematch.service.audit import MAX_TEXT
from gatematch.service.dataplane import (
    Assessment,
    Decision,
    FlightRef,
    FrameResult,
    LoadHeader,
    RawPixels,
    VerifyResult,
)
from gatematch.service.streams import EncounterEvent, FrameEvent, StreamEvent, StreamFrame
from gatematch.v1 import flight_pb2, gallery_pb2, gate_pb2, match_pb2

_DTYPE = {
    match_pb2.PIXEL_TYPE_UNSPECIFIED: "uint8",
    match_pb2.PIXEL_TYPE_UINT8: "uint8",
    match_pb2.PIXEL_TYPE_UINT16: "uint16",
    match_pb2.PIXEL_TYPE_FLOAT32: "float32",
}


def decision_pb(decision: Decision | None) -> int:
    return (
        match_pb2.Decision.Value(f"DECISION_{decision.value}") if decision else match_pb2.DECISION_UNSPECIFIED
    )


_DIRECTION = {flight_pb2.DIRECTION_DEPARTURE: DEPARTURE, flight_pb2.DIRECTION_ARRIVAL: ARRIVAL}


def direction_of(value: int) -> str | None:
    """A request's direction; None when unspecified (either)."""
    if value != flight_pb2.DIRECTION_UNSPECIFIED and value not in _DIRECTION:
        raise RequestError(f"direction {value} is not a known direction")
    return _DIRECTION.get(value)


def direction_pb(direction: str) -> int:
    return next(value for value, name in _DIRECTION.items() if name == direction)


def date_of(text: str, name: str = "flight_date") -> date | None:
    """A YYYY-MM-DD date (None when empty)."""
    if not text:
        return None
    try:
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise RequestError(f"{name} {text[:20]!r} is not a date written YYYY-MM-DD") from None


def flight_ref(flight_id: str, flight_date: str, direction: int) -> FlightRef:
    return FlightRef(flight_id, date_of(flight_date), direction_of(direction))


def image_of(frame: match_pb2.Frame) -> bytes | RawPixels:
    return image_data(frame.image)


def image_data(image: match_pb2.Image) -> bytes | RawPixels:
    kind = image.WhichOneof("data")
    if kind == "raw":
        raw = image.raw
        return RawPixels(
            raw.pixels,
            raw.width,
            raw.height,
            raw.channels,
            _DTYPE.get(raw.dtype, f"type {raw.dtype}"),
            raw.channel_order == match_pb2.CHANNEL_ORDER_RGB,
        )
    return image.encoded  # empty when no image was set: the data plane refuses it


def frame_problem(frame: match_pb2.Frame) -> RequestError | None:
    """Why the frame's own fields are unusable: ids longer than the audit log records, an impossible time."""
    for name in ("camera_id", "gate_id", "flight_id"):
        if len(getattr(frame, name)) > MAX_TEXT:
            return RequestError(f"{name} is {len(getattr(frame, name))} characters, over {MAX_TEXT}")
    if frame.HasField("captured_at"):
        try:
            frame.captured_at.ToDatetime(UTC)
        except (ValueError, OverflowError) as exc:
            return RequestError(f"captured_at is not a valid time: {exc}")
    try:
        flight_ref(frame.flight_id, frame.flight_date, frame.direction)
    except RequestError as exc:
        return exc
    return None


def stream_frame(frame: match_pb2.Frame) -> StreamFrame:
    """A received frame for the scheduler; a frame with unusable fields carries its problem (an error event)."""
    problem = frame_problem(frame)
    captured = frame.captured_at.ToDatetime(UTC) if frame.HasField("captured_at") and not problem else None
    flight = flight_ref(frame.flight_id, frame.flight_date, frame.direction) if not problem else None
    return StreamFrame(
        frame.camera_id,
        frame.gate_id,
        frame.flight_id,
        frame.sequence,
        image_of(frame),
        captured,
        problem,
        flight_date=flight.flight_date if flight else None,
        direction=flight.direction if flight else None,
    )


def candidate_pb(candidate: Candidate) -> match_pb2.Candidate:
    return match_pb2.Candidate(
        traveler_id=candidate.traveler_id,
        score=candidate.score,
        confidence=candidate.confidence or 0.0,
        estimated_fpir=candidate.estimated_fpir if candidate.estimated_fpir is not None else 1.0,
    )


def disclosed(
    result: SearchResult | None, decision: Decision, count: int, ranking: bool = False
) -> list[Candidate]:
    """The candidates an answer may carry: only a MATCH names travelers (the match first, `count` at most);
    an analyst's ranking lists the top `count` whatever the decision."""
    if result is None or count < 1 or not (ranking or decision is Decision.MATCH):
        return []
    return list(result.candidates[:count])


def faces_pb(
    assessment: Assessment | None, encounter_ids: dict[int, int] | None = None
) -> list[match_pb2.FaceObservation]:
    """Every detected face of the frame; gate-sized faces of a stream frame carry their encounter id."""
    if assessment is None or assessment.analysis is None:
        return []
    encounter_ids = encounter_ids or {}
    out = []
    for face in assessment.analysis.faces:
        x1, y1, x2, y2 = (float(v) for v in face.detection.box)
        observation = match_pb2.FaceObservation(
            box=match_pb2.Box(x1=x1, y1=y1, x2=x2, y2=y2),
            detection_score=face.detection.score,
            quality_passed=bool(face.quality and face.quality.passed),
            quality_reasons=list(face.quality.reasons) if face.quality else [],
            encounter_id=encounter_ids.get(id(face), 0),
            assessment_skipped=face.skipped is Skip.ASSESSMENT,
        )
        if face.liveness is not None:
            observation.liveness = face.liveness
        out.append(observation)
    return out


def stage_ms(stage_s: dict[str, float]) -> dict[str, float]:
    return {name: seconds * 1000 for name, seconds in stage_s.items()}


def match_response(
    result: FrameResult,
    frame: match_pb2.Frame,
    candidates: int,
    ranking: bool = False,
    flight_date: date | None = None,
) -> match_pb2.MatchResponse:
    """The unary answer; `candidates` is the count already capped by the server; `flight_date` is the
    gallery's flight's date at the site."""
    assessment = result.assessment
    gallery = result.gallery
    return match_pb2.MatchResponse(
        decision=decision_pb(result.decision),
        candidates=[candidate_pb(c) for c in disclosed(result.search, result.decision, candidates, ranking)],
        quality_reasons=list(assessment.reasons) if assessment else [],
        stage_ms=stage_ms(result.stage_s),
        faces=faces_pb(assessment),
        flight_id=frame.flight_id,
        gallery_version=str(result.gallery.version) if result.gallery else "",
        sequence=frame.sequence,
        threshold=result.search.threshold if result.search else 0.0,
        budget_ms=result.budget_s * 1000,
        false_match_probability=result.false_match_probability or 0.0,
        flight_date=flight_date.isoformat() if flight_date else "",
        direction=direction_pb(gallery.direction) if gallery else flight_pb2.DIRECTION_UNSPECIFIED,
    )


def observation_pb(event: FrameEvent) -> match_pb2.FrameObservation:
    observation = match_pb2.FrameObservation(
        sequence=event.frame.sequence,
        status=decision_pb(event.status),
        faces=faces_pb(event.assessment, event.encounter_ids),
        stage_ms=stage_ms(event.stage_s),
        dropped_frames=event.dropped,
        passed_over=event.passed_over,
    )
    if event.frame.captured_at is not None:
        observation.captured_at.FromDatetime(event.frame.captured_at)
    if event.error is not None:
        code, message = event.error
        observation.error.CopyFrom(match_pb2.FrameError(code=code.value[0], message=message))
    return observation


def decision_message(event: EncounterEvent) -> match_pb2.EncounterDecision:
    """An encounter's one decision; it names the matched traveler on MATCH only."""
    outcome, result = event.outcome, event.result
    return match_pb2.EncounterDecision(
        encounter_id=outcome.encounter_id,
        decision=decision_pb(event.decision),
        candidates=[candidate_pb(c) for c in disclosed(result, event.decision, 1)],
        frames_used=outcome.frames_used,
        frames_seen=outcome.frames_seen,
        first_sequence=outcome.first_sequence,
        last_sequence=outcome.last_sequence,
        elapsed_ms=outcome.elapsed_s * 1000,
        flight_id=event.flight_id,
        gallery_version=str(result.version) if result else "",
        threshold=result.threshold if result else 0.0,
        dropped_frames=event.dropped,
        tailgating=outcome.tailgating,
        false_match_probability=outcome.false_match_probability or 0.0,
        flight_date=event.flight_date.isoformat() if event.flight_date else "",
        direction=direction_pb(event.gallery.direction)
        if event.gallery
        else flight_pb2.DIRECTION_UNSPECIFIED,
    )


def event_pb(event: StreamEvent) -> match_pb2.StreamEvent:
    if isinstance(event, FrameEvent):
        return match_pb2.StreamEvent(observation=observation_pb(event))
    return match_pb2.StreamEvent(decision=decision_message(event))


def gallery_pb(info: GalleryInfo, flight_date: date) -> gallery_pb2.GalleryInfo:
    """A gallery's description; `flight_date` is its flight's date at the site."""
    message = gallery_pb2.GalleryInfo(
        flight_id=info.flight_id,
        version=str(info.version),
        pack=info.pack,
        embedder=info.embedder.name,
        embedder_sha256=info.embedder.sha256,
        traveler_count=info.travelers,
        template_count=info.templates,
        expired=info.expired(),
        direction=direction_pb(info.direction),
        flight_date=flight_date.isoformat(),
        content_hash=info.content_hash,
    )
    message.departure_utc.FromDatetime(info.departure)
    message.expires_at.FromDatetime(info.expires_at)
    message.created_at.FromDatetime(info.created_at)
    return message


def load_header(header: gallery_pb2.GalleryHeader) -> LoadHeader:
    if not header.flight_id or not header.HasField("departure_utc"):
        raise ManifestError("gallery header needs flight_id and departure_utc")
    try:
        departure = header.departure_utc.ToDatetime(UTC)
        retention = header.retention.ToTimedelta() if header.HasField("retention") else timedelta(0)
    except (ValueError, OverflowError) as exc:  # found by the fuzz harness: seconds beyond any datetime
        raise ManifestError(f"gallery header has an impossible time: {exc}") from None
    return LoadHeader(
        flight_id=header.flight_id,
        departure=departure,
        pack=header.pack,
        retention=retention if retention > timedelta(0) else None,
        embedder=header.embedder,
        embedder_sha256=header.embedder_sha256,
        embedding_size=header.embedding_size,
        direction=direction_of(header.direction) or DEPARTURE,
    )


@dataclass(frozen=True)
class UpdateRequest:
    """A delta's header: which gallery, whom it removes, where added templates come from, why."""

    flight: FlightRef
    removals: tuple[str, ...]
    embedder: ModelRef
    reason: str


def update_header(header: gallery_pb2.UpdateHeader) -> UpdateRequest:
    if not header.flight_id:
        raise ManifestError("a gallery update names its flight (flight_id)")
    if len(header.reason) > MAX_TEXT:
        raise RequestError(f"reason is {len(header.reason)} characters, over {MAX_TEXT}")
    return UpdateRequest(
        flight_ref(header.flight_id, header.flight_date, header.direction),
        tuple(header.remove),
        ModelRef(header.embedder, header.embedder_sha256),
        header.reason,
    )


# -- 1:1 verification ----------------------------------------------------------------------------------------


def reference_of(
    message: match_pb2.VerifyRequest | match_pb2.VerifyReference,
) -> bytes | RawPixels | tuple[ModelRef, Sequence[float]]:
    """The reference a Verify request (or a verification stream's first message) carries: image bytes or pixels,
    or (embedder, template values)."""
    kind = message.WhichOneof("reference")
    if kind in ("reference_photo", "photo"):
        return image_data(getattr(message, kind))
    if kind in ("reference_template", "template"):
        template = getattr(message, kind)
        return ModelRef(template.embedder, template.embedder_sha256), template.values
    raise RequestError("a verification needs a reference: a photo or a template")


def verify_response(result: VerifyResult, frame: match_pb2.Frame) -> match_pb2.VerifyResponse:
    assessment = result.assessment
    return match_pb2.VerifyResponse(
        decision=decision_pb(result.decision),
        score=result.score if result.score is not None else 0.0,
        false_match_rate=result.false_match_rate if result.false_match_rate is not None else 1.0,
        threshold=result.threshold,
        target_fmr=result.target_fmr,
        quality_reasons=list(assessment.reasons) if assessment else [],
        stage_ms=stage_ms(result.stage_s),
        faces=faces_pb(assessment),
        sequence=frame.sequence,
        budget_ms=result.budget_s * 1000,
    )


# -- gate assignments ----------------------------------------------------------------------------------------


def _timestamp(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def assignment_pb(assignment: GateAssignment) -> gate_pb2.GateAssignment:
    message = gate_pb2.GateAssignment(
        assignment_id=assignment.assignment_id,
        gate_id=assignment.gate_id,
        flight_id=assignment.flight_id,
        starts_at=_timestamp(assignment.starts_at),
        ends_at=_timestamp(assignment.ends_at),
        assigned_by=assignment.assigned_by,
        assigned_at=_timestamp(assignment.assigned_at),
        released_by=assignment.released_by,
    )
    if assignment.released_at is not None:
        message.released_at.CopyFrom(_timestamp(assignment.released_at))
    return message


@dataclass(frozen=True)
class AssignRequest:
    gate_id: str
    flight_id: str
    starts_at: datetime
    ends_at: datetime
    replace: bool
    reason: str


def assign_request(request: gate_pb2.AssignGateRequest, now: datetime) -> AssignRequest:
    """The request's fields as the store takes them (a missing start is now); RequestError when unusable."""
    if not request.HasField("ends_at"):
        raise RequestError("an assignment needs ends_at: run-time assignments always end")
    if len(request.reason) > MAX_TEXT:
        raise RequestError(f"reason is {len(request.reason)} characters, over {MAX_TEXT}")
    try:
        starts = request.starts_at.ToDatetime(UTC) if request.HasField("starts_at") else now
        ends = request.ends_at.ToDatetime(UTC)
    except (ValueError, OverflowError) as exc:
        raise RequestError(f"the assignment's window is not a valid time: {exc}") from None
    return AssignRequest(request.gate_id, request.flight_id, starts, ends, request.replace, request.reason)
