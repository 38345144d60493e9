"""gRPC servicers: messages in, the data plane, messages out; flight authorization and audit of what was done.

Who is calling, whether their role allows the method, whether there is room, and what an error becomes are
decided once for every method by the edge (gatematch.service.edge); servicers raise typed errors and read the
caller from `context.identity`. Messages are converted in gatematch.service.converters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from gatematch.errors import AuthorizationError, ManifestError, RequestError
from gatematch.service.audit import AuditRecord, AuditSink
from gatematch.service.converters import (
    event_pb,
    frame_problem,
    gallery_pb,
    image_of,
    load_header,
    match_response,
    stream_frame,
)
from gatematch.service.dataplane import DataPlane, Probe
from gatematch.service.edge import CallContext
from gatematch.service.flow import guarded
from gatematch.service.security import ANALYST, CAMERA, Authenticator, Identity
from gatematch.service.streams import StreamFrame, StreamScheduler
from gatematch.service.telemetry import Telemetry
from gatematch.v1 import gallery_pb2, gallery_pb2_grpc, match_pb2, match_pb2_grpc

Ready = Callable[[], tuple[DataPlane, StreamScheduler]]  # raises ModelError while models are loading


class MatchServicer(match_pb2_grpc.MatchServiceServicer):
    def __init__(
        self, ready: Ready, auth: Authenticator, audit: AuditSink, telemetry: Telemetry, margin_s: float
    ):
        self.ready = ready
        self.auth = auth
        self.audit = audit
        self.telemetry = telemetry
        self.margin_s = margin_s

    def _authorize(self, identity: Identity, frame: match_pb2.Frame | StreamFrame) -> None:
        """A camera: its gate must serve the flight. An analyst (not a camera): the flight must be in scope."""
        if CAMERA in identity.roles:
            self.auth.authorize_frame(identity, frame.camera_id, frame.gate_id, frame.flight_id)
        else:
            self.auth.authorize_flight(identity, frame.flight_id)

    def Match(self, request: match_pb2.MatchRequest, context: CallContext) -> match_pb2.MatchResponse:
        arrived = time.monotonic()
        identity, frame = context.identity, request.frame
        problem = frame_problem(frame)
        if problem is not None:
            raise problem
        if request.include_ranking and ANALYST not in identity.roles:
            raise AuthorizationError(f"client {identity.name!r}: only the analyst role may ask for rankings")
        self._authorize(identity, frame)
        plane, _ = self.ready()
        captured = stream_frame(frame).capture_delay_s
        budget = plane.budget(context.time_remaining(), self.margin_s, arrived=arrived, age_s=captured)
        wanted = request.max_candidates or (plane.max_candidates if request.include_ranking else 1)
        count = min(wanted, plane.max_candidates)
        result = plane.run_match(
            Probe(frame.flight_id, image_of(frame), frame.sequence), budget, max(count, 1)
        )
        self.telemetry.observe_stages(result.stage_s)
        self.telemetry.decisions.labels("unary", result.decision.value).inc()
        top = result.search.candidates[0] if result.search and result.search.candidates else None
        match = result.search.match if result.search else None
        fmp = result.false_match_probability
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
                confidence=1.0 - fmp if fmp is not None else None,
                sequence=frame.sequence,
                detail="ranking" if request.include_ranking else "",
            )
        )
        return match_response(result, frame, count, ranking=request.include_ranking)

    def StreamMatch(
        self, request_iterator: Iterator[match_pb2.Frame], context: CallContext
    ) -> Iterator[match_pb2.StreamEvent]:
        identity = context.identity
        plane, scheduler = self.ready()
        events = scheduler.run(
            (stream_frame(f) for f in request_iterator),
            lambda frame: self._authorize(identity, frame),
            identity.name,
            context.is_active,
            lambda f: plane.budget(
                context.time_remaining(), self.margin_s, arrived=f.received, age_s=f.capture_delay_s
            ),
        )
        for event in events:
            yield event_pb(event)


class GalleryServicer(gallery_pb2_grpc.GalleryServiceServicer):
    def __init__(self, ready: Ready, auth: Authenticator, audit: AuditSink, idle_s: float, max_s: float):
        self.ready = ready
        self.auth = auth
        self.audit = audit
        self.idle_s = idle_s
        self.max_s = max_s

    def Load(
        self, request_iterator: Iterator[gallery_pb2.LoadGalleryRequest], context: CallContext
    ) -> gallery_pb2.LoadGalleryResponse:
        identity = context.identity
        plane, _ = self.ready()
        parts = guarded(request_iterator, self.idle_s, self.max_s, "the gallery load")
        first = next(parts, None)
        if first is None or first.WhichOneof("part") != "header":
            raise ManifestError("a gallery load starts with its header")
        header = load_header(first.header)
        self.auth.authorize_flight(identity, header.flight_id)
        enrollment = plane.enrollment(header)
        photos = templates = 0
        commit = None
        for part in parts:
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

    def Get(self, request: gallery_pb2.GetGalleryRequest, context: CallContext) -> gallery_pb2.GalleryInfo:
        identity = context.identity
        self.auth.authorize_flight(identity, request.flight_id)
        plane, _ = self.ready()
        info = plane.current_info(request.flight_id)
        self.audit.record(
            AuditRecord(
                "gallery.read", identity.name, flight_id=request.flight_id, gallery_version=str(info.version)
            )
        )
        return gallery_pb(info)

    def List(
        self, request: gallery_pb2.ListGalleriesRequest, context: CallContext
    ) -> gallery_pb2.ListGalleriesResponse:
        identity = context.identity
        plane, _ = self.ready()
        infos = [
            i
            for i in plane.store.galleries()
            if (request.include_expired or not i.expired()) and self.auth.in_scope(identity, i.flight_id)
        ]
        self.audit.record(AuditRecord("gallery.list", identity.name, detail=f"{len(infos)} galleries"))
        return gallery_pb2.ListGalleriesResponse(galleries=[gallery_pb(i) for i in infos])

    def Delete(
        self, request: gallery_pb2.DeleteGalleryRequest, context: CallContext
    ) -> gallery_pb2.DeleteGalleryResponse:
        identity = context.identity
        self.auth.authorize_flight(identity, request.flight_id)
        plane, _ = self.ready()
        purged = plane.purge_flight(request.flight_id)
        self.audit.record(
            AuditRecord(
                "gallery.delete",
                identity.name,
                flight_id=request.flight_id,
                detail=(request.reason or "no reason given")[:200],
            )
        )
        return gallery_pb2.DeleteGalleryResponse(deleted=True, templates_purged=purged)
