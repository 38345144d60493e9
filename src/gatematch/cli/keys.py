"""`gatematch keys create|list|rotate|retire`: the template keys of a site (gatematch.keyfile).

Rotation while the service serves: `keys create` adds a key (the service seals its next writes with it),
`keys rotate` re-encrypts every gallery under the newest key, each as a new version switched in one transaction
(the service keeps matching, and picks the new key up from the file), and `keys retire ID` drops a key once no
gallery is sealed under it. Every change is recorded in the audit trail.
"""

from __future__ import annotations

import argparse
from collections import Counter

from gatematch.cli.admin import Admin, admin_options, with_admin
from gatematch.cli.options import print_json
from gatematch.errors import GalleryStoreError, TemplateKeyError
from gatematch.gallery_store import GalleryStore
from gatematch.keyfile import KeyFile

EXIT_INCOMPLETE = 1  # `rotate` could not reseal every gallery (each is named)


def _create(args: argparse.Namespace, admin: Admin) -> int:
    existing = admin.managed_key_file()
    if existing is not None:
        key, action = existing.add(), "added to"
    else:
        key, action = KeyFile.create(admin.key_file_path).current(), "created in"
    admin.record("keys.create", detail=f"key {key.key_id} {action} {admin.key_file_path.name}")
    print(
        f"key {key.key_id} {action} {admin.key_file_path}; it seals every new gallery version from now on "
        "(`gatematch keys rotate` re-encrypts the others)"
    )
    return 0


def _galleries_by_key(store: GalleryStore) -> Counter[str]:
    return Counter(info.key_id if info.encrypted else "plaintext" for info in store.galleries())


def _list(args: argparse.Namespace, admin: Admin) -> int:
    keys = admin.key_file()
    usage: Counter[str] | None = None
    try:
        usage = _galleries_by_key(admin.store())
    except GalleryStoreError:
        if args.store is not None:
            raise  # the store asked for must be readable; the default one may not exist yet
    entries = keys.entries
    rows = [
        {
            "id": e.key_id,
            "created": e.created,
            "current": n == len(entries) - 1,
            "galleries": usage.get(e.key_id, 0) if usage is not None else None,
        }
        for n, e in enumerate(entries)
    ]
    if args.json:
        plaintext = usage.get("plaintext", 0) if usage is not None else None
        print_json({"key_file": str(admin.key_file_path), "keys": rows, "plaintext_galleries": plaintext})
        return 0
    for row in rows:
        current = "  CURRENT (seals new versions)" if row["current"] else ""
        used = "" if row["galleries"] is None else f"  {row['galleries']} galleries"
        print(f"{row['id']}  created {row['created']}{current}{used}")
    held = {row["id"] for row in rows}
    for key_id, count in sorted((usage or Counter()).items()):
        if key_id == "plaintext":
            print(f"{count} galleries in PLAINTEXT (`gatematch keys rotate` encrypts them)")
        elif key_id not in held:
            print(f"{count} galleries sealed under {key_id}, a key NOT in the key file")
    return 0


def _rotate(args: argparse.Namespace, admin: Admin) -> int:
    keys = admin.key_file()
    if args.new_key:
        added = keys.add()
        admin.record("keys.create", detail=f"key {added.key_id} added to {admin.key_file_path.name}")
    current = keys.current().key_id
    store = admin.store(keys=keys)
    resealed, failed = [], []
    for info in store.galleries():
        try:
            if store.reseal(info.gallery_id):
                resealed.append(info.gallery_id)
        except (GalleryStoreError, TemplateKeyError) as exc:
            failed.append((info.gallery_id, exc))
    admin.record(
        "keys.rotate", detail=f"{len(resealed)} galleries resealed under {current}, {len(failed)} failed"
    )
    if args.json:
        print_json(
            {
                "key": current,
                "resealed": resealed,
                "failed": [{"gallery_id": g, "problem": e.describe()} for g, e in failed],
            }
        )
    else:
        print(f"{len(resealed)} galleries resealed under key {current}")
        for gallery_id in resealed:
            print(f"  {gallery_id}")
        for gallery_id, exc in failed:
            print(f"  NOT RESEALED {gallery_id}: {exc.describe()}")
    return EXIT_INCOMPLETE if failed else 0


def _retire(args: argparse.Namespace, admin: Admin) -> int:
    keys = admin.key_file()
    store = admin.store()
    using = [info.gallery_id for info in store.galleries() if info.encrypted and info.key_id == args.key_id]
    if using:
        raise TemplateKeyError(
            f"key {args.key_id} still seals {len(using)} galleries ({', '.join(using[:3])}"
            f"{', ...' if len(using) > 3 else ''}): run `gatematch keys rotate` first"
        )
    keys.retire(args.key_id)
    admin.record("keys.retire", detail=f"key {args.key_id} removed from {admin.key_file_path.name}")
    print(f"key {args.key_id} removed from {admin.key_file_path}")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    keys = commands.add_parser("keys", help="create, list, rotate and retire the template keys")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    common = admin_options()

    create = actions.add_parser(
        "create", parents=[common], help="create the key file, or add a new key to it"
    )
    create.set_defaults(handler=with_admin(_create))

    listing = actions.add_parser("list", parents=[common], help="the keys, and how many galleries each seals")
    listing.set_defaults(handler=with_admin(_list))

    rotate = actions.add_parser(
        "rotate", parents=[common], help="re-encrypt every gallery under the newest key (while serving)"
    )
    rotate.add_argument("--new-key", action="store_true", help="add a new key first (create + rotate)")
    rotate.set_defaults(handler=with_admin(_rotate))

    retire = actions.add_parser("retire", parents=[common], help="remove a key no gallery is sealed under")
    retire.add_argument("key_id", help="the key's id (see `gatematch keys list`)")
    retire.set_defaults(handler=with_admin(_retire))
