"""`gatematch gallery build|list|inspect|purge|export|add|remove`: flight galleries from the command line
(`add` and `remove`, deltas, live in gatematch.gallery_tools.delta_cli).

Templates are biometric data: `export` writes metadata (gallery, pack, travelers, template provenance,
enrollment failures), and templates only with `--with-templates --recipient KEY.pem`, sealed for that
recipient's public key (gatematch.gallery_tools.export); never in plaintext, never from an expired gallery.
The store, the template keys, the retention policy and the audit trail come from the service config
(gatematch.cli.admin); `--store` is a folder (the embedded store) or a `postgresql://` URL. `list` and `inspect`
read every gallery back (rows, index sha256, decryption) and name a damaged one; they then exit with code 1.
Every command is recorded in the audit trail.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from datetime import timedelta
from pathlib import Path

from gatematch.cli.admin import Admin, admin_options, with_admin
from gatematch.cli.options import print_json
from gatematch.errors import GalleryExportError
from gatematch.gallery import GalleryInfo, iso
from gatematch.gallery_store import GalleryCheck, flight_of
from gatematch.gallery_tools import delta_cli
from gatematch.gallery_tools.manifest import parse_departure

MAX_RETENTION_HOURS = 366 * 24  # a parse bound only: the configured retention policy sets the real maximum
EXIT_DAMAGED = 1  # `list`/`inspect` found a damaged gallery (and said which)


def _positive(kind: type[int] | type[float], most: float = math.inf):
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            value = 0
        if not 0 < value <= most:
            limit = "" if most == math.inf else f" up to {most:g}"
            raise argparse.ArgumentTypeError(f"must be a positive {kind.__name__}{limit}, got {text!r}")
        return value

    return parse


def _check_line(check: GalleryCheck) -> str:
    if not check.ok:
        return f"  DAMAGED: {check.problem}"
    return f"  ({check.note})" if check.note else ""


def _summary(info: GalleryInfo) -> str:
    sealed = f"  encrypted (key {info.key_id})" if info.encrypted else "  PLAINTEXT"
    return (
        f"{info.gallery_id}  v{info.version}  {info.travelers} travelers / {info.templates} templates, "
        f"{len(info.failed_travelers)} not enrolled, {info.failures} photo failures  pack {info.pack}  "
        f"departs {iso(info.departure)}  expires {iso(info.expires_at)}{'  EXPIRED' if info.expired() else ''}"
        f"{sealed}"
    )


def _build(args: argparse.Namespace, admin: Admin) -> int:
    from gatematch.facepipeline import FacePipeline, PipelineConfig
    from gatematch.gallery_tools.build import build_gallery
    from gatematch.gallery_tools.manifest import load_manifest
    from gatematch.modelstore import ModelStore
    from gatematch.quality import QualityThresholds

    manifest = load_manifest(args.manifest, args.photo_root)
    store = admin.store(create=True, keys=admin.keys(create=True))
    quality = QualityThresholds.enrollment() if args.quality == "enrollment" else QualityThresholds()
    config = PipelineConfig(quality=quality)
    pipeline = FacePipeline.from_pack(args.pack, store=ModelStore(args.model_dir), config=config)
    retention = timedelta(hours=args.retention_hours) if args.retention_hours is not None else None
    report = build_gallery(
        manifest,
        store,
        pipeline,
        batch_size=args.batch_size,
        progress=not args.no_progress,
        retention=retention,
    )
    info = report.info
    admin.record(
        "gallery.build",
        flight_id=info.flight_id,
        gallery_version=str(info.version),
        detail=f"{info.gallery_id}: {info.templates} templates, {len(report.failures)} rejected"
        + (", unchanged" if report.unchanged else ""),
    )
    if args.json:
        print_json(
            {
                **info.as_dict(),
                "unchanged": report.unchanged,
                "enrollment_failures": [f.__dict__ for f in report.failures],
            }
        )
        return 0
    print(("unchanged (same content): " if report.unchanged else "built: ") + _summary(info))
    for failure in report.failures:
        print(
            f"  failed to enroll {failure.traveler_id}: {failure.reason}: {failure.detail} "
            f"({report.source_of(failure)})"
        )
    for traveler in info.failed_travelers:
        print(f"  NOT ENROLLED (every photo failed): {traveler}")
    return 0


def _check_dict(check: GalleryCheck) -> dict[str, object]:
    return {"ok": check.ok, "problem": check.problem, "note": check.note}


def _list(args: argparse.Namespace, admin: Admin) -> int:
    store = admin.store(keys=admin.keys())
    galleries = store.galleries()
    checks = [store.verify(info.gallery_id) for info in galleries]
    admin.record("gallery.list", detail=f"{len(galleries)} galleries")
    if args.json:
        print_json([{**g.as_dict(), "check": _check_dict(c)} for g, c in zip(galleries, checks, strict=True)])
    else:
        for info, check in zip(galleries, checks, strict=True):
            print(_summary(info) + _check_line(check))
    return 0 if all(c.ok for c in checks) else EXIT_DAMAGED


def _inspect(args: argparse.Namespace, admin: Admin) -> int:
    store = admin.store(keys=admin.keys())
    info = store.info(args.gallery)
    admin.record("gallery.read", flight_id=info.flight_id, detail=args.gallery)
    failures = store.failures(args.gallery)  # GalleryExpiredError once expired: nothing personal is shown
    check = store.verify(args.gallery)
    status = 0 if check.ok else EXIT_DAMAGED
    if args.json:
        print_json(
            {
                **info.as_dict(),
                "check": _check_dict(check),
                "enrollment_failures": [f.__dict__ for f in failures],
            }
        )
        return status
    print(_summary(info) + _check_line(check))
    print(
        f"  embedder {info.embedder.name} sha256 {info.embedder.sha256}, {info.dim}-d, {info.index_kind} index"
    )
    for name, sha in info.model_hashes.items():
        print(f"  model {name}: {sha}")
    print(f"  created {iso(info.created_at)}, content {info.content_hash[:16]}")
    for failure in failures:
        print(
            f"  failed to enroll {failure.traveler_id}: {failure.reason}: {failure.detail} "
            f"({failure.photo or 'unreadable photo'})"
        )
    for traveler in info.failed_travelers:
        print(f"  NOT ENROLLED (every photo failed): {traveler}")
    return status


def _purge(args: argparse.Namespace, admin: Admin) -> int:
    store = admin.store(keys=admin.keys())
    if args.gallery:
        infos = [store.info(g) for g in args.gallery]  # all or nothing: an unknown id purges nothing
        for info in infos:
            store.purge(info.gallery_id)
            admin.record("gallery.purge", flight_id=info.flight_id, detail=f"{info.gallery_id}: named")
        purged = list(args.gallery)
    else:
        now = parse_departure(args.now, "--now") if args.now else None
        purged = store.purge_expired(now)
        for gallery_id in purged:
            admin.record("gallery.purge", flight_id=flight_of(gallery_id), detail=f"{gallery_id}: expired")
    if args.json:
        print_json({"purged": purged})
    else:
        print(f"purged {len(purged)} galleries" + "".join(f"\n  {g}" for g in purged))
    return 0


def _export(args: argparse.Namespace, admin: Admin) -> int:
    from gatematch.gallery_tools.export import export_document, load_recipient, recipient_id

    recipient = None
    if args.with_templates:
        if args.recipient is None:
            raise GalleryExportError(
                "templates leave the store only encrypted: give --recipient PUBLIC_KEY.pem (an X25519 key)"
            )
        if args.output is None:
            raise GalleryExportError("--with-templates writes biometric templates: give --output FILE")
        recipient = load_recipient(args.recipient)
    store = admin.store(keys=admin.keys())
    document = export_document(store, args.gallery, recipient)
    what = f"templates sealed for recipient {recipient_id(recipient)}" if recipient else "metadata"
    if args.output is not None:
        try:
            fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            raise GalleryExportError(f"{args.output} exists; an export never overwrites a file") from None
        except OSError as exc:
            raise GalleryExportError(f"cannot create {args.output}: {exc.strerror or exc}") from None
    admin.record(
        "gallery.export",
        flight_id=str(document["flight_id"]),
        gallery_version=str(document["version"]),
        detail=f"{args.gallery}: {what}",
    )
    if args.output is None:
        print_json(document)
        return 0
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=2)
        handle.write("\n")
    print(f"exported {args.gallery} ({what}) to {args.output}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    gallery = commands.add_parser("gallery", help="build, list, inspect, purge and export flight galleries")
    actions = gallery.add_subparsers(dest="gallery_command", required=True, metavar="ACTION")
    common = admin_options()

    build = actions.add_parser("build", parents=[common], help="enroll a flight manifest into a gallery")
    build.add_argument("manifest", type=Path, help="flight manifest (.csv or .json)")
    build.add_argument(
        "--photo-root",
        type=Path,
        default=None,
        help="folder every photo must lie in (default: the manifest's folder)",
    )
    build.add_argument("--pack", default="default", help="model pack (default: default)")
    build.add_argument(
        "--model-dir", type=Path, default=None, help="model store (default: $GATEMATCH_MODEL_DIR)"
    )
    build.add_argument(
        "--retention-hours",
        type=_positive(float, MAX_RETENTION_HOURS),
        default=None,
        help="expiry after departure (default and maximum: the config's [retention], 12 h)",
    )
    build.add_argument(
        "--quality",
        choices=("enrollment", "gate"),
        default="enrollment",
        help="quality bar: 'enrollment' (document photos, default) or the laxer 'gate' probe bar",
    )
    build.add_argument("--batch-size", type=_positive(int), default=16)
    build.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    build.set_defaults(handler=with_admin(_build))

    listing = actions.add_parser("list", parents=[common], help="every gallery in the store")
    listing.set_defaults(handler=with_admin(_list))

    inspect = actions.add_parser("inspect", parents=[common], help="one gallery: pack, counts, failures")
    inspect.add_argument("gallery", help="gallery id (FLIGHT_YYYYMMDDTHHMMZ)")
    inspect.set_defaults(handler=with_admin(_inspect))

    purge = actions.add_parser("purge", parents=[common], help="delete expired galleries (or the ones named)")
    purge.add_argument("gallery", nargs="*", help="purge these now, expired or not")
    purge.add_argument("--now", help="purge what is expired at this UTC time (default: now)")
    purge.set_defaults(handler=with_admin(_purge))

    export = actions.add_parser(
        "export", parents=[common], help="gallery metadata (templates only sealed for a recipient)"
    )
    export.add_argument("gallery")
    export.add_argument("--output", "-o", type=Path, default=None, help="new file to write (default: stdout)")
    export.add_argument(
        "--with-templates",
        action="store_true",
        help="include the templates, encrypted to --recipient (they never leave in plaintext)",
    )
    export.add_argument(
        "--recipient", type=Path, default=None, help="the recipient's X25519 public key (PEM)"
    )
    export.set_defaults(handler=with_admin(_export))

    delta_cli.register(actions, common)
