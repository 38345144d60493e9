"""gRPC servicers: caller identity and flight authorization around the data plane, nothing else.

Messages are converted in gatematch.service.converters.

Every status code comes from gatematch.service.status (typed errors propagate to `abort`); matching, budgets,
streams and gallery loading live in the data plane and the stream scheduler.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import grpc

from gatematch.errors import AuthorizationError, GatematchError, ManifestError, RequestError
from gatematch.service.audit import AuditLog, AuditRecord
from gatematch.service.converters import (
    event_pb,
    frame_problem,
    gallery_pb,
    image_of,
    load_header,
    match_response,
    stream_frame,
)
from gatematch.service.dataplane import (
    DataPlane,
    Probe,
)
from gatematch.service.security import ANALYST, CAMERA, Authenticator, Identity
from gatematch.service.status import abort
from gatematch.service.streams import StreamFrame, StreamScheduler
from gatematch.service.telemetry import Telemetry
from gatematch.v1 import gallery_pb2, gallery_pb2_grpc, match_pb2, match_pb2_grpc

Ready = Callable[[], tuple[DataPlane, StreamScheduler]]  # raises ModelError while models are loading


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
        arrived = time.monotonic()
        frame = request.frame
        try:
            identity = self.auth.identify(context)
            problem = frame_problem(frame)
            if problem is not None:
                raise problem
            if request.include_ranking and ANALYST not in identity.roles:
                raise AuthorizationError(
                    f"client {identity.name!r}: only the analyst role may ask for rankings"
                )
            if CAMERA in identity.roles:
                self._authorize(identity, frame)
            plane, _ = self.ready()
            captured = stream_frame(frame).capture_delay_s
            budget = plane.budget(context.time_remaining(), self.margin_s, arrived=arrived, age_s=captured)
            wanted = request.max_candidates or (plane.max_candidates if request.include_ranking else 1)
            count = min(wanted, plane.max_candidates)
            probe = Probe(frame.flight_id, image_of(frame), frame.sequence)
            result = plane.run_match(probe, budget, max(count, 1))
        except Exception as exc:  # typed errors get their code; a bug is INTERNAL and leaks nothing
            abort(context, exc)
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
                lambda f: plane.budget(
                    context.time_remaining(), self.margin_s, arrived=f.received, age_s=f.capture_delay_s
                ),
            )
            for event in events:
                yield event_pb(event)
        except Exception as exc:  # typed errors get their code; a bug is INTERNAL and leaks nothing
            abort(context, exc)


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
