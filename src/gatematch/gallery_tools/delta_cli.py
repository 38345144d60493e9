"""`gatematch gallery add|remove`: deltas to a gallery in a store, as its next version (gatematch.gallery_delta).

`add` enrolls one traveler's photos (a late check-in, a standby passenger) with the gallery's pack and carries
every other template over as it is; `remove` takes travelers out (no-shows, offloaded passengers). Each is a new
immutable version, sealed with $GATEMATCH_TEMPLATE_KEY as a full build is, expiring when the gallery did, and a
record in the audit trail named by the service config (`--config`, else $GATEMATCH_CONFIG or the defaults).
A running service matches against the new version from its next frame (replicas on PostgreSQL within a second).
"""

from __future__ import annotations

import argparse
import getpass
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from gatematch.cli.options import add_model_dir_option, print_json
from gatematch.errors import ManifestError
from gatematch.gallery_store import GalleryStore, TravelerRecord

if TYPE_CHECKING:
    from gatematch.gallery_delta import DeltaResult

EXIT_NOT_ENROLLED = 1  # `add`: every photo of the traveler failed; they are recorded as not enrolled


def _audit(args: argparse.Namespace, event: str, result: DeltaResult) -> None:
    """The change in the service's audit trail, as the operating-system user who made it."""
    from gatematch.service.audit import AuditLog, AuditRecord, DatabaseAuditLog
    from gatematch.service.config import load_config

    config = load_config(args.config)
    sink = AuditLog(config.audit.path)
    if config.audit.sink == "store":
        sink = DatabaseAuditLog(config.store.url, sink)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    travelers = result.added or result.removed
    detail = f"{result.info.gallery_id}: {', '.join(travelers)}" + (f"; {args.reason}" if args.reason else "")
    try:
        sink.record(
            AuditRecord(
                event,
                f"cli:{user}"[:200],
                flight_id=result.info.flight_id,
                gallery_version=str(result.info.version),
                detail=detail[:200],
            )
        )
    finally:
        sink.close()


def _report(args: argparse.Namespace, result: DeltaResult) -> None:
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
        print(
            f"  failed to enroll {failure.traveler_id}: {failure.reason}: {failure.detail} ({failure.photo})"
        )


def _add(args: argparse.Namespace, store: GalleryStore) -> int:
    from gatematch.enrollment import EnrollmentPhoto
    from gatematch.facepipeline import FacePipeline, PipelineConfig
    from gatematch.gallery_delta import apply_delta, start_delta
    from gatematch.modelstore import ModelStore, sha256_of
    from gatematch.quality import QualityThresholds

    for photo in args.photos:
        if not photo.is_file():
            raise ManifestError(f"photo {photo} is not a file")
    info = store.info(args.gallery)
    config = PipelineConfig(quality=QualityThresholds.enrollment())
    pipeline = FacePipeline.from_pack(args.pack or info.pack, store=ModelStore(args.model_dir), config=config)
    enrollment = start_delta(store, args.gallery, pipeline, batch_size=len(args.photos))
    enrollment.expect(TravelerRecord(args.traveler, args.document_type))
    photos = [EnrollmentPhoto(args.traveler, str(p.resolve()), sha256_of(p)) for p in args.photos]
    enrollment.add_photos([(photo, photo.path) for photo in photos])
    result = apply_delta(store, args.gallery, enrollment)
    if not result.unchanged:
        _audit(args, "gallery.add", result)
    _report(args, result)
    return EXIT_NOT_ENROLLED if args.traveler in result.info.failed_travelers else 0


def _remove(args: argparse.Namespace, store: GalleryStore) -> int:
    from gatematch.gallery_delta import apply_delta

    result = apply_delta(store, args.gallery, None, args.travelers)
    _audit(args, "gallery.remove", result)
    _report(args, result)
    return 0


def register(
    actions: argparse._SubParsersAction,
    common: argparse.ArgumentParser,
    store: Callable[[argparse.Namespace], GalleryStore],
) -> None:
    """`add` and `remove` under `gatematch gallery`; `store(args)` opens the --store given."""
    shared = argparse.ArgumentParser(add_help=False)
    shared.add_argument(
        "--config", type=Path, default=None, help="service config naming the audit trail (default: built-in)"
    )
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
    add.set_defaults(handler=lambda args: _add(args, store(args)))

    remove = actions.add_parser(
        "remove", parents=[common, shared], help="remove travelers from a gallery (a new version)"
    )
    remove.add_argument("gallery", help="gallery id")
    remove.add_argument("travelers", nargs="+", metavar="traveler", help="traveler ids")
    remove.set_defaults(handler=lambda args: _remove(args, store(args)))
