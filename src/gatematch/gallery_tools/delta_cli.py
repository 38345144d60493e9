"""`gatematch gallery add|remove`: deltas to a gallery in a store, as its next version (gatematch.gallery_delta).

`add` enrolls one traveler's photos (a late check-in, a standby passenger) with the gallery's pack and carries
every other template over as it is; `remove` takes travelers out (no-shows, offloaded passengers). Each is a new
immutable version, sealed under the newest template key as a full build is, expiring when the gallery did, and a
record in the chained audit trail; store, keys and audit trail come from the service config (gatematch.cli.admin).
The photos are read as bytes and the gallery names them by content hash only; this run's output maps failures back
to the files given. A running service matches against the new version from its next frame (replicas on
PostgreSQL within a second).
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from gatematch.cli.admin import Admin, with_admin
from gatematch.cli.options import add_model_dir_option, print_json
from gatematch.errors import ManifestError
from gatematch.gallery_store import TravelerRecord

if TYPE_CHECKING:
    from gatematch.gallery_delta import DeltaResult

EXIT_NOT_ENROLLED = 1  # `add`: every photo of the traveler failed; they are recorded as not enrolled


def _record(args: argparse.Namespace, admin: Admin, event: str, result: DeltaResult) -> None:
    """The change in the service's audit trail (traveler ids and the operator's reason; never a photo)."""
    travelers = result.added or result.removed
    detail = f"{result.info.gallery_id}: {', '.join(travelers)}" + (f"; {args.reason}" if args.reason else "")
    admin.record(
        event,
        flight_id=result.info.flight_id,
        gallery_version=str(result.info.version),
        detail=detail[:200],
    )


def _report(args: argparse.Namespace, result: DeltaResult, sources: dict[str, Path] | None = None) -> None:
    if args.json:
        print_json(
            {
                **result.info.as_dict(),
                "unchanged": result.unchanged,
                "added": list(result.added),
                "removed": list(result.removed),
                "enrollment_failures": [f.__dict__ for f in result.failures],
            }
        )
        return
    info = result.info
    print(
        ("unchanged (same content): " if result.unchanged else "new version: ")
        + f"{info.gallery_id} v{info.version}, {info.travelers} travelers / {info.templates} templates"
    )
    for failure in result.failures:
        source = (sources or {}).get(failure.photo, failure.photo or "unreadable photo")
        print(f"  failed to enroll {failure.traveler_id}: {failure.reason}: {failure.detail} ({source})")


def _add(args: argparse.Namespace, admin: Admin) -> int:
    from gatematch.enrollment import EnrollmentPhoto
    from gatematch.facepipeline import FacePipeline, PipelineConfig
    from gatematch.gallery_delta import apply_delta, start_delta
    from gatematch.modelstore import ModelStore
    from gatematch.quality import QualityThresholds

    images: list[bytes] = []
    for path in args.photos:
        try:
            images.append(path.read_bytes())
        except OSError as exc:
            raise ManifestError(
                f"photo {path} cannot be read: {exc.strerror or type(exc).__name__}"
            ) from None
    store = admin.store(keys=admin.keys())
    info = store.info(args.gallery)
    config = PipelineConfig(quality=QualityThresholds.enrollment())
    pipeline = FacePipeline.from_pack(args.pack or info.pack, store=ModelStore(args.model_dir), config=config)
    enrollment = start_delta(store, args.gallery, pipeline, batch_size=len(images))
    enrollment.expect(TravelerRecord(args.traveler, args.document_type))
    photos = [
        EnrollmentPhoto(args.traveler, str(path), hashlib.sha256(image).hexdigest())
        for path, image in zip(args.photos, images, strict=True)
    ]
    enrollment.add_photos(list(zip(photos, images, strict=True)))
    result = apply_delta(store, args.gallery, enrollment)
    if not result.unchanged:
        _record(args, admin, "gallery.add", result)
    _report(args, result, {photo.reference: path for photo, path in zip(photos, args.photos, strict=True)})
    return EXIT_NOT_ENROLLED if args.traveler in result.info.failed_travelers else 0


def _remove(args: argparse.Namespace, admin: Admin) -> int:
    from gatematch.gallery_delta import apply_delta

    store = admin.store(keys=admin.keys())
    result = apply_delta(store, args.gallery, None, args.travelers)
    _record(args, admin, "gallery.remove", result)
    _report(args, result)
    return 0


def register(actions: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """`add` and `remove` under `gatematch gallery`, each run with the command's Admin (store, keys and audit
    trail of the --config given)."""
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument("--reason", default="", help="recorded in the audit trail")

    add = actions.add_parser(
        "add",
        parents=[common, shared],
        help="add a traveler to a gallery (a new version; others kept as they are)",
    )
    add.add_argument("gallery", help="gallery id (FLIGHT_YYYYMMDDTHHMMZ, `_arr` for an arrival)")
    add.add_argument("traveler", help="traveler id")
    add.add_argument("photos", nargs="+", type=Path, help="the traveler's enrollment photos")
    add.add_argument("--document-type", default=None, help="e.g. passport")
    add.add_argument("--pack", default=None, help="model pack (default: the gallery's)")
    add_model_dir_option(add)
    add.set_defaults(handler=with_admin(_add))

    remove = actions.add_parser(
        "remove", parents=[common, shared], help="remove travelers from a gallery (a new version)"
    )
    remove.add_argument("gallery", help="gallery id")
    remove.add_argument("travelers", nargs="+", metavar="traveler", help="traveler ids")
    remove.set_defaults(handler=with_admin(_remove))
