"""Build a flight gallery from a manifest: detect, quality-check and embed every enrollment photo.

Enrollment photos must be unambiguous: exactly one face of enrollment quality. A photo with a second face of
comparable size is refused (which person is the traveler?), while small background faces are ignored. Every
refused photo is reported with its reason, and a traveler whose every photo fails stays in the gallery's
record as a failed traveler, so the airline can re-enroll them instead of wondering why they never match.

A build is identified by a content hash over the manifest, the photo bytes, the pack's model hashes and the
enrollment settings: rebuilding identical input is a no-op and never adds rows.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import numpy as np
from tqdm import tqdm

from gatematch.errors import BadImageError, GalleryExpiredError, PackError
from gatematch.facepipeline import RIVAL_RATIO, Analysis, FacePipeline
from gatematch.gallery import EnrollmentFailure, GalleryInfo, ModelRef, canonical_json, iso
from gatematch.gallery_store import GalleryDraft, GalleryStore, TemplateRecord, TravelerRecord, gallery_id_for
from gatematch.gallery_tools.manifest import Manifest
from gatematch.images import load_image
from gatematch.modelstore import sha256_of

BATCH_SIZE = 16
UNREADABLE = "unreadable"  # stands for the sha256 of a photo that could not be read


@dataclass(frozen=True)
class BuildReport:
    info: GalleryInfo
    unchanged: bool  # identical content was already the current version: no work was done
    failures: tuple[EnrollmentFailure, ...]


@dataclass(frozen=True)
class EnrollmentPhoto:
    """One enrollment photo of a traveler, identified by its content hash."""

    traveler_id: str
    path: str
    sha256: str


def content_hash(manifest: Manifest, photos: Sequence[EnrollmentPhoto], pipeline: FacePipeline) -> str:
    """Everything that determines the gallery's content, and nothing else (not times, not thread counts)."""
    digests: dict[str, list[str]] = {}
    for photo in photos:
        digests.setdefault(photo.traveler_id, []).append(photo.sha256)
    basis = {
        "flight_id": manifest.flight_id,
        "departure": iso(manifest.departure),
        # Sorted: the same travelers and photos listed in another order are the same gallery.
        "travelers": sorted(
            [t.traveler_id, t.document_type or "", sorted(digests[t.traveler_id])] for t in manifest.travelers
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
        return EnrollmentFailure(photo.traveler_id, photo.path, reason, detail)

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


def _batches(items: Sequence[EnrollmentPhoto], size: int) -> Iterator[Sequence[EnrollmentPhoto]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def build_gallery(
    manifest: Manifest,
    store: GalleryStore,
    pipeline: FacePipeline,
    *,
    batch_size: int = BATCH_SIZE,
    progress: bool = True,
    now: datetime | None = None,
) -> BuildReport:
    """Enroll every traveler of `manifest` with `pipeline` (configure it with the enrollment quality preset)
    and make the result the departure's current gallery in `store`."""
    embedder = pipeline.pack.embedder
    if embedder is None:
        raise PackError(f"pack '{pipeline.pack.name}' has no embedder; it cannot build galleries")
    gid = gallery_id_for(manifest.flight_id, manifest.departure)
    expires = manifest.departure + store.retention
    if expires <= (now or datetime.now(UTC)):
        raise GalleryExpiredError(
            f"gallery {gid} would expire at {iso(expires)} ({store.retention} after departure): not built"
        )
    photos: list[EnrollmentPhoto] = []
    failures: list[EnrollmentFailure] = []
    for traveler in manifest.travelers:
        for path in traveler.photos:
            try:
                sha256 = sha256_of(path)
            except OSError as exc:  # vanished or unreadable since the manifest was checked
                detail = f"cannot read: {exc.strerror or exc}"
                failures.append(EnrollmentFailure(traveler.traveler_id, str(path), "unreadable", detail))
                sha256 = UNREADABLE
            photos.append(EnrollmentPhoto(traveler.traveler_id, str(path), sha256))
    digest = content_hash(manifest, photos, pipeline)
    if store.is_current(gid, digest):
        return BuildReport(store.info(gid), True, tuple(store.failures(gid)))
    store.check_replaceable(gid)

    hashed = [photo for photo in photos if photo.sha256 != UNREADABLE]
    templates: list[TemplateRecord] = []
    with tqdm(
        total=len(hashed), unit="photo", desc=f"enrolling {gid}", file=sys.stderr, disable=not progress
    ) as bar:
        for batch in _batches(hashed, batch_size):
            readable, images = [], []
            for photo in batch:
                try:
                    images.append(load_image(photo.path, pipeline.config.limits))
                    readable.append(photo)
                except BadImageError as exc:
                    failures.append(EnrollmentFailure(photo.traveler_id, photo.path, "unreadable", str(exc)))
            for photo, analysis in zip(readable, pipeline.analyze_batch(images), strict=True):
                outcome = judge(analysis, photo)
                if isinstance(outcome, EnrollmentFailure):
                    failures.append(outcome)
                else:
                    embedding, quality = outcome
                    templates.append(
                        TemplateRecord(photo.traveler_id, photo.path, photo.sha256, quality, embedding)
                    )
            bar.update(len(batch))

    draft = GalleryDraft(
        flight_id=manifest.flight_id,
        departure=manifest.departure,
        pack=pipeline.pack.name,
        model_hashes=pipeline.pack.model_hashes,
        embedder=ModelRef.of(embedder),
        dim=pipeline.embedding_size,
        travelers=tuple(TravelerRecord(t.traveler_id, t.document_type) for t in manifest.travelers),
        templates=tuple(templates),
        failures=tuple(failures),
        content_hash=digest,
    )
    result = store.write(draft, now=now)
    return BuildReport(result.info, result.unchanged, tuple(failures))
