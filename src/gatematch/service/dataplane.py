"""The service's data plane, free of any protocol: one frame -> decision, and gallery loading.

Matching one frame is: resolve the flight's current gallery (before any inference, so an unknown flight costs
nothing), decode, analyse (detect, align, quality, embed, liveness), apply the frame rules (NO_FACE,
MULTIPLE_FACES, QUALITY_FAILED, LIVENESS_FAILED), then search. Every stage is only started when the running
cost estimate says it can finish inside the budget; a frame that cannot is answered BUDGET_EXCEEDED, never late.
gRPC servicers and the stream scheduler are thin layers over this module.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta, tzinfo
from enum import StrEnum
from typing import Any, TypeVar

import numpy as np

from gatematch.enrollment import Enrollment, EnrollmentPhoto, judge
from gatematch.errors import (
    AmbiguousFlightError,
    BadImageError,
    BudgetExceededError,
    CardError,
    GalleryExpiredError,
    GalleryNotFoundError,
    GalleryStoreError,
    ManifestError,
    NoFaceError,
    TemplateKeyError,
    WrongPackError,
)
from gatematch.facepipeline import Analysis, Face, FacePipeline, Skip
from gatematch.gallery import (
    DEPARTURE,
    Calibration,
    Calibrations,
    EnrollmentFailure,
    Gallery,
    GalleryInfo,
    ModelRef,
    OperatingPoint,
    SearchResult,
    in_memory_gallery,
    iso,
)
from gatematch.gallery_delta import DeltaResult, apply_delta, start_delta
from gatematch.gallery_store import GalleryStore, refuse_expired
from gatematch.images import ImageLimits, JpegFrame, decode_image, megapixels, open_frame, to_bgr
from gatematch.quality import QualityReport, QualityThresholds
from gatematch.service.encounter import Sighting
from gatematch.service.flow import Budget, StageCosts, WorkerPool

REFERENCE = "reference"  # the one traveler of a 1:1 verification's gallery (what its MATCH names)
LIVENESS_MIN_REAL = 0.5  # P(real) below this: presentation attack suspected
# A frame that names only a flight number is matched against the one gallery of that number whose scheduled
# time is this close to now (boarding starts hours before a departure; entry control runs hours after an
# arrival); several, or none while several are live, is ambiguous: the frame must say which.
IN_SERVICE = timedelta(hours=12)
ENROLL_BATCH = 8
LOG = logging.getLogger(__name__)
ADMIN_BUDGET_S = 600.0  # one chunk of enrollment photos on the inference pool
T = TypeVar("T")


class Decision(StrEnum):
    """Named as in the contract (gatematch.v1.Decision without the DECISION_ prefix)."""

    MATCH = "MATCH"
    NO_MATCH = "NO_MATCH"
    NO_FACE = "NO_FACE"
    QUALITY_FAILED = "QUALITY_FAILED"
    MULTIPLE_FACES = "MULTIPLE_FACES"
    LIVENESS_FAILED = "LIVENESS_FAILED"
    BUDGET_EXCEEDED = "BUDGET_EXCEEDED"


_DTYPES = {"uint8": np.dtype(np.uint8), "uint16": np.dtype("<u2"), "float32": np.dtype("<f4")}


@dataclass(frozen=True)
class RawPixels:
    """Decoded camera pixels, row-major, channels interleaved."""

    pixels: bytes
    width: int
    height: int
    channels: int
    dtype: str = "uint8"  # uint8 | uint16 | float32 (little-endian)
    rgb: bool = False  # False: BGR(A), the order most camera SDKs hand out

    def to_bgr(self, limits: ImageLimits) -> np.ndarray:
        """The pixels as BGR uint8, refusing any size or layout mismatch before touching the data."""
        dtype = _DTYPES.get(self.dtype)
        if dtype is None:
            raise BadImageError(f"raw pixel type {self.dtype!r} is not one of {sorted(_DTYPES)}")
        if self.width <= 0 or self.height <= 0 or self.channels not in (1, 3, 4):
            raise BadImageError(
                f"raw image {self.width}x{self.height}x{self.channels}: width and height must be > 0, "
                "channels 1, 3 or 4"
            )
        if self.width * self.height > limits.max_pixels:
            raise BadImageError(
                f"raw image is {self.width}x{self.height} pixels, over the limit of {limits.max_pixels}"
            )
        expected = self.width * self.height * self.channels * dtype.itemsize
        if len(self.pixels) != expected:
            raise BadImageError(
                f"raw image {self.width}x{self.height}x{self.channels} {self.dtype} needs {expected} bytes, "
                f"got {len(self.pixels)}"
            )
        array = np.frombuffer(self.pixels, dtype=dtype).reshape(self.height, self.width, self.channels)
        if self.rgb and self.channels >= 3:
            array = array[:, :, [2, 1, 0, *range(3, self.channels)]]
        return to_bgr(array.astype(dtype.newbyteorder("=")), limits)


@dataclass(frozen=True)
class Probe:
    flight_id: str
    image: bytes | RawPixels
    sequence: int = 0
    flight_date: date | None = None  # the flight's scheduled date at the site; None: the one in service now
    direction: str | None = None  # departure | arrival; None: either
    gallery: Gallery | None = None  # already known (a 1:1 verification's reference): nothing to resolve


@dataclass(frozen=True)
class Assessment:
    """One frame analysed and judged, before any search."""

    analysis: Analysis | None  # None when the budget ended before analysis
    decision: Decision | None  # None: the primary face is usable and goes to search
    face: Face | None  # the face the frame is about (the primary face)
    gate_faces: tuple[Face, ...]  # the primary face and its rivals: everyone the gate must account for
    reasons: tuple[str, ...]  # quality reasons of the primary face

    @property
    def rivals(self) -> int:
        return max(len(self.gate_faces) - 1, 0)


@dataclass(frozen=True)
class Examination:
    """One frame through the per-frame path up to the search: the flight's gallery and the judged frame."""

    gallery: Gallery
    assessment: Assessment


@dataclass(frozen=True)
class FrameResult:
    decision: Decision
    assessment: Assessment | None
    search: SearchResult | None
    gallery: GalleryInfo | None
    stage_s: dict[str, float]
    budget_s: float
    detail: str = ""  # why the budget ran out, when it did

    @property
    def false_match_probability(self) -> float | None:
        """MATCH only: how often a stranger's frame reaches this score in this gallery (calibrated FPIR)."""
        match = self.search.match if self.search else None
        return match.estimated_fpir if match is not None else None


@dataclass(frozen=True)
class VerifyResult:
    """A 1:1 verification of a live frame against a reference (nothing of which is kept)."""

    decision: Decision
    assessment: Assessment | None
    score: float | None  # cosine of the live face and the reference; None when nothing was compared
    false_match_rate: float | None  # calibrated 1:1 FMR at `score`
    threshold: float  # the cosine of `target_fmr`: MATCH at or above it
    target_fmr: float
    stage_s: dict[str, float]
    budget_s: float
    detail: str = ""


Reference = bytes | RawPixels | tuple[ModelRef, Sequence[float]]  # a photo, or a template from an embedder


def is_live(face: Face) -> bool | None:
    """The liveness verdict of a face; None when liveness is not checked."""
    return None if face.liveness is None else face.liveness >= LIVENESS_MIN_REAL


def sightings(assessment: Assessment) -> list[Sighting]:
    """The frame's gate-sized faces as the encounter tracker sees them: a template only when the face passed
    quality (a blurred face's template says too little about who it is to link or fuse). A face whose
    assessment was skipped (followed by position, service/focus.py) is a box; one whose embedding was skipped
    although it passed is a surplus frame (encounter.Sighting)."""
    return [
        Sighting(
            tuple(float(v) for v in face.detection.box),
            sighting_quality(face),
            face.embedding if usable(face) else None,
            is_live(face),
            surplus=face.skipped is Skip.EMBEDDING and usable(face) and is_live(face) is not False,
        )
        for face in assessment.gate_faces
    ]


def usable(face: Face) -> bool:
    """A face whose quality was assessed and passed: only such faces' templates enter an encounter."""
    return face.quality is not None and face.quality.passed


def judge_frame(analysis: Analysis) -> Assessment:
    """The frame rules, in order: NO_FACE, MULTIPLE_FACES (a rival as strong as half the subject),
    QUALITY_FAILED, LIVENESS_FAILED; None when the primary face can be searched or feeds an encounter. Pure:
    the benchmarks apply it to analyses they cached, the service to every frame."""
    face = analysis.primary()
    if face is None:
        return Assessment(analysis, Decision.NO_FACE, None, (), ())
    gate_faces = (face, *analysis.rivals(face))
    if face.skipped is Skip.ASSESSMENT:
        reasons: tuple[str, ...] = ()
    elif face.quality is not None:
        reasons = face.quality.reasons
    else:
        reasons = ("face has no landmarks to align",)
    if len(gate_faces) > 1:
        decision: Decision | None = Decision.MULTIPLE_FACES
    elif face.skipped is Skip.ASSESSMENT:
        decision = None  # an encounter already decided follows this face by position
    elif not usable(face):
        decision = Decision.QUALITY_FAILED
    elif is_live(face) is False:
        decision = Decision.LIVENESS_FAILED
    elif face.embedding is None and face.skipped is not Skip.EMBEDDING:
        decision = Decision.QUALITY_FAILED  # no template to search (a detection-only pack)
    else:
        decision = None
    return Assessment(analysis, decision, face, gate_faces, tuple(reasons))


def sighting_quality(face: Face) -> float:
    """Ranks a track's frames for fusion: large, confidently detected, sharp (LightQNet when present)."""
    return fusion_rank(face.quality) if face.quality is not None else 0.0


def fusion_rank(report: QualityReport) -> float:
    size = min(report.inter_eye_px / 60.0, 1.0)
    return size * report.detector_score * (report.lightqnet if report.lightqnet is not None else 1.0)


@dataclass(frozen=True)
class LoadHeader:
    flight_id: str
    departure: datetime
    pack: str = ""  # empty = the server's pack
    retention: timedelta | None = None  # None = the store's default
    embedder: str = ""  # templates only: the model they came from
    embedder_sha256: str = ""
    embedding_size: int = 0
    direction: str = DEPARTURE


@dataclass(frozen=True)
class FlightRef:
    """How a request names a flight's gallery: its number, and when known its date and direction."""

    flight_id: str
    flight_date: date | None = None
    direction: str | None = None

    def __str__(self) -> str:
        known = [str(v) for v in (self.flight_date, self.direction) if v]
        return self.flight_id + (f" ({', '.join(known)})" if known else "")


@dataclass(frozen=True)
class LoadResult:
    info: GalleryInfo
    unchanged: bool
    failures: tuple[EnrollmentFailure, ...]


@dataclass
class GalleryLoad:
    """A gallery arriving over GalleryService.Load chunk by chunk, through the one enrollment path
    (gatematch.enrollment); only templates are kept, never the photos."""

    plane: DataPlane
    header: LoadHeader
    enrollment: Enrollment

    def add_photos(self, photos: Sequence[tuple[str, bytes]]) -> None:
        """Detect, judge (exactly one enrollment-quality face) and embed a chunk of (traveler id, photo bytes)."""
        chunk = []
        for traveler_id, data in photos:
            digest = hashlib.sha256(data).hexdigest()
            chunk.append((EnrollmentPhoto(traveler_id, "", digest), bytes(data)))
        self.enrollment.add_photos(chunk)

    def add_templates(self, templates: Sequence[tuple[str, Sequence[float]]]) -> None:
        """Precomputed templates; refused unless they come from this server's embedder file."""
        header = self.header
        self.enrollment.add_templates(templates, ModelRef(header.embedder, header.embedder_sha256))

    def finish_delta(self, gallery_id: str, removals: Iterable[str]) -> DeltaResult:
        """Make the travelers added so far, minus `removals`, a new version of the gallery (gallery_delta)."""
        store = self.plane.store
        result = apply_delta(store, gallery_id, self.enrollment, removals)
        store.load(gallery_id)  # warm the snapshot cache before cameras ask
        return result

    def finish(self) -> LoadResult:
        """Write the gallery as the departure's current version (a no-op when the content is unchanged); the
        store enforces its retention policy once more (time passed while the photos arrived)."""
        enrollment, header, store = self.enrollment, self.header, self.plane.store
        if not enrollment.digests:
            raise ManifestError("the load held no photos or templates")
        try:
            written = store.write(enrollment.draft(), retention=header.retention)
        except ValueError as exc:  # a flight id the store cannot name a gallery after
            raise ManifestError(str(exc)) from None
        store.load(written.info.gallery_id)  # warm the snapshot cache before cameras ask
        return LoadResult(written.info, written.unchanged, tuple(enrollment.failures))


class DataPlane:
    """Frame matching and gallery loading over one pipeline, one store and one bounded worker pool."""

    def __init__(
        self,
        pipeline: FacePipeline,
        store: GalleryStore,
        calibration: Calibration | None,
        pool: WorkerPool,
        *,
        target_fpir: float,
        max_candidates: int,
        frame_budget_s: float,
        fused_calibration: Mapping[int, Calibration] | None = None,
        timezone: tzinfo = UTC,
    ):
        self.pipeline = pipeline
        self.enroller = pipeline.with_quality(QualityThresholds.enrollment())
        self.store = store
        self.calibration = calibration
        self.calibrations = Calibrations(calibration, fused_calibration or {}) if calibration else None
        self.pool = pool
        self.point = OperatingPoint(target_fpir)
        self.max_candidates = max_candidates
        self.frame_budget_s = frame_budget_s
        self.costs = StageCosts()
        self.embedder = ModelRef.of(pipeline.pack.embedder)
        self.timezone = timezone  # the site's: flight dates are local dates

    # -- galleries -------------------------------------------------------------------------------------

    def resolve(self, flight: FlightRef | str, now: datetime | None = None) -> Gallery:
        """The flight's gallery a frame is matched against (see `find`)."""
        now = now or datetime.now(UTC)
        return self.store.load(self.find(flight, now).gallery_id, now)

    def find(self, flight: FlightRef | str, now: datetime | None = None) -> GalleryInfo:
        """The one live gallery of the flight on the date and in the direction given; when the request leaves
        either open and several are live, the one whose scheduled time is within IN_SERVICE of now.
        AmbiguousFlightError when that still leaves several (or none of several), rather than a guess."""
        flight = flight if isinstance(flight, FlightRef) else FlightRef(flight)
        now = now or datetime.now(UTC)
        mine = self._of_flight(flight)
        live = [info for info in mine if not info.expired(now)]
        if not live:
            newest = max(mine, key=lambda info: info.departure)
            raise GalleryExpiredError(f"the gallery of flight {flight} expired at {iso(newest.expires_at)}")
        if len(live) > 1:
            near = [info for info in live if abs(info.departure - now) <= IN_SERVICE]
            if len(near) != 1:
                listed = "; ".join(
                    f"{info.direction} {self.local_date(info)} at {iso(info.departure)}" for info in live
                )
                raise AmbiguousFlightError(
                    f"flight {flight} has {len(live)} live galleries ({listed}), {len(near)} of them in "
                    "service now: name the flight's date and direction"
                )
            live = near
        return live[0]

    def local_date(self, info: GalleryInfo) -> date:
        """The flight's date as the site names it (its scheduled time in the site's time zone)."""
        return info.departure.astimezone(self.timezone).date()

    def _of_flight(self, flight: FlightRef) -> list[GalleryInfo]:
        mine = [
            info
            for info in self.store.galleries(flight.flight_id)
            if flight.direction in (None, info.direction)
            and flight.flight_date in (None, self.local_date(info))
        ]
        if not mine:
            raise GalleryNotFoundError(f"no gallery is loaded for flight {flight}")
        return mine

    def current_info(self, flight: FlightRef | str, now: datetime | None = None) -> GalleryInfo:
        """The flight's newest gallery (on that date, in that direction when given), what an administrator
        inspects; GalleryExpiredError once it expired: expired data is unreadable on every path, metadata
        included, until the retention timer purges it."""
        flight = flight if isinstance(flight, FlightRef) else FlightRef(flight)
        info = max(self._of_flight(flight), key=lambda info: info.departure)
        refuse_expired(info, now)
        return info

    def purge_flight(self, flight: FlightRef | str) -> int:
        """Purge every gallery of the flight (on that date, in that direction when given) now; the number of
        templates deleted."""
        flight = flight if isinstance(flight, FlightRef) else FlightRef(flight)
        infos = self._of_flight(flight)
        for info in infos:
            self.store.purge(info.gallery_id)
        return sum(info.templates for info in infos)

    @staticmethod
    def admin_budget() -> Budget:
        return Budget.start(ADMIN_BUDGET_S)

    def enrollment(self, header: LoadHeader) -> GalleryLoad:
        """A gallery load, refused before any photo is read when its pack, retention or departure is not
        acceptable (RetentionError: over the configured maximum, or a departure beyond the horizon)."""
        if header.pack and header.pack != self.pipeline.pack.name:
            raise WrongPackError(
                f"gallery asks for pack {header.pack!r}; this server runs pack {self.pipeline.pack.name!r}"
            )
        self.store.policy.expiry(header.departure, header.retention, datetime.now(UTC))
        enrollment = Enrollment(
            self.enroller,
            header.flight_id,
            header.departure,
            batch_size=ENROLL_BATCH,
            direction=header.direction,
        )
        return GalleryLoad(self, header, enrollment)

    def delta(self, info: GalleryInfo, embedder: ModelRef) -> GalleryLoad:
        """The travelers a delta adds to the gallery `info` (photos embedded as for a load; templates only
        from this server's embedder); `finish_delta` applies them."""
        header = LoadHeader(
            info.flight_id,
            info.departure,
            embedder=embedder.name,
            embedder_sha256=embedder.sha256,
            direction=info.direction,
        )
        return GalleryLoad(
            self, header, start_delta(self.store, info.gallery_id, self.enroller, ENROLL_BATCH)
        )

    def warm(self) -> list[str]:
        """Load every unexpired gallery into the snapshot cache (start-up, before reporting SERVING).

        A gallery that cannot be loaded (index missing or altered, undecryptable, rows unreadable) is
        quarantined and logged with why; its flight answers with that error and every other flight serves.
        """
        now = datetime.now(UTC)
        try:
            infos = self.store.galleries()
        except GalleryStoreError as exc:  # the store's own database is damaged: say so per call, keep running
            LOG.error("gallery store unreadable; no gallery loaded", extra={"reason": exc.describe()})
            return []
        loaded = []
        for info in infos:
            if info.expired(now):
                continue
            try:
                self.store.load(info.gallery_id, now)
                loaded.append(info.gallery_id)
            except (GalleryStoreError, TemplateKeyError) as exc:
                LOG.error(
                    "gallery quarantined",
                    extra={"gallery": info.gallery_id, "flight": info.flight_id, "reason": exc.describe()},
                )
        return loaded

    # -- frames ----------------------------------------------------------------------------------------

    def decode(self, image: bytes | RawPixels) -> np.ndarray:
        limits = self.pipeline.config.limits
        if isinstance(image, RawPixels):
            return image.to_bgr(limits)
        if not image:
            raise BadImageError("the frame holds no image")
        return decode_image(bytes(image), limits)

    def open(self, image: bytes | RawPixels) -> np.ndarray | JpegFrame:
        """`decode`, except that a baseline JPEG is checked only, to be decoded where it is read (images.py)."""
        if isinstance(image, bytes | bytearray | memoryview) and image:
            return open_frame(bytes(image), self.pipeline.config.limits)
        return self.decode(image)

    def _timed(
        self,
        stage: str,
        budget: Budget,
        stage_s: dict[str, float],
        fn: Callable[..., T],
        *args: Any,
        units: float = 1.0,
    ) -> T:
        """Run one stage if its estimated cost for `units` of input fits in what is left of the budget; record
        its time."""
        budget.require(stage, self.costs.estimate(stage, units))
        start = time.perf_counter()
        value = fn(*args)
        seconds = time.perf_counter() - start
        self.costs.observe(stage, seconds, units)
        stage_s[stage] = seconds
        return value

    def examine(
        self,
        probe: Probe,
        budget: Budget,
        stage_s: dict[str, float],
        analyze: Callable[[np.ndarray | JpegFrame], Analysis] | None = None,
    ) -> Examination:
        """The one per-frame path, shared by unary Match and camera streams: resolve the flight's gallery
        (before any inference, so an unknown flight costs nothing), decode, analyse, judge. A camera stream
        passes its own `analyze` (service/focus.py: detection where its faces are, only the work that can change
        a decision); by default every face gets every stage. Raises BudgetExceededError when a stage cannot
        finish in what is left of the budget."""
        stage_s["queue"] = budget.elapsed()
        gallery = probe.gallery
        if gallery is None:
            flight = FlightRef(probe.flight_id, probe.flight_date, probe.direction)
            gallery = self._timed("gallery", budget, stage_s, self.resolve, flight)
        image = probe.image
        size = image.width * image.height / 1e6 if isinstance(image, RawPixels) else megapixels(image)
        if analyze is None:
            decoded = self._timed("decode", budget, stage_s, self.decode, image, units=size)
            analyze = lambda image: self.pipeline.analyze_batch([image])[0]  # noqa: E731
        else:  # a camera stream's plan reads parts of a frame: opened, it is decoded where it is read
            decoded = self._timed("open", budget, stage_s, self.open, image, units=size)
            stage_s["decode"] = stage_s.pop("open")  # its own estimate (checks only), reported as decoding
        analysis = self._timed("analyze", budget, stage_s, analyze, decoded)
        stage_s.pop("analyze")
        stage_s.update((name, s) for name, s in analysis.timings.items() if name != "decode")
        stage_s["decode"] += analysis.timings.get("decode", 0.0)  # what the plan's detection decoded
        return Examination(gallery, judge_frame(analysis))

    def search(
        self,
        gallery: Gallery,
        template: np.ndarray,
        target_fpir: float | None = None,
        k: int | None = None,
        frames: int = 1,
    ) -> SearchResult:
        """1:N search at a target FPIR for this one search (default: the configured target). A probe that
        averages several frames' templates is judged by the table measured for that many frames (the most
        frames there is a table for, beyond)."""
        point = OperatingPoint(target_fpir or self.point.target_fpir)
        return gallery.search(
            template, self.embedder, self.calibration_for(frames), k=k or self.max_candidates, point=point
        )

    def calibration_for(self, frames: int) -> Calibration | None:
        return self.calibrations.for_frames(frames) if self.calibrations else None

    def same_person_min(self, fmr: float) -> float:
        """The cosine a stranger reaches with probability `fmr` (1:1): below it, two faces are two people."""
        if self.calibration is None:
            raise CardError("the encounter tracker needs the embedder's calibration table")
        return float(self.calibration.threshold_for_fmr(fmr))

    def match(self, probe: Probe, budget: Budget, k: int | None = None) -> FrameResult:
        """One frame decided on its own (unary Match), on the calling thread (run it on the pool: `run_match`)."""
        stage_s: dict[str, float] = {}
        gallery, assessment = None, None
        try:
            examined = self.examine(probe, budget, stage_s)
            gallery, assessment = examined.gallery, examined.assessment
            if assessment.decision is not None:
                return FrameResult(
                    assessment.decision, assessment, None, gallery.info, stage_s, budget.seconds
                )
            result = self._timed(
                "search", budget, stage_s, self.search, gallery, assessment.face.embedding, None, k
            )
        except BudgetExceededError as exc:
            info = gallery.info if gallery is not None else None
            return FrameResult(
                Decision.BUDGET_EXCEEDED, assessment, None, info, stage_s, budget.seconds, str(exc)
            )
        decision = Decision.MATCH if result.match is not None else Decision.NO_MATCH
        return FrameResult(decision, assessment, result, gallery.info, stage_s, budget.seconds)

    def run_match(self, probe: Probe, budget: Budget, k: int | None = None) -> FrameResult:
        """`match` on the worker pool; a frame whose budget ends while it waits is BUDGET_EXCEEDED."""
        try:
            return self.pool.run(lambda b: self.match(probe, b, k), budget)
        except BudgetExceededError as exc:
            return FrameResult(
                Decision.BUDGET_EXCEEDED,
                None,
                None,
                None,
                {"queue": budget.elapsed()},
                budget.seconds,
                str(exc),
            )

    # -- 1:1 verification ------------------------------------------------------------------------------

    def reference_template(self, reference: Reference) -> np.ndarray:
        """The reference as a template: a photo judged like an enrollment photo (exactly one face of enrollment
        quality) and embedded, or a template checked to come from this server's embedder."""
        if isinstance(reference, tuple):
            embedder, values = reference
            if embedder != self.embedder:
                raise WrongPackError(
                    f"the reference template comes from embedder {embedder.name or '(unnamed)'} "
                    f"(sha256 {embedder.sha256[:12] or '?'}); this server embeds with {self.embedder.name} "
                    f"(sha256 {self.embedder.sha256[:12]})"
                )
            vector = np.asarray(values, dtype=np.float32)
            norm = float(np.linalg.norm(vector)) if vector.size else 0.0
            if vector.shape != (self.pipeline.embedding_size,) or not np.isfinite(norm) or norm == 0.0:
                raise BadImageError(
                    f"the reference template needs {self.pipeline.embedding_size} finite values, not all zero"
                )
            return vector / norm
        try:
            decoded = self.decode(reference)
        except BadImageError as exc:
            raise BadImageError(f"the reference photo: {exc}") from None
        analysis = self.enroller.analyze_batch([decoded])[0]
        outcome = judge(analysis, EnrollmentPhoto("reference", "reference", ""))
        if isinstance(outcome, EnrollmentFailure):
            raise NoFaceError(f"the reference photo cannot be used: {outcome.reason}: {outcome.detail}")
        return outcome[0]

    def verify(
        self, image: bytes | RawPixels, reference: Reference, target_fmr: float, budget: Budget
    ) -> VerifyResult:
        """Is the live frame's face the reference's? MATCH when the score's calibrated 1:1 FMR is at most
        `target_fmr`, i.e. the score reaches the table's threshold for it. On the calling thread."""
        threshold = self.verify_threshold(target_fmr)
        stage_s: dict[str, float] = {"queue": budget.elapsed()}
        assessment = None
        try:
            template = self._timed("reference", budget, stage_s, self.reference_template, reference)
            decoded = self._timed("decode", budget, stage_s, self.decode, image)
            analysis = self._timed(
                "analyze", budget, stage_s, lambda: self.pipeline.analyze_batch([decoded])[0]
            )
            stage_s.pop("analyze")
            stage_s.update((name, s) for name, s in analysis.timings.items() if name != "decode")
            assessment = judge_frame(analysis)
        except BudgetExceededError as exc:
            return VerifyResult(
                Decision.BUDGET_EXCEEDED,
                assessment,
                None,
                None,
                threshold,
                target_fmr,
                stage_s,
                budget.seconds,
                str(exc),
            )
        if assessment.decision is not None:
            return VerifyResult(
                assessment.decision, assessment, None, None, threshold, target_fmr, stage_s, budget.seconds
            )
        score = float(np.dot(assessment.face.embedding, template))
        decision = Decision.MATCH if score >= threshold else Decision.NO_MATCH
        return VerifyResult(
            decision,
            assessment,
            score,
            float(self.calibration.fmr_at(score)),
            threshold,
            target_fmr,
            stage_s,
            budget.seconds,
        )

    def reference_gallery(self, template: np.ndarray, lasts: timedelta) -> Gallery:
        """A gallery of one, in memory only, for `lasts`: the reference of a verification stream. Encounters
        search it as they search a flight's gallery; with one template its FPIR is the 1:1 FMR, so the encounter
        rules (and the tables for fused frames) apply unchanged."""
        gallery = in_memory_gallery(np.reshape(template, (1, -1)), [REFERENCE], self.embedder, name=REFERENCE)
        return replace(gallery, info=replace(gallery.info, expires_at=gallery.info.created_at + lasts))

    def verify_threshold(self, target_fmr: float) -> float:
        """The cosine at which the single-photo table says two people score with 1:1 FMR `target_fmr`."""
        if self.calibration is None:
            raise CardError("1:1 verification needs the embedder's calibration table")
        return float(self.calibration.threshold_for_fmr(target_fmr))

    def run_verify(
        self, image: bytes | RawPixels, reference: Reference, target_fmr: float, budget: Budget
    ) -> VerifyResult:
        """`verify` on the worker pool; a call whose budget ends while it waits is BUDGET_EXCEEDED."""
        try:
            return self.pool.run(lambda b: self.verify(image, reference, target_fmr, b), budget)
        except BudgetExceededError as exc:
            return VerifyResult(
                Decision.BUDGET_EXCEEDED,
                None,
                None,
                None,
                0.0,
                target_fmr,
                {"queue": budget.elapsed()},
                budget.seconds,
                str(exc),
            )

    def budget(
        self,
        time_remaining_s: float | None,
        margin_s: float,
        arrived: float | None = None,
        age_s: float = 0.0,
        seconds: float | None = None,
    ) -> Budget:
        """A frame's budget: it counts from the frame's arrival (monotonic `arrived`) and, when the camera said
        when it captured the frame, from then (`age_s` = how long before arrival), so a frame that waited or
        was sent late is never processed as if it were fresh. `seconds`: another budget than a frame's."""
        total = self.frame_budget_s if seconds is None else seconds
        return Budget.start(total - max(age_s, 0.0), time_remaining_s, margin_s, started=arrived)
