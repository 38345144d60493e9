"""gRPC servicers: messages <-> data-plane types, caller identity and flight authorization, nothing else.

Every status code comes from gatematch.service.status (typed errors propagate to `abort`); matching, budgets,
streams and gallery loading live in the data plane and the stream scheduler.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, timedelta

import grpc

from gatematch.errors import GatematchError, ManifestError, RequestError
from gatematch.gallery import Candidate, GalleryInfo, SearchResult
from gatematch.service.audit import MAX_TEXT, AuditLog, AuditRecord
from gatematch.service.dataplane import (
    Assessment,
    DataPlane,
    Decision,
    FrameResult,
    LoadHeader,
    Probe,
    RawPixels,
)
from gatematch.service.security import Authenticator, Identity
from gatematch.service.status import abort
from gatematch.service.streams import FrameEvent, StreamEvent, StreamFrame, StreamScheduler
from gatematch.service.telemetry import Telemetry
from gatematch.v1 import gallery_pb2, gallery_pb2_grpc, match_pb2, match_pb2_grpc

Ready = Callable[[], tuple[DataPlane, StreamScheduler]]  # raises ModelError while models are loading

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


def image_of(frame: match_pb2.Frame) -> bytes | RawPixels:
    kind = frame.image.WhichOneof("data")
    if kind == "raw":
        raw = frame.image.raw
        return RawPixels(
            raw.pixels,
            raw.width,
            raw.height,
            raw.channels,
            _DTYPE.get(raw.dtype, f"type {raw.dtype}"),
            raw.channel_order == match_pb2.CHANNEL_ORDER_RGB,
        )
    return frame.image.encoded  # empty when no image was set: the data plane refuses it


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
    return None


def stream_frame(frame: match_pb2.Frame) -> StreamFrame:
    """A received frame for the scheduler; a frame with unusable fields carries its problem (an error event)."""
    problem = frame_problem(frame)
    captured = frame.captured_at.ToDatetime(UTC) if frame.HasField("captured_at") and not problem else None
    return StreamFrame(
        frame.camera_id, frame.gate_id, frame.flight_id, frame.sequence, image_of(frame), captured, problem
    )


def candidates_pb(result: SearchResult | None) -> list[match_pb2.Candidate]:
    def one(c: Candidate) -> match_pb2.Candidate:
        return match_pb2.Candidate(
            traveler_id=c.traveler_id,
            score=c.score,
            confidence=c.confidence or 0.0,
            estimated_fpir=c.estimated_fpir if c.estimated_fpir is not None else 1.0,
        )

    return [one(c) for c in result.candidates] if result else []


def faces_pb(assessment: Assessment | None, encounter_id: int = 0) -> list[match_pb2.FaceObservation]:
    if assessment is None or assessment.analysis is None:
        return []
    out = []
    for face in assessment.analysis.faces:
        x1, y1, x2, y2 = (float(v) for v in face.detection.box)
        observation = match_pb2.FaceObservation(
            box=match_pb2.Box(x1=x1, y1=y1, x2=x2, y2=y2),
            detection_score=face.detection.score,
            quality_passed=bool(face.quality and face.quality.passed),
            quality_reasons=list(face.quality.reasons) if face.quality else [],
            encounter_id=encounter_id if face is assessment.face else 0,
        )
        if face.liveness is not None:
            observation.liveness = face.liveness
        out.append(observation)
    return out


def stage_ms(stage_s: dict[str, float]) -> dict[str, float]:
    return {name: seconds * 1000 for name, seconds in stage_s.items()}


def match_response(result: FrameResult, frame: match_pb2.Frame) -> match_pb2.MatchResponse:
    assessment = result.assessment
    return match_pb2.MatchResponse(
        decision=decision_pb(result.decision),
        candidates=candidates_pb(result.search),
        quality_reasons=list(assessment.reasons) if assessment else [],
        stage_ms=stage_ms(result.stage_s),
        faces=faces_pb(assessment),
        flight_id=frame.flight_id,
        gallery_version=str(result.gallery.version) if result.gallery else "",
        sequence=frame.sequence,
        threshold=result.search.threshold if result.search else 0.0,
        budget_ms=result.budget_s * 1000,
    )


def event_pb(event: StreamEvent) -> match_pb2.StreamEvent:
    if isinstance(event, FrameEvent):
        observation = match_pb2.FrameObservation(
            sequence=event.frame.sequence,
            status=decision_pb(event.status),
            faces=faces_pb(event.assessment, event.encounter_id),
            stage_ms=stage_ms(event.stage_s),
            dropped_frames=event.dropped,
        )
        if event.frame.captured_at is not None:
            observation.captured_at.FromDatetime(event.frame.captured_at)
        if event.error is not None:
            code, message = event.error
            observation.error.CopyFrom(match_pb2.FrameError(code=code.value[0], message=message))
        return match_pb2.StreamEvent(observation=observation)
    outcome = event.outcome
    return match_pb2.StreamEvent(
        decision=match_pb2.EncounterDecision(
            encounter_id=outcome.encounter_id,
            decision=decision_pb(event.decision),
            candidates=candidates_pb(event.result),
            frames_used=outcome.frames_used,
            first_sequence=outcome.first_sequence,
            last_sequence=outcome.last_sequence,
            elapsed_ms=event.elapsed_s * 1000,
            flight_id=event.flight_id,
            gallery_version=str(event.result.version) if event.result else "",
            threshold=event.result.threshold if event.result else 0.0,
            dropped_frames=event.dropped,
        )
    )


class MatchServicer(match_pb2_grpc.MatchServiceServicer):
    def __init__(
        self, ready: Ready, auth: Authenticator, audit: AuditLog, telemetry: Telemetry, margin_s: float
    ):
        self.ready = ready
        self.auth = auth
        self.audit = audit
        self.telemetry = telemetry
        self.margin_s = margin_s

    def _authorize(self, identity: Identity, frame: match_pb2.Frame | StreamFrame) -> None:
        self.auth.authorize_frame(identity, frame.camera_id, frame.gate_id, frame.flight_id)

    def Match(
        self, request: match_pb2.MatchRequest, context: grpc.ServicerContext
    ) -> match_pb2.MatchResponse:
        frame = request.frame
        try:
            identity = self.auth.identify(context)
            problem = frame_problem(frame)
            if problem is not None:
                raise problem
            self._authorize(identity, frame)
            plane, _ = self.ready()
            budget = plane.budget(context.time_remaining(), self.margin_s)
            probe = Probe(frame.flight_id, image_of(frame), frame.sequence)
            result = plane.run_match(probe, budget, request.max_candidates or None)
        except Exception as exc:  # typed errors get their code; a bug is INTERNAL and leaks nothing
            abort(context, exc)
        self.telemetry.observe_stages(result.stage_s)
        self.telemetry.decisions.labels("unary", result.decision.value).inc()
        top = result.search.candidates[0] if result.search and result.search.candidates else None
        match = result.search.match if result.search else None
        self.audit.record(
            AuditRecord(
                "match",
                identity.name,
                flight_id=frame.flight_id,
                gallery_version=str(result.gallery.version) if result.gallery else "",
                camera_id=frame.camera_id,
                gate_id=frame.gate_id,
                decision=result.decision.value,
                traveler_id=match.traveler_id if match else "",
                score=float(top.score) if top else None,
                confidence=float(top.confidence) if top and top.confidence is not None else None,
                sequence=frame.sequence,
            )
        )
        return match_response(result, frame)

    def StreamMatch(
        self, request_iterator: Iterator[match_pb2.Frame], context: grpc.ServicerContext
    ) -> Iterator[match_pb2.StreamEvent]:
        try:
            identity = self.auth.identify(context)
            plane, scheduler = self.ready()
            events = scheduler.run(
                (stream_frame(f) for f in request_iterator),
                lambda frame: self._authorize(identity, frame),
                identity.name,
                context.is_active,
                lambda: plane.budget(context.time_remaining(), self.margin_s),
            )
            for event in events:
                yield event_pb(event)
        except Exception as exc:  # typed errors get their code; a bug is INTERNAL and leaks nothing
            abort(context, exc)


def gallery_pb(info: GalleryInfo) -> gallery_pb2.GalleryInfo:
    message = gallery_pb2.GalleryInfo(
        flight_id=info.flight_id,
        version=str(info.version),
        pack=info.pack,
        embedder=info.embedder.name,
        embedder_sha256=info.embedder.sha256,
        traveler_count=info.travelers,
        template_count=info.templates,
        expired=info.expired(),
    )
    message.departure_utc.FromDatetime(info.departure)
    message.expires_at.FromDatetime(info.expires_at)
    message.created_at.FromDatetime(info.created_at)
    return message


def load_header(header: gallery_pb2.GalleryHeader) -> LoadHeader:
    if not header.flight_id or not header.HasField("departure_utc"):
        raise ManifestError("gallery header needs flight_id and departure_utc")
    retention = header.retention.ToTimedelta() if header.HasField("retention") else timedelta(0)
    return LoadHeader(
        flight_id=header.flight_id,
        departure=header.departure_utc.ToDatetime(UTC),
        pack=header.pack,
        retention=retention if retention > timedelta(0) else None,
        embedder=header.embedder,
        embedder_sha256=header.embedder_sha256,
        embedding_size=header.embedding_size,
    )


class GalleryServicer(gallery_pb2_grpc.GalleryServiceServicer):
    def __init__(self, ready: Ready, auth: Authenticator, audit: AuditLog):
        self.ready = ready
        self.auth = auth
        self.audit = audit

    def Load(
        self, request_iterator: Iterator[gallery_pb2.LoadGalleryRequest], context: grpc.ServicerContext
    ) -> gallery_pb2.LoadGalleryResponse:
        try:
            identity = self.auth.identify(context)
            plane, _ = self.ready()
            first = next(request_iterator, None)
            if first is None or first.WhichOneof("part") != "header":
                raise ManifestError("a gallery load starts with its header")
            enrollment = plane.enrollment(load_header(first.header))
            photos = templates = 0
            commit = None
            for part in request_iterator:
                kind = part.WhichOneof("part")
                if commit is not None:
                    raise ManifestError(f"unexpected {kind or 'empty part'} after the commit")
                if kind == "photos":
                    chunk = [(p.traveler_id, p.image) for p in part.photos.photos]
                    plane.pool.run(lambda _b, c=chunk: enrollment.add_photos(c), plane.admin_budget())
                    photos += len(chunk)
                elif kind == "templates":
                    enrollment.add_templates([(t.traveler_id, t.values) for t in part.templates.templates])
                    templates += len(part.templates.templates)
                elif kind == "commit":
                    commit = part.commit
                else:
                    raise ManifestError(f"unexpected {kind or 'empty part'} after the header")
            if commit is None:
                raise RequestError("the gallery load ended without its commit message; nothing was written")
            if (commit.photo_count, commit.template_count) != (photos, templates):
                raise RequestError(
                    f"the gallery load's commit announces {commit.photo_count} photos and {commit.template_count} "
                    f"templates, but {photos} and {templates} arrived; nothing was written"
                )
            result = enrollment.finish()
        except GatematchError as exc:
            abort(context, exc)
        self.audit.record(
            AuditRecord(
                "gallery.load",
                identity.name,
                flight_id=result.info.flight_id,
                gallery_version=str(result.info.version),
                detail=f"{result.info.templates} templates, {len(result.failures)} rejected"
                + (", unchanged" if result.unchanged else ""),
            )
        )
        return gallery_pb2.LoadGalleryResponse(
            gallery=gallery_pb(result.info),
            rejected=[
                gallery_pb2.EnrollmentRejection(traveler_id=f.traveler_id, reason=f"{f.reason}: {f.detail}")
                for f in result.failures
            ],
        )

    def Get(
        self, request: gallery_pb2.GetGalleryRequest, context: grpc.ServicerContext
    ) -> gallery_pb2.GalleryInfo:
        try:
            plane, _ = self.ready()
            return gallery_pb(plane.current_info(request.flight_id))
        except GatematchError as exc:
            abort(context, exc)

    def List(
        self, request: gallery_pb2.ListGalleriesRequest, context: grpc.ServicerContext
    ) -> gallery_pb2.ListGalleriesResponse:
        try:
            plane, _ = self.ready()
            infos = [i for i in plane.store.galleries() if request.include_expired or not i.expired()]
        except GatematchError as exc:
            abort(context, exc)
        return gallery_pb2.ListGalleriesResponse(galleries=[gallery_pb(i) for i in infos])

    def Delete(
        self, request: gallery_pb2.DeleteGalleryRequest, context: grpc.ServicerContext
    ) -> gallery_pb2.DeleteGalleryResponse:
        try:
            identity = self.auth.identify(context)
            plane, _ = self.ready()
            purged = plane.purge_flight(request.flight_id)
        except GatematchError as exc:
            abort(context, exc)
        self.audit.record(
            AuditRecord(
                "gallery.delete",
                identity.name,
                flight_id=request.flight_id,
                detail=(request.reason or "no reason given")[:200],
            )
        )
        return gallery_pb2.DeleteGalleryResponse(deleted=True, templates_purged=purged)
