"""Gallery deltas: travelers added to or removed from a gallery's current version, the others left as they are.

A passenger list changes until the door closes (standby passengers and late check-ins added, no-shows and
offloaded passengers removed). Loading the whole flight again would embed every photo again; a delta embeds
only the photos it adds (through the one enrollment path, gatematch.enrollment) and carries every other
template over from the current version's index as it is, bit for bit, with its provenance.

A delta is written like any version (`GalleryStore.write`): a new immutable version in one transaction, sealed
under the store's key, with the gallery's expiry unchanged. It is written only over the version it was made
from (`base`): when another writer got there first, the delta is merged again onto the new version (the added
templates are kept, nothing is embedded twice); after ATTEMPTS the conflict is the caller's.

Adding a traveler the gallery holds replaces their templates (a better photo, or one who failed to enroll);
adding exactly what is stored is a no-op. Removing a traveler the gallery does not hold is an error (a typo
must not look like success). The new version's content hash covers the previous version's and the delta.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from gatematch.enrollment import Enrollment
from gatematch.errors import GalleryConflictError, ManifestError, TravelerNotFoundError, WrongPackError
from gatematch.facepipeline import FacePipeline
from gatematch.gallery import EnrollmentFailure, Gallery, GalleryInfo, ModelRef, canonical_json
from gatematch.gallery_store import (
    GalleryDraft,
    GalleryStore,
    TemplateProvenance,
    TemplateRecord,
    TravelerRecord,
)

ATTEMPTS = 3  # merges tried against a gallery other writers keep changing


@dataclass(frozen=True)
class DeltaResult:
    info: GalleryInfo  # the version now current
    unchanged: bool  # the delta changed nothing: no version was written
    added: tuple[str, ...]  # travelers added (or whose templates were replaced)
    removed: tuple[str, ...]
    failures: tuple[EnrollmentFailure, ...]  # added photos that gave no template

    def describe(self) -> str:
        """One line for logs and the audit trail (traveler ids are not biometric data)."""
        text = f"v{self.info.version}: +{len(self.added)} -{len(self.removed)} travelers"
        if self.failures:
            text += f", {len(self.failures)} photos rejected"
        return text + (", unchanged" if self.unchanged else "")


def start_delta(store: GalleryStore, gallery_id: str, pipeline: FacePipeline, batch_size: int) -> Enrollment:
    """Where the travelers a delta adds are enrolled: the gallery's flight, with `pipeline`, which must embed
    with the gallery's embedder (WrongPackError otherwise; GalleryExpiredError for an expired gallery)."""
    info = store.load(gallery_id).info
    embedder = ModelRef.of(pipeline.pack.embedder)
    if embedder != info.embedder:
        raise WrongPackError(
            f"gallery {gallery_id} was built with embedder {info.embedder.name} "
            f"(sha256 {info.embedder.sha256[:12]}); this pipeline embeds with {embedder.name}"
        )
    return Enrollment(
        pipeline, info.flight_id, info.departure, batch_size=batch_size, direction=info.direction
    )


def apply_delta(
    store: GalleryStore,
    gallery_id: str,
    additions: Enrollment | None,
    removals: Iterable[str] = (),
    now: datetime | None = None,
) -> DeltaResult:
    """Write the current version of `gallery_id` with the travelers of `additions` added (or replaced) and
    `removals` removed, as a new version; see the module docstring."""
    removed = tuple(sorted(set(removals)))
    added = tuple(additions.travelers) if additions is not None else ()
    if not removed and not added:
        raise ManifestError(f"the delta to gallery {gallery_id} adds and removes nobody")
    both = sorted(set(removed) & set(added))
    if both:
        raise ManifestError(f"the delta both adds and removes {', '.join(both)}")
    for attempt in range(ATTEMPTS):
        gallery = store.load(gallery_id, now)
        info = gallery.info
        provenance = store.provenance(gallery_id)
        if len(provenance) != gallery.index.ntotal:  # a version written between the two reads
            continue
        draft = merge(
            gallery, provenance, store.travelers(gallery_id), store.failures(gallery_id), additions, removed
        )
        failures = tuple(additions.failures) if additions is not None else ()
        if draft is None:
            return DeltaResult(info, True, added, removed, failures)
        try:
            written = store.write(
                draft,
                now=now,
                retention=info.expires_at - info.departure,
                base=(info.version, info.content_hash),
            )
        except GalleryConflictError:
            if attempt == ATTEMPTS - 1:
                raise
            continue
        return DeltaResult(written.info, written.unchanged, added, removed, failures)
    raise GalleryConflictError(f"gallery {gallery_id} kept changing while the delta was applied; try again")


def merge(
    gallery: Gallery,
    provenance: list[TemplateProvenance],
    travelers: list[TravelerRecord],
    failures: list[EnrollmentFailure],
    additions: Enrollment | None,
    removed: tuple[str, ...],
) -> GalleryDraft | None:
    """The next version: the current one's templates (vectors read back from its index), less the removed and
    replaced travelers, plus the added ones; None when that is exactly the current content."""
    info = gallery.info
    held = {t.traveler_id: t for t in travelers}
    missing = [t for t in removed if t not in held]
    if missing:
        raise TravelerNotFoundError(
            f"gallery {info.gallery_id} (version {info.version}) holds no traveler {', '.join(missing)}"
        )
    new_travelers = dict(additions.travelers) if additions is not None else {}
    new_templates = list(additions.templates) if additions is not None else []
    new_failures = list(additions.failures) if additions is not None else []
    stored: dict[str, list[str]] = {}
    for record in provenance:
        stored.setdefault(record.traveler_id, []).append(record.photo_sha256)
    if (
        not removed
        and not new_failures
        and all(
            t in held
            and held[t].document_type == record.document_type
            and sorted(stored.get(t, ()))
            == sorted(template.photo_sha256 for template in new_templates if template.traveler_id == t)
            for t, record in new_travelers.items()
        )
    ):
        return None
    replaced = set(removed) | set(new_travelers)
    vectors = gallery.vectors()
    kept = [
        TemplateRecord(p.traveler_id, p.photo, p.photo_sha256, p.quality, vectors[p.row])
        for p in provenance
        if p.traveler_id not in replaced
    ]
    basis = {
        "base": info.content_hash,
        "remove": list(removed),
        "add": sorted(
            [t, record.document_type or "", sorted(additions.digests.get(t, ()))]
            for t, record in new_travelers.items()
        )
        if additions is not None
        else [],
    }
    return GalleryDraft(
        flight_id=info.flight_id,
        departure=info.departure,
        pack=info.pack,
        model_hashes=dict(info.model_hashes),
        embedder=info.embedder,
        dim=info.dim,
        travelers=(*(t for t in travelers if t.traveler_id not in replaced), *new_travelers.values()),
        templates=(*kept, *new_templates),
        failures=(*(f for f in failures if f.traveler_id not in replaced), *new_failures),
        content_hash=hashlib.sha256(canonical_json(basis).encode()).hexdigest(),
        direction=info.direction,
    )
