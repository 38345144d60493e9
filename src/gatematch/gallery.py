"""Flight galleries in memory: immutable snapshots and 1:N search with calibrated confidence.

A `Gallery` is an immutable snapshot (metadata + FAISS index + template->traveler map). The store hands out
snapshots, so a gallery replaced on disk while a search runs does not change under the searcher.

Decisions are taken at an operating point expressed as a target false-positive identification rate (FPIR) for
this gallery's traveler count, not as a bare cosine: the same cosine means a higher FPIR in a bigger gallery.
The calibration table (impostor score distribution of the embedder) turns the target into a cosine threshold
and every score into an estimated FPIR; confidence = 1 - FPIR at that score for this gallery size.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Protocol

import faiss
import numpy as np

from gatematch.calibration import CalibrationTable
from gatematch.errors import CalibrationError, CardError, GalleryExpiredError, WrongPackError

if TYPE_CHECKING:
    from gatematch.cards import ModelCard

DEFAULT_TARGET_FPIR = 0.003  # NIST FRVT paperless-travel operating point
# A gallery is for one flight at this airport: its travelers leave on it (exit) or arrive on it (entry).
DEPARTURE, ARRIVAL = "departure", "arrival"
DIRECTIONS = (DEPARTURE, ARRIVAL)
# Exact search up to this many templates, HNSW above. Measured with benchmarks/search_latency.py (128-d, one
# search thread, shared 2-core box), p50/p99 per probe through Gallery.search: flat 420 -> 0.02/0.06 ms,
# 10k -> 0.10/0.20 ms, 50k -> 0.79/1.3 ms, growing linearly; HNSW ~0.4-0.6 ms p50 from 10k up with recall@1 1.0,
# but it costs a build (~35 s for 50k on 2 cores) and is approximate. Below 50k exact search is under ~1 ms, so
# the exact answer is kept; flight galleries (hundreds) are always flat.
HNSW_MIN_TEMPLATES = 50_000
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 128


class Calibration(Protocol):
    """What search needs from a calibration table (gatematch.calibration.CalibrationTable, or a test fake)."""

    embedder_sha256: str

    def fpir_at(self, score: float, gallery_size: int) -> float: ...

    def threshold_for_fpir(self, target_fpir: float, gallery_size: int) -> float: ...


def load_default_calibration(embedder: str) -> Calibration:
    """The calibration table shipped for `embedder` (models/calibration/<embedder>.json)."""
    path = resources.files("gatematch.models") / "calibration" / f"{embedder}.json"
    if not path.is_file():
        raise CardError(f"no calibration table shipped for embedder '{embedder}' (expected {path})")
    return CalibrationTable.load(path)


@dataclass(frozen=True)
class Calibrations:
    """An embedder's tables: one for single photos, one per number of frames an encounter's probe averages."""

    single: Calibration
    fused: Mapping[int, Calibration] = field(default_factory=dict)

    def for_frames(self, frames: int) -> Calibration:
        """The table for a probe averaging `frames` templates (the most frames there is a table for, beyond)."""
        if frames < 2 or not self.fused:
            return self.single
        return self.fused[min(frames, max(self.fused))]


def fused_calibration_name(embedder: str, frames: int) -> str:
    return f"{embedder}.fused-{frames}.json"


def load_fused_calibrations(embedder: str) -> dict[int, Calibration]:
    """The tables shipped for probes that average the templates of k frames (k -> table, k >= 2).

    An average of several frames' templates, renormalised, scores higher against everyone than one frame
    does: the frames' idiosyncrasies cancel and what all faces share stays. Measured on celeba_wild, a
    3-frame probe crossed the single-photo threshold for FMR 1e-4 at 1.3e-4 (MobileFaceNet) and 2.0e-4
    (w600k_mbf); these tables (`gatematch bench encounters --write-calibration`) give each k its own.
    """
    folder = resources.files("gatematch.models") / "calibration"
    tables = {}
    for frames in range(2, 16):
        path = folder / fused_calibration_name(embedder, frames)
        if not path.is_file():
            break
        tables[frames] = CalibrationTable.load(path)
    return tables


@dataclass(frozen=True)
class ModelRef:
    """The embedder a gallery was built with; probes must come from the very same file."""

    name: str
    sha256: str

    @classmethod
    def of(cls, card: ModelCard) -> ModelRef:
        return cls(card.name, card.sha256)


@dataclass(frozen=True)
class EnrollmentFailure:
    """One enrollment photo that gave no template, and why (kept with the gallery as its failure report)."""

    traveler_id: str
    photo: str
    reason: str  # unreadable | no_face | several_faces | low_quality
    detail: str


@dataclass(frozen=True)
class GalleryInfo:
    """Everything about a gallery except its templates (what list/inspect show)."""

    gallery_id: str
    version: int
    flight_id: str
    departure: datetime
    created_at: datetime
    expires_at: datetime
    pack: str
    model_hashes: dict[str, str]
    embedder: ModelRef
    dim: int
    travelers: int  # travelers with at least one template
    templates: int
    failed_travelers: tuple[str, ...]  # travelers listed in the manifest whose every photo failed
    failures: int
    index_kind: str  # flat | hnsw
    encrypted: bool
    content_hash: str
    direction: str = DEPARTURE  # `departure` is then the flight's scheduled arrival time here
    key_id: str = ""  # the template key the index is sealed under ("" in plaintext)

    def expired(self, now: datetime | None = None) -> bool:
        return (now or datetime.now(UTC)) >= self.expires_at

    def as_dict(self) -> dict[str, object]:
        return {
            "gallery_id": self.gallery_id,
            "version": self.version,
            "flight_id": self.flight_id,
            "departure": iso(self.departure),
            "created_at": iso(self.created_at),
            "expires_at": iso(self.expires_at),
            "pack": self.pack,
            "model_hashes": dict(self.model_hashes),
            "embedder": {"name": self.embedder.name, "sha256": self.embedder.sha256},
            "dim": self.dim,
            "travelers": self.travelers,
            "templates": self.templates,
            "failed_travelers": list(self.failed_travelers),
            "failures": self.failures,
            "index_kind": self.index_kind,
            "encrypted": self.encrypted,
            "content_hash": self.content_hash,
            "direction": self.direction,
            "key_id": self.key_id,
        }


def iso(moment: datetime) -> str:
    """UTC ISO 8601 with a Z, the one time format galleries are stored and shown in."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def index_kind_for(templates: int) -> str:
    return "hnsw" if templates >= HNSW_MIN_TEMPLATES else "flat"


def build_index(vectors: np.ndarray, kind: str) -> faiss.Index:
    """Inner-product index over L2-normalised vectors (inner product = cosine)."""
    dim = vectors.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(dim)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


@dataclass(frozen=True)
class OperatingPoint:
    """Where to decide: a target FPIR for the gallery's size, or a raw cosine threshold as an override."""

    target_fpir: float = DEFAULT_TARGET_FPIR
    threshold: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.target_fpir < 1.0:
            raise ValueError(f"target FPIR must be in (0, 1), got {self.target_fpir}")
        if self.threshold is not None and not -1.0 <= self.threshold <= 1.0:
            raise ValueError(f"cosine threshold must be in [-1, 1], got {self.threshold}")


@dataclass(frozen=True)
class Candidate:
    traveler_id: str
    score: float  # raw cosine of the traveler's best template
    template_row: int  # row of that template in the gallery (provenance lookup)
    estimated_fpir: float | None  # FPIR of a decision threshold placed at this score, for this gallery
    confidence: float | None  # 1 - estimated_fpir


@dataclass(frozen=True)
class SearchResult:
    gallery_id: str
    version: int
    gallery_size: int  # travelers
    comparisons: int  # templates: the N of FPIR(t, N) (see Gallery.comparisons)
    candidates: tuple[Candidate, ...]  # best first, one per traveler
    threshold: float
    target_fpir: float | None  # None when a raw threshold overrode the FPIR operating point
    estimated_fpir: float | None  # FPIR of this decision threshold for this gallery (from calibration)
    match: Candidate | None  # the top candidate when it reaches the threshold


@dataclass(frozen=True, eq=False)
class Gallery:
    """An immutable, searchable snapshot of one gallery version."""

    info: GalleryInfo
    index: faiss.Index
    traveler_ids: tuple[str, ...]
    template_traveler: np.ndarray  # (templates,) int32: template row -> index into traveler_ids
    max_templates_per_traveler: int

    @property
    def comparisons(self) -> int:
        """How many 1:1 comparisons a search takes its best score over: every template, not every traveler.

        A traveler holding several templates is scored by the best one, so each template is one more chance
        for a stranger to match: FPIR(t) = 1 - (1 - FMR(t))^templates, an upper bound (a traveler's templates
        are alike, so they are not independent chances). A gallery where every traveler failed to enroll cannot
        false-match; 1 gives an upper bound there.
        """
        return max(int(self.index.ntotal), 1)

    def vectors(self) -> np.ndarray:
        """All templates (templates, dim), in template-row order."""
        return self.index.reconstruct_n(0, self.index.ntotal)

    def search(
        self,
        probe: np.ndarray,
        embedder: ModelRef,
        calibration: Calibration | None,
        *,
        k: int = 5,
        point: OperatingPoint | None = None,
        now: datetime | None = None,
    ) -> SearchResult:
        """Top-k travelers for one probe template, with the decision at `point` (default: FPIR 0.003).

        Refuses an expired gallery and a probe from another embedder: both would give answers that look
        valid and are not. Without a calibration table only a raw threshold can be used.
        """
        info = self.info
        if info.expired(now):
            raise GalleryExpiredError(f"gallery {info.gallery_id} expired at {iso(info.expires_at)}")
        if embedder != info.embedder:
            raise WrongPackError(
                f"gallery {info.gallery_id} was built with embedder {info.embedder.name} "
                f"(sha256 {info.embedder.sha256[:12]}), probe comes from {embedder.name} "
                f"(sha256 {embedder.sha256[:12]})"
            )
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        vector = np.asarray(probe, dtype=np.float32).reshape(1, -1)
        if vector.shape[1] != info.dim:
            raise WrongPackError(
                f"probe has {vector.shape[1]} dimensions, gallery {info.gallery_id} {info.dim}"
            )
        norm = float(np.linalg.norm(vector))
        if not np.isfinite(norm) or norm == 0.0:
            raise ValueError("probe template is zero or not finite")
        vector /= norm

        if calibration is not None and calibration.embedder_sha256 != info.embedder.sha256:
            raise CalibrationError(
                f"calibration table is for embedder sha256 {calibration.embedder_sha256[:12]}, gallery "
                f"{info.gallery_id} uses {info.embedder.sha256[:12]}: its scores would mean something else"
            )
        point = point or OperatingPoint()
        size = self.comparisons
        if point.threshold is not None:
            threshold, target = point.threshold, None
        elif calibration is None:
            raise CardError(f"embedder {info.embedder.name} has no calibration table; give a raw threshold")
        else:
            threshold, target = (
                float(calibration.threshold_for_fpir(point.target_fpir, size)),
                point.target_fpir,
            )

        candidates = self._top_travelers(vector, k, calibration)
        match = candidates[0] if candidates and candidates[0].score >= threshold else None
        return SearchResult(
            gallery_id=info.gallery_id,
            version=info.version,
            gallery_size=len(self.traveler_ids),
            comparisons=size,
            candidates=candidates,
            threshold=threshold,
            target_fpir=target,
            estimated_fpir=float(calibration.fpir_at(threshold, size)) if calibration else None,
            match=match,
        )

    def _top_travelers(
        self, vector: np.ndarray, k: int, calibration: Calibration | None
    ) -> tuple[Candidate, ...]:
        # k travelers are guaranteed among the top k * (most templates any one traveler has) templates.
        wanted = min(self.index.ntotal, k * self.max_templates_per_traveler)
        if wanted == 0:
            return ()
        if self.info.index_kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(HNSW_EF_SEARCH, wanted))
            scores, rows = self.index.search(vector, wanted, params=params)
        else:
            scores, rows = self.index.search(vector, wanted)
        size = self.comparisons
        seen: set[int] = set()
        out: list[Candidate] = []
        for score, row in zip(scores[0].tolist(), rows[0].tolist(), strict=True):
            if row < 0:
                break
            traveler = int(self.template_traveler[row])
            if traveler in seen:
                continue
            seen.add(traveler)
            fpir = float(calibration.fpir_at(score, size)) if calibration else None
            out.append(
                Candidate(self.traveler_ids[traveler], score, row, fpir, None if fpir is None else 1.0 - fpir)
            )
            if len(out) == k:
                break
        return tuple(out)


def canonical_json(data: object) -> str:
    """Stable JSON for hashing and storing (sorted keys, no whitespace)."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def in_memory_gallery(
    vectors: np.ndarray,
    owners: Sequence[str],
    embedder: ModelRef,
    *,
    name: str = "MEMORY",
    index: faiss.Index | None = None,
) -> Gallery:
    """A searchable snapshot that never touches a store (benchmarks and tests): template row i is owners[i].

    `index` may be a prebuilt one over `vectors` (e.g. HNSW); by default the kind the store would choose.
    """
    now = datetime.now(UTC)
    positions = {traveler: i for i, traveler in enumerate(dict.fromkeys(owners))}
    mapping = np.fromiter((positions[t] for t in owners), dtype=np.int32, count=len(owners))
    vectors = np.asarray(vectors, dtype=np.float32).reshape(len(owners), -1)
    kind = (
        index_kind_for(len(owners))
        if index is None
        else ("hnsw" if isinstance(index, faiss.IndexHNSW) else "flat")
    )
    info = GalleryInfo(
        gallery_id=name,
        version=1,
        flight_id=name,
        departure=now + timedelta(hours=1),
        created_at=now,
        expires_at=now + timedelta(days=1),
        pack="",
        model_hashes={},
        embedder=embedder,
        dim=vectors.shape[1],
        travelers=len(positions),
        templates=len(owners),
        failed_travelers=(),
        failures=0,
        index_kind=kind,
        encrypted=False,
        content_hash="",
    )
    most = int(np.bincount(mapping).max()) if len(mapping) else 0
    return Gallery(
        info, index if index is not None else build_index(vectors, kind), tuple(positions), mapping, most
    )
