"""`gatematch gallery build|list|inspect|purge|export|add|remove`: flight galleries from the command line
(`add` and `remove`, deltas, live in gatematch.gallery_tools.delta_cli).

Templates are biometric data, so `export` writes metadata only (gallery, pack, travelers, template
provenance, enrollment failures) unless `--with-templates` is given; templates then go only to a new file
readable by its owner alone, never to the terminal, and never from an expired gallery.
Encrypted stores take their key from $GATEMATCH_TEMPLATE_KEY. `--store` is a folder (the embedded store) or
a `postgresql://` URL (the store service replicas share). `list` and `inspect` read every gallery back (rows,
index sha256, decryption) and name a damaged one; they then exit with code 1.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
from datetime import timedelta
from pathlib import Path

from gatematch.cli.options import print_json
from gatematch.errors import GalleryExportError, GalleryStoreError
from gatematch.gallery import GalleryInfo, iso
from gatematch.gallery_store import DEFAULT_RETENTION, GalleryCheck, GalleryStore, is_database_url, open_store
from gatematch.gallery_store_sqlite import DB_NAME
from gatematch.gallery_tools import delta_cli
from gatematch.gallery_tools.manifest import parse_departure
from gatematch.template_crypto import TemplateKey

MAX_RETENTION_HOURS = 366 * 24  # retention is about hours after a flight; a year or more is a typo


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


EXIT_DAMAGED = 1  # `list`/`inspect` found a damaged gallery (and said which)


def _store(args: argparse.Namespace, create: bool = False) -> GalleryStore:
    """The store at --store; only `build` may create a folder (a typo must not leave stores around)."""
    if not create and not is_database_url(args.store) and not (Path(args.store) / DB_NAME).is_file():
        raise GalleryStoreError(
            f"no gallery store at {args.store} (build one with `gatematch gallery build`)"
        )
    hours = getattr(args, "retention_hours", None)
    retention = timedelta(hours=hours) if hours is not None else DEFAULT_RETENTION
    return open_store(args.store, key=TemplateKey.from_env(), retention=retention)


def _check_line(check: GalleryCheck) -> str:
    if not check.ok:
        return f"  DAMAGED: {check.problem}"
    return f"  ({check.note})" if check.note else ""


def _summary(info: GalleryInfo) -> str:
    return (
        f"{info.gallery_id}  v{info.version}  {info.travelers} travelers / {info.templates} templates, "
        f"{len(info.failed_travelers)} not enrolled, {info.failures} photo failures  pack {info.pack}  "
        f"departs {iso(info.departure)}  expires {iso(info.expires_at)}{'  encrypted' if info.encrypted else ''}"
    )


def _build(args: argparse.Namespace) -> int:
    from gatematch.facepipeline import FacePipeline, PipelineConfig
    from gatematch.gallery_tools.build import build_gallery
    from gatematch.gallery_tools.manifest import load_manifest
    from gatematch.modelstore import ModelStore
    from gatematch.quality import QualityThresholds

    manifest = load_manifest(args.manifest)
    store = _store(args, create=True)
    quality = QualityThresholds.enrollment() if args.quality == "enrollment" else QualityThresholds()
    config = PipelineConfig(quality=quality)
    pipeline = FacePipeline.from_pack(args.pack, store=ModelStore(args.model_dir), config=config)
    report = build_gallery(
        manifest, store, pipeline, batch_size=args.batch_size, progress=not args.no_progress
    )
    if args.json:
        print_json(
            {
                **report.info.as_dict(),
                "unchanged": report.unchanged,
                "enrollment_failures": [f.__dict__ for f in report.failures],
            }
        )
        return 0
    print(("unchanged (same content): " if report.unchanged else "built: ") + _summary(report.info))
    for failure in report.failures:
        print(
            f"  failed to enroll {failure.traveler_id}: {failure.reason}: {failure.detail} ({failure.photo})"
        )
    for traveler in report.info.failed_travelers:
        print(f"  NOT ENROLLED (every photo failed): {traveler}")
    return 0


def _check_dict(check: GalleryCheck) -> dict[str, object]:
    return {"ok": check.ok, "problem": check.problem, "note": check.note}


def _list(args: argparse.Namespace) -> int:
    store = _store(args)
    galleries = store.galleries()
    checks = [store.verify(info.gallery_id) for info in galleries]
    if args.json:
        print_json([{**g.as_dict(), "check": _check_dict(c)} for g, c in zip(galleries, checks, strict=True)])
    else:
        for info, check in zip(galleries, checks, strict=True):
            print(_summary(info) + _check_line(check))
    return 0 if all(c.ok for c in checks) else EXIT_DAMAGED


def _inspect(args: argparse.Namespace) -> int:
    store = _store(args)
    info = store.info(args.gallery)
    failures = store.failures(args.gallery)
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
            f"  failed to enroll {failure.traveler_id}: {failure.reason}: {failure.detail} ({failure.photo})"
        )
    for traveler in info.failed_travelers:
        print(f"  NOT ENROLLED (every photo failed): {traveler}")
    return status


def _purge(args: argparse.Namespace) -> int:
    store = _store(args)
    if args.gallery:
        for gallery_id in args.gallery:  # all or nothing: an unknown id is reported before anything is purged
            store.info(gallery_id)
        for gallery_id in args.gallery:
            store.purge(gallery_id)
        purged = list(args.gallery)
    else:
        now = parse_departure(args.now, "--now") if args.now else None
        purged = store.purge_expired(now)
    if args.json:
        print_json({"purged": purged})
    else:
        print(f"purged {len(purged)} galleries" + "".join(f"\n  {g}" for g in purged))
    return 0


def _export(args: argparse.Namespace) -> int:
    store = _store(args)
    info = store.info(args.gallery)
    provenance = store.provenance(args.gallery)
    data: dict[str, object] = {
        **info.as_dict(),
        "travelers": [t.__dict__ for t in store.travelers(args.gallery)],
        "templates": [
            {**p.__dict__, "created_at": iso(p.created_at), "quality": p.quality} for p in provenance
        ],
        "enrollment_failures": [f.__dict__ for f in store.failures(args.gallery)],
    }
    if args.with_templates:
        if args.output is None:
            raise GalleryExportError("--with-templates writes biometric templates: give --output FILE")
        vectors = store.load(args.gallery).vectors()
        data["template_encoding"] = "base64 little-endian float32, L2-normalised"
        for record, vector in zip(data["templates"], vectors, strict=True):
            record["embedding"] = base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    if args.output is None:
        print_json(data)
        return 0
    try:
        fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise GalleryExportError(f"{args.output} exists; an export never overwrites a file") from None
    except OSError as exc:
        raise GalleryExportError(f"cannot create {args.output}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2)
        handle.write("\n")
    print(
        f"exported {info.gallery_id} ({'with' if args.with_templates else 'without'} templates) to {args.output}"
    )
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    gallery = commands.add_parser("gallery", help="build, list, inspect, purge and export flight galleries")
    actions = gallery.add_subparsers(dest="gallery_command", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store",
        "--out",
        dest="store",
        required=True,
        help="gallery store: a folder (embedded SQLite store) or a postgresql:// URL",
    )
    common.add_argument("--json", action="store_true", help="machine-readable output")

    build = actions.add_parser("build", parents=[common], help="enroll a flight manifest into a gallery")
    build.add_argument("manifest", type=Path, help="flight manifest (.csv or .json)")
    build.add_argument("--pack", default="default", help="model pack (default: default)")
    build.add_argument(
        "--model-dir", type=Path, default=None, help="model store (default: $GATEMATCH_MODEL_DIR)"
    )
    build.add_argument(
        "--retention-hours",
        type=_positive(float, MAX_RETENTION_HOURS),
        default=None,
        help="expiry after departure (default 12)",
    )
    build.add_argument(
        "--quality",
        choices=("enrollment", "gate"),
        default="enrollment",
        help="quality bar: 'enrollment' (document photos, default) or the laxer 'gate' probe bar",
    )
    build.add_argument("--batch-size", type=_positive(int), default=16)
    build.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    build.set_defaults(handler=_build)

    listing = actions.add_parser("list", parents=[common], help="every gallery in the store")
    listing.set_defaults(handler=_list)

    inspect = actions.add_parser("inspect", parents=[common], help="one gallery: pack, counts, failures")
    inspect.add_argument("gallery", help="gallery id (FLIGHT_YYYYMMDDTHHMMZ)")
    inspect.set_defaults(handler=_inspect)

    purge = actions.add_parser("purge", parents=[common], help="delete expired galleries (or the ones named)")
    purge.add_argument("gallery", nargs="*", help="purge these now, expired or not")
    purge.add_argument("--now", help="purge what is expired at this UTC time (default: now)")
    purge.set_defaults(handler=_purge)

    export = actions.add_parser(
        "export", parents=[common], help="gallery metadata (templates only on request)"
    )
    export.add_argument("gallery")
    export.add_argument("--output", "-o", type=Path, default=None, help="new file to write (default: stdout)")
    export.add_argument("--with-templates", action="store_true", help="include the biometric templates")
    export.set_defaults(handler=_export)

    delta_cli.register(actions, common, _store)
