"""Enrollment: one departure's photos (or precomputed templates) -> a gallery draft, with its failure report.

The one enrollment path of gatematch: `gatematch gallery build` (photos named by a manifest) and the service's
GalleryService.Load (photos or templates streamed by a client) both go through `Enrollment`, so a photo is
judged by the same rule and a gallery gets the same content hash whichever way it arrives.

Enrollment photos must be unambiguous: exactly one face of enrollment quality. A photo with a second face of
comparable size is refused (which person is the traveler?), while small background faces are ignored. Every
refused photo is reported with its reason, and a traveler whose every photo fails stays in the gallery's
record as a failed traveler, so the airline can re-enroll them instead of wondering why they never match.

The content hash covers the flight, the departure, the direction, every traveler with the sha256 of each photo
(or template), the pack's model hashes and the enrollment settings, and nothing else (not times, not thread
counts, not the order photos arrived in): identical input gives an identical hash, so a rebuild is a no-op.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime

import numpy as np

from gatematch.errors import BadImageError, ManifestError, PackError, WrongPackError
from gatematch.facepipeline import RIVAL_RATIO, Analysis, FacePipeline
from gatematch.gallery import DEPARTURE, EnrollmentFailure, ModelRef, canonical_json, iso
from gatematch.gallery_store import (
    MAX_PHOTOS,
    TRAVELER_ID,
    GalleryDraft,
    TemplateRecord,
    TravelerRecord,
    photo_reference,
)
from gatematch.images import ImageInput, load_image

UNREADABLE = "unreadable"  # stands for the sha256 of a photo that could not be read
BATCH_SIZE = 16


@dataclass(frozen=True)
class EnrollmentPhoto:
    """One enrollment photo of a traveler: where it is read from (a local path for `gallery build`; empty for
    photos that arrived over the network) and its content hash. Galleries name it by `reference` only."""

    traveler_id: str
    path: str
    sha256: str

    @property
    def reference(self) -> str:
        return photo_reference(self.sha256)


def content_hash(
    flight_id: str,
    departure: datetime,
    source: str,
    travelers: Iterable[TravelerRecord],
    digests: Mapping[str, Sequence[str]],
    pipeline: FacePipeline,
    direction: str = DEPARTURE,
) -> str:
    """The one content-hash rule (see the module docstring). `source` is "photos" or "templates"."""
    basis = {
        "flight_id": flight_id,
        "departure": iso(departure),
        "direction": direction,
        "source": source,
        # Sorted: the same travelers and photos listed in another order are the same gallery.
        "travelers": sorted(
            [t.traveler_id, t.document_type or "", sorted(digests.get(t.traveler_id, ()))] for t in travelers
        ),
        "pack": pipeline.pack.name,
        "models": pipeline.pack.model_hashes,
        "detector": asdict(pipeline.config.detector),
        "quality": asdict(pipeline.config.quality),
        "flip": pipeline.config.flip,
        "rival_ratio": RIVAL_RATIO,
    }
    return hashlib.sha256(canonical_json(basis).encode()).hexdigest()


def judge(
    analysis: Analysis, photo: EnrollmentPhoto
) -> tuple[np.ndarray, dict[str, object]] | EnrollmentFailure:
    """The enrollment template of one photo with its quality record, or why the photo cannot enroll."""

    def fail(reason: str, detail: str) -> EnrollmentFailure:
        return EnrollmentFailure(photo.traveler_id, photo.reference, reason, detail)

    face = analysis.primary()
    if face is None:
        return fail("no_face", "no face detected")
    rivals = analysis.rivals(face)
    if rivals:
        return fail(
            "several_faces",
            f"{len(rivals) + 1} faces compete to be the subject; a document photo shows one person",
        )
    if face.quality is None or face.embedding is None:
        return fail("no_face", "face has no landmarks to align")
    if not face.quality.passed:
        return fail("low_quality", "; ".join(face.quality.reasons))
    return face.embedding, face.quality.as_dict()


@dataclass
class Enrollment:
    """One departure's gallery being enrolled with `pipeline` (configured with the enrollment quality bar).

    Travelers come from a manifest (`expect`, so those whose every photo fails are still recorded) or appear
    with their first photo; a gallery holds photos or templates, not both. Only templates are kept, never
    the photos.
    """

    pipeline: FacePipeline
    flight_id: str
    departure: datetime
    source: str = ""  # "photos" or "templates", fixed by the first one added
    travelers: dict[str, TravelerRecord] = field(default_factory=dict)
    digests: dict[str, list[str]] = field(default_factory=dict)  # traveler -> input sha256s, in order
    templates: list[TemplateRecord] = field(default_factory=list)
    failures: list[EnrollmentFailure] = field(default_factory=list)
    batch_size: int = BATCH_SIZE  # photos analysed together
    direction: str = DEPARTURE  # departure (exit) or arrival (entry)

    def __post_init__(self) -> None:
        if self.pipeline.pack.embedder is None:
            raise PackError(f"pack '{self.pipeline.pack.name}' has no embedder; it cannot build galleries")

    def expect(self, traveler: TravelerRecord) -> None:
        """A traveler of the manifest (kept in the gallery's record even if no photo of theirs enrolls)."""
        self._check_traveler(traveler.traveler_id)
        self.travelers.setdefault(traveler.traveler_id, traveler)

    def _check_traveler(self, traveler_id: str) -> None:
        if not TRAVELER_ID.fullmatch(traveler_id):
            raise ManifestError(
                f"traveler id {traveler_id!r} must be 1-64 letters, digits or . _ : - (starting with one "
                "letter or digit)"
            )

    def _note(self, kind: str, traveler_id: str, digest: str) -> None:
        if self.source and self.source != kind:
            raise ManifestError(
                f"a gallery holds photos or templates, not both (got {kind} after {self.source})"
            )
        self.source = kind
        self._check_traveler(traveler_id)
        if len(self.digests.get(traveler_id, ())) >= MAX_PHOTOS:
            raise ManifestError(f"traveler {traveler_id!r} has more than {MAX_PHOTOS} photos/templates")
        self.travelers.setdefault(traveler_id, TravelerRecord(traveler_id))
        self.digests.setdefault(traveler_id, []).append(digest)

    def fail(self, photo: EnrollmentPhoto, detail: str) -> None:
        """A photo that could not even be read (its hash stands as UNREADABLE)."""
        self._note("photos", photo.traveler_id, UNREADABLE)
        self.failures.append(EnrollmentFailure(photo.traveler_id, photo.reference, UNREADABLE, detail))

    def add_photos(self, photos: Sequence[tuple[EnrollmentPhoto, ImageInput]]) -> None:
        """Decode, detect, judge (exactly one enrollment-quality face) and embed (photo, image) pairs; the
        image is encoded bytes (what a failure's detail says never names a file), decoded within the
        pipeline's image limits."""
        for photo, _ in photos:
            self._note("photos", photo.traveler_id, photo.sha256)
        limits = self.pipeline.config.limits
        for start in range(0, len(photos), self.batch_size):
            readable, images = [], []
            for photo, image in photos[start : start + self.batch_size]:
                try:
                    images.append(load_image(image, limits))
                    readable.append(photo)
                except BadImageError as exc:
                    self.failures.append(
                        EnrollmentFailure(photo.traveler_id, photo.reference, UNREADABLE, str(exc))
                    )
            for photo, analysis in zip(readable, self.pipeline.analyze_batch(images), strict=True):
                outcome = judge(analysis, photo)
                if isinstance(outcome, EnrollmentFailure):
                    self.failures.append(outcome)
                else:
                    embedding, quality = outcome
                    self.templates.append(
                        TemplateRecord(photo.traveler_id, photo.reference, photo.sha256, quality, embedding)
                    )

    def add_templates(self, templates: Sequence[tuple[str, Sequence[float]]], embedder: ModelRef) -> None:
        """Precomputed templates; refused unless they come from this pipeline's embedder file."""
        card = self.pipeline.pack.embedder
        if embedder != ModelRef.of(card):
            raise WrongPackError(
                f"templates come from embedder {embedder.name or '(unnamed)'} "
                f"(sha256 {embedder.sha256[:12] or '?'}), this server embeds with {card.name} "
                f"(sha256 {card.sha256[:12]})"
            )
        dim = self.pipeline.embedding_size
        for traveler_id, values in templates:
            vector = np.asarray(values, dtype=np.float32)
            norm = float(np.linalg.norm(vector)) if vector.size else 0.0
            if vector.shape != (dim,) or not np.isfinite(norm) or norm == 0.0:
                raise ManifestError(
                    f"template of {traveler_id!r}: expected {dim} finite values, not all zero; got {vector.size}"
                )
            digest = hashlib.sha256(vector.tobytes()).hexdigest()
            self._note("templates", traveler_id, digest)
            self.templates.append(
                TemplateRecord(traveler_id, photo_reference(digest), digest, {}, vector / norm)
            )

    def content_hash(self, adding: Iterable[EnrollmentPhoto] = ()) -> str:
        """The gallery's content hash, once the photos `adding` are added too (so a rebuild can compare it
        with the stored version before any photo is decoded)."""
        travelers = dict(self.travelers)
        digests = {traveler: list(values) for traveler, values in self.digests.items()}
        for photo in adding:
            travelers.setdefault(photo.traveler_id, TravelerRecord(photo.traveler_id))
            digests.setdefault(photo.traveler_id, []).append(photo.sha256)
        source = self.source or "photos"
        return content_hash(
            self.flight_id, self.departure, source, travelers.values(), digests, self.pipeline, self.direction
        )

    def draft(self) -> GalleryDraft:
        """Everything enrolled so far as one complete gallery version, ready for `GalleryStore.write`."""
        pipeline = self.pipeline
        return GalleryDraft(
            flight_id=self.flight_id,
            departure=self.departure,
            pack=pipeline.pack.name,
            model_hashes=pipeline.pack.model_hashes,
            embedder=ModelRef.of(pipeline.pack.embedder),
            dim=pipeline.embedding_size,
            travelers=tuple(self.travelers.values()),
            templates=tuple(self.templates),
            failures=tuple(self.failures),
            content_hash=self.content_hash(),
            direction=self.direction,
        )
