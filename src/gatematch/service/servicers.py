"""gRPC servicers: messages in, the data plane, messages out; flight authorization and audit of what was done.

Who is calling, whether their role allows the method, whether there is room, and what an error becomes are
decided once for every method by the edge (gatematch.service.edge); servicers raise typed errors and read the
caller from `context.identity`. Messages are converted in gatematch.service.converters.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

from gatematch.errors import AssignmentNotFoundError, AuthorizationError, ManifestError, RequestError
from gatematch.gallery import GalleryInfo, iso
from gatematch.gates import GateAssignment, check_assignment
from gatematch.service.audit import MAX_TEXT, AuditRecord, AuditSink
from gatematch.service.config import VerifyConfig
from gatematch.service.converters import (
    assign_request,
    assignment_pb,
    event_pb,
    flight_ref,
    frame_problem,
    gallery_pb,
    image_of,
    load_header,
    match_response,
    reference_of,
    stream_frame,
    update_header,
    verify_response,
)
from gatematch.service.dataplane import DataPlane, GalleryLoad, Probe
from gatematch.service.edge import CallContext
from gatematch.service.flow import guarded
from gatematch.service.security import ANALYST, CAMERA, Authenticator, Identity
from gatematch.service.streams import StreamFrame, StreamScheduler, Verification
from gatematch.service.telemetry import Telemetry
from gatematch.v1 import gallery_pb2, gallery_pb2_grpc, gate_pb2, gate_pb2_grpc, match_pb2, match_pb2_grpc

Ready = Callable[[], tuple[DataPlane, StreamScheduler]]  # raises ModelError while models are loading


class MatchServicer(match_pb2_grpc.MatchServiceServicer):
    def __init__(
        self,
        ready: Ready,
        auth: Authenticator,
        audit: AuditSink,
        telemetry: Telemetry,
        margin_s: float,
        verify: VerifyConfig,
    ):
        self.ready = ready
        self.auth = auth
        self.audit = audit
        self.telemetry = telemetry
        self.margin_s = margin_s
        self.verify = verify

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
        flight = flight_ref(frame.flight_id, frame.flight_date, frame.direction)
        probe = Probe(frame.flight_id, image_of(frame), frame.sequence, flight.flight_date, flight.direction)
        result = plane.run_match(probe, budget, max(count, 1))
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
        flight_date = plane.local_date(result.gallery) if result.gallery else None
        return match_response(result, frame, count, ranking=request.include_ranking, flight_date=flight_date)

    def StreamVerify(
        self, request_iterator: Iterator[match_pb2.VerifyStreamRequest], context: CallContext
    ) -> Iterator[match_pb2.StreamEvent]:
        """1:1 over a stream: the reference first (embedded once, kept in this call's memory only), then frames
        whose encounters are decided against it as StreamMatch decides them against a flight."""
        identity = context.identity
        plane, scheduler = self.ready()
        parts = guarded(request_iterator, scheduler.idle_s, scheduler.max_s, "the verification stream")
        first = next(parts, None)
        if first is None or first.WhichOneof("part") != "reference":
            raise RequestError("a verification stream starts with its reference")
        reference = reference_of(first.reference)
        budget = plane.budget(context.time_remaining(), self.margin_s, seconds=self.verify.budget_ms / 1000)
        template = plane.pool.run(lambda _b: plane.reference_template(reference), budget)
        lasts = timedelta(seconds=scheduler.max_s) + timedelta(hours=1)
        verification = Verification(plane.reference_gallery(template, lasts), self.verify.target_fmr)

        def authorize(frame: StreamFrame) -> None:
            if CAMERA in identity.roles:
                self.auth.authorize_camera(identity, frame.camera_id, frame.gate_id)

        frames = (
            stream_frame(part.frame)
            if part.WhichOneof("part") == "frame"
            else StreamFrame("", "", "", 0, b"", problem=RequestError("only frames follow the reference"))
            for part in parts
        )
        events = scheduler.run(
            frames,
            authorize,
            identity.name,
            context.is_active,
            lambda f: plane.budget(
                context.time_remaining(), self.margin_s, arrived=f.received, age_s=f.capture_delay_s
            ),
            verification,
        )
        for event in events:
            yield event_pb(event)

    def Verify(self, request: match_pb2.VerifyRequest, context: CallContext) -> match_pb2.VerifyResponse:
        """1:1: the live frame against the reference in the request; the reference is used in memory for this
        call only (never stored, never logged or audited: the audit record has the decision and score)."""
        arrived = time.monotonic()
        identity, frame = context.identity, request.frame
        problem = frame_problem(frame)
        if problem is not None:
            raise problem
        if CAMERA in identity.roles:
            self.auth.authorize_camera(identity, frame.camera_id, frame.gate_id)
        reference = reference_of(request)
        plane, _ = self.ready()
        captured = stream_frame(frame).capture_delay_s
        budget = plane.budget(
            context.time_remaining(),
            self.margin_s,
            arrived=arrived,
            age_s=captured,
            seconds=self.verify.budget_ms / 1000,
        )
        result = plane.run_verify(image_of(frame), reference, self.verify.target_fmr, budget)
        self.telemetry.observe_stages(result.stage_s)
        self.telemetry.decisions.labels("verify", result.decision.value).inc()
        self.audit.record(
            AuditRecord(
                "verify",
                identity.name,
                camera_id=frame.camera_id,
                gate_id=frame.gate_id,
                decision=result.decision.value,
                score=result.score,
                confidence=1.0 - result.false_match_rate if result.false_match_rate is not None else None,
                sequence=frame.sequence,
                detail=f"reference {request.WhichOneof('reference')}, target FMR {result.target_fmr:g}",
            )
        )
        return verify_response(result, frame)

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
        _receive(plane, enrollment, parts, "the gallery load")
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
            gallery=gallery_pb(result.info, plane.local_date(result.info)),
            rejected=[
                gallery_pb2.EnrollmentRejection(traveler_id=f.traveler_id, reason=f"{f.reason}: {f.detail}")
                for f in result.failures
            ],
        )

    def Update(
        self, request_iterator: Iterator[gallery_pb2.UpdateGalleryRequest], context: CallContext
    ) -> gallery_pb2.UpdateGalleryResponse:
        """A delta: the header says which gallery and whom to remove; chunks add travelers; the commit counts."""
        identity = context.identity
        plane, _ = self.ready()
        parts = guarded(request_iterator, self.idle_s, self.max_s, "the gallery update")
        first = next(parts, None)
        if first is None or first.WhichOneof("part") != "header":
            raise ManifestError("a gallery update starts with its header")
        header = update_header(first.header)
        self.auth.authorize_flight(identity, header.flight.flight_id)
        info = plane.find(header.flight)
        delta = plane.delta(info, header.embedder)
        _receive(plane, delta, parts, "the gallery update")
        result = delta.finish_delta(info.gallery_id, header.removals)
        for event, travelers in (("gallery.add", result.added), ("gallery.remove", result.removed)):
            if travelers:
                self.audit.record(
                    AuditRecord(
                        event,
                        identity.name,
                        flight_id=result.info.flight_id,
                        gallery_version=str(result.info.version),
                        detail=_listed(result.info, travelers, header.reason, result.unchanged),
                    )
                )
        return gallery_pb2.UpdateGalleryResponse(
            gallery=gallery_pb(result.info, plane.local_date(result.info)),
            rejected=[
                gallery_pb2.EnrollmentRejection(traveler_id=f.traveler_id, reason=f"{f.reason}: {f.detail}")
                for f in result.failures
            ],
            added=list(result.added),
            removed=list(result.removed),
            unchanged=result.unchanged,
        )

    def Get(self, request: gallery_pb2.GetGalleryRequest, context: CallContext) -> gallery_pb2.GalleryInfo:
        identity = context.identity
        self.auth.authorize_flight(identity, request.flight_id)
        plane, _ = self.ready()
        info = plane.current_info(flight_ref(request.flight_id, request.flight_date, request.direction))
        self.audit.record(
            AuditRecord(
                "gallery.read", identity.name, flight_id=request.flight_id, gallery_version=str(info.version)
            )
        )
        return gallery_pb(info, plane.local_date(info))

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
        return gallery_pb2.ListGalleriesResponse(
            galleries=[gallery_pb(i, plane.local_date(i)) for i in infos]
        )

    def Delete(
        self, request: gallery_pb2.DeleteGalleryRequest, context: CallContext
    ) -> gallery_pb2.DeleteGalleryResponse:
        identity = context.identity
        self.auth.authorize_flight(identity, request.flight_id)
        plane, _ = self.ready()
        purged = plane.purge_flight(flight_ref(request.flight_id, request.flight_date, request.direction))
        self.audit.record(
            AuditRecord(
                "gallery.delete",
                identity.name,
                flight_id=request.flight_id,
                detail=(request.reason or "no reason given")[:200],
            )
        )
        return gallery_pb2.DeleteGalleryResponse(deleted=True, templates_purged=purged)


def _receive(plane: DataPlane, load: GalleryLoad, parts: Iterator, what: str) -> None:
    """Photo and template chunks into `load` (photos embedded on the inference pool), up to the commit, which
    must count what arrived: a stream cut short is never taken for a finished one."""
    photos = templates = 0
    commit = None
    for part in parts:
        kind = part.WhichOneof("part")
        if commit is not None:
            raise ManifestError(f"unexpected {kind or 'empty part'} after the commit")
        if kind == "photos":
            chunk = [(p.traveler_id, p.image) for p in part.photos.photos]
            plane.pool.run(lambda _b, c=chunk: load.add_photos(c), plane.admin_budget())
            photos += len(chunk)
        elif kind == "templates":
            load.add_templates([(t.traveler_id, t.values) for t in part.templates.templates])
            templates += len(part.templates.templates)
        elif kind == "commit":
            commit = part.commit
        else:
            raise ManifestError(f"unexpected {kind or 'empty part'} after the header")
    if commit is None:
        raise RequestError(f"{what} ended without its commit message; nothing was written")
    if (commit.photo_count, commit.template_count) != (photos, templates):
        raise RequestError(
            f"{what}'s commit announces {commit.photo_count} photos and {commit.template_count} "
            f"templates, but {photos} and {templates} arrived; nothing was written"
        )


def _listed(info: GalleryInfo, travelers: tuple[str, ...], reason: str, unchanged: bool) -> str:
    """An audit detail naming a delta's travelers (ids, never biometric data), cut to the record's size."""
    text = f"{info.gallery_id}: {', '.join(travelers)}" + (" (unchanged)" if unchanged else "")
    text += f"; {reason}" if reason else ""
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 3] + "..."


class GateServicer(gate_pb2_grpc.GateServiceServicer):
    """Run-time gate assignments: kept in the gallery store, honoured by the authenticator at once, audited."""

    def __init__(self, ready: Ready, auth: Authenticator, audit: AuditSink):
        self.ready = ready
        self.auth = auth
        self.audit = audit

    def Assign(
        self, request: gate_pb2.AssignGateRequest, context: CallContext
    ) -> gate_pb2.AssignGateResponse:
        identity = context.identity
        now = datetime.now(UTC)
        wanted = assign_request(request, now)
        starts, ends = check_assignment(
            wanted.gate_id, wanted.flight_id, wanted.starts_at, wanted.ends_at, now
        )
        self.auth.authorize_flight(identity, wanted.flight_id)
        self.auth.check_gate(wanted.gate_id)
        plane, _ = self.ready()
        if wanted.replace:  # a reassignment ends other flights' assignments: those must be in scope too
            for other in plane.store.gate_assignments(now, wanted.gate_id):
                if other.overlaps(starts, ends):
                    self.auth.authorize_flight(identity, other.flight_id)
        result = plane.store.assign_gate(
            wanted.gate_id, wanted.flight_id, starts, ends, identity.name, replace=wanted.replace, now=now
        )
        for released in result.released:
            self._audit(
                "gate.release", identity.name, released, f"replaced by {result.assignment.assignment_id}"
            )
        self._audit("gate.assign", identity.name, result.assignment, wanted.reason)
        return gate_pb2.AssignGateResponse(
            assignment=assignment_pb(result.assignment),
            released=[assignment_pb(a) for a in result.released],
        )

    def Release(self, request: gate_pb2.ReleaseGateRequest, context: CallContext) -> gate_pb2.GateAssignment:
        identity = context.identity
        if len(request.reason) > MAX_TEXT:
            raise RequestError(f"reason is {len(request.reason)} characters, over {MAX_TEXT}")
        plane, _ = self.ready()
        current = next(
            (a for a in plane.store.gate_assignments() if a.assignment_id == request.assignment_id), None
        )
        if current is None:
            raise AssignmentNotFoundError(
                f"no gate assignment {request.assignment_id} in force or to come (released, over, or unknown)"
            )
        self.auth.authorize_flight(identity, current.flight_id)
        released = plane.store.release_gate(request.assignment_id, identity.name)
        self._audit("gate.release", identity.name, released, request.reason)
        return assignment_pb(released)

    def List(
        self, request: gate_pb2.ListGateAssignmentsRequest, context: CallContext
    ) -> gate_pb2.ListGateAssignmentsResponse:
        identity = context.identity
        plane, _ = self.ready()
        assignments = [
            a
            for a in plane.store.gate_assignments(gate_id=request.gate_id or None)
            if self.auth.in_scope(identity, a.flight_id)
        ]
        self.audit.record(AuditRecord("gate.list", identity.name, detail=f"{len(assignments)} assignments"))
        return gate_pb2.ListGateAssignmentsResponse(assignments=[assignment_pb(a) for a in assignments])

    def _audit(self, event: str, client: str, assignment: GateAssignment, note: str) -> None:
        detail = (
            f"assignment {assignment.assignment_id}, {iso(assignment.starts_at)} to {iso(assignment.ends_at)}"
        )
        detail += f"; {note}" if note else ""
        self.audit.record(
            AuditRecord(
                event,
                client,
                flight_id=assignment.flight_id,
                gate_id=assignment.gate_id,
                detail=detail[:MAX_TEXT],
            )
        )
