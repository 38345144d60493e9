"""Build a flight gallery from a manifest: every enrollment photo through the one enrollment path.

How photos are judged and how a gallery's content hash is made live in `gatematch.enrollment` (the service's
GalleryService.Load uses the same). Photos are hashed first, so rebuilding identical input is a no-op that
decodes nothing and never adds rows.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import UTC, datetime

from tqdm import tqdm

from gatematch.enrollment import BATCH_SIZE, Enrollment, EnrollmentPhoto
from gatematch.errors import GalleryExpiredError
from gatematch.facepipeline import FacePipeline
from gatematch.gallery import EnrollmentFailure, GalleryInfo, iso
from gatematch.gallery_store import GalleryStore, TravelerRecord, gallery_id_for
from gatematch.gallery_tools.manifest import Manifest
from gatematch.modelstore import sha256_of


@dataclass(frozen=True)
class BuildReport:
    info: GalleryInfo
    unchanged: bool  # identical content was already the current version: no work was done
    failures: tuple[EnrollmentFailure, ...]


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
    enrollment = Enrollment(
        pipeline, manifest.flight_id, manifest.departure, batch_size=batch_size, direction=manifest.direction
    )
    gid = gallery_id_for(manifest.flight_id, manifest.departure, manifest.direction)
    expires = manifest.departure + store.retention
    if expires <= (now or datetime.now(UTC)):
        raise GalleryExpiredError(
            f"gallery {gid} would expire at {iso(expires)} ({store.retention} after departure): not built"
        )
    photos: list[EnrollmentPhoto] = []
    for traveler in manifest.travelers:
        enrollment.expect(TravelerRecord(traveler.traveler_id, traveler.document_type))
        for path in traveler.photos:
            try:
                photos.append(EnrollmentPhoto(traveler.traveler_id, str(path), sha256_of(path)))
            except OSError as exc:  # vanished or unreadable since the manifest was checked
                photo = EnrollmentPhoto(traveler.traveler_id, str(path), "")
                enrollment.fail(photo, f"cannot read: {exc.strerror or exc}")
    if store.is_current(gid, enrollment.content_hash(photos)):
        return BuildReport(store.info(gid), True, tuple(store.failures(gid)))
    store.check_replaceable(gid)

    with tqdm(
        total=len(photos), unit="photo", desc=f"enrolling {gid}", file=sys.stderr, disable=not progress
    ) as bar:
        for start in range(0, len(photos), batch_size):
            batch = photos[start : start + batch_size]
            enrollment.add_photos([(photo, photo.path) for photo in batch])
            bar.update(len(batch))
    result = store.write(enrollment.draft(), now=now)
    return BuildReport(result.info, result.unchanged, tuple(enrollment.failures))
