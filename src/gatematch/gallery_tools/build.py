"""Build a flight gallery from a manifest: every enrollment photo through the one enrollment path.

How photos are judged and how a gallery's content hash is made live in `gatematch.enrollment` (the service's
GalleryService.Load uses the same). Photos are hashed first, so rebuilding identical input is a no-op that
decodes nothing and never adds rows. Photos are read through the manifest (confined to its photo folder) and
decoded from bytes, so nothing the gallery keeps names a file: the store knows each photo by its content hash,
and only this run's report maps those references back to the operator's files.
"""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from tqdm import tqdm

from gatematch.enrollment import BATCH_SIZE, Enrollment, EnrollmentPhoto
from gatematch.facepipeline import FacePipeline
from gatematch.gallery import EnrollmentFailure, GalleryInfo
from gatematch.gallery_store import GalleryStore, TravelerRecord, gallery_id_for
from gatematch.gallery_tools.manifest import Manifest


@dataclass(frozen=True)
class BuildReport:
    info: GalleryInfo
    unchanged: bool  # identical content was already the current version: no work was done
    failures: tuple[EnrollmentFailure, ...]
    sources: dict[str, Path] = field(default_factory=dict)  # photo reference -> the manifest's file

    def source_of(self, failure: EnrollmentFailure) -> str:
        """The operator's file a failure is about (the gallery itself names it by content hash only)."""
        source = self.sources.get(failure.photo)
        return str(source) if source is not None else failure.photo or "unreadable photo"


def build_gallery(
    manifest: Manifest,
    store: GalleryStore,
    pipeline: FacePipeline,
    *,
    batch_size: int = BATCH_SIZE,
    progress: bool = True,
    now: datetime | None = None,
    retention: timedelta | None = None,
) -> BuildReport:
    """Enroll every traveler of `manifest` with `pipeline` (configure it with the enrollment quality preset)
    and make the result the departure's current gallery in `store`, kept `retention` after departure (the
    store's default when None; its policy refuses more than its maximum before any photo is read)."""
    store.policy.expiry(manifest.departure, retention, now or datetime.now(UTC))
    enrollment = Enrollment(
        pipeline, manifest.flight_id, manifest.departure, batch_size=batch_size, direction=manifest.direction
    )
    gid = gallery_id_for(manifest.flight_id, manifest.departure, manifest.direction)
    photos: list[EnrollmentPhoto] = []
    sources: dict[str, Path] = {}
    for traveler in manifest.travelers:
        enrollment.expect(TravelerRecord(traveler.traveler_id, traveler.document_type))
        for path in traveler.photos:
            try:
                digest = hashlib.sha256(manifest.read_photo(path)).hexdigest()
            except OSError as exc:  # vanished, unreadable or moved out since the manifest was checked
                enrollment.fail(EnrollmentPhoto(traveler.traveler_id, str(path), ""), _cannot_read(exc))
                continue
            photo = EnrollmentPhoto(traveler.traveler_id, str(path), digest)
            photos.append(photo)
            sources[photo.reference] = path
    if store.is_current(gid, enrollment.content_hash(photos)):
        return BuildReport(store.info(gid), True, tuple(store.failures(gid)), sources)
    store.check_replaceable(gid)

    with tqdm(
        total=len(photos), unit="photo", desc=f"enrolling {gid}", file=sys.stderr, disable=not progress
    ) as bar:
        for start in range(0, len(photos), batch_size):
            batch = []
            for photo in photos[start : start + batch_size]:
                try:
                    batch.append((photo, manifest.read_photo(Path(photo.path))))
                except OSError as exc:
                    enrollment.fail(photo, _cannot_read(exc))
            enrollment.add_photos(batch)
            bar.update(len(photos[start : start + batch_size]))
    result = store.write(enrollment.draft(), now=now, retention=retention)
    return BuildReport(result.info, result.unchanged, tuple(enrollment.failures), sources)


def _cannot_read(exc: OSError) -> str:
    """Why a photo could not be read, without its path (the failure report is kept with the gallery)."""
    return f"cannot read: {exc.strerror or type(exc).__name__}"
