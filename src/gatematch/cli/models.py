"""`gatematch models list|fetch|verify`: install and check the pinned model files."""

from __future__ import annotations

import argparse
from pathlib import Path

from gatematch.cards import ModelCard, load_cards, load_packs
from gatematch.cli.options import add_model_dir_option, print_json
from gatematch.modelstore import ModelStore


def _selected(args: argparse.Namespace) -> list[ModelCard]:
    if args.pack:
        from gatematch.cards import get_pack

        return list(get_pack(args.pack).models)
    return list(load_cards().values())


def _list(args: argparse.Namespace) -> int:
    store = ModelStore(args.model_dir)
    packs = load_packs()
    rows = []
    for card in _selected(args):
        status = store.status(card)
        rows.append(
            {
                "name": card.name,
                "task": card.task,
                "file": card.file,
                "license": card.license,
                "commercial_use": card.commercial_use,
                "present": status.present,
                "verified": status.verified,
                "problem": status.problem,
                "packs": [p.name for p in packs.values() if card in p.models],
                "derived": bool(card.derived),
            }
        )
    if args.json:
        print_json({"model_dir": str(store.root), "models": rows})
        return 0
    print(f"model store: {store.root}")
    for row in rows:
        state = "verified" if row["verified"] else row["problem"]
        if row["derived"] and not row["present"]:
            state = "not made yet (gatematch models quantize)"
        license = (
            row["license"] if row["commercial_use"] else f"{row['license']}  ** NOT FOR COMMERCIAL USE **"
        )
        print(f"  {row['name']:<24} {row['task']:<9} {state:<14} {license}")
    print("packs:")
    for pack in packs.values():
        flag = "" if pack.commercial_use else "  ** NOT FOR COMMERCIAL USE **"
        print(f"  {pack.name:<12} {pack.description}{flag}")
    return 0


def _fetch(args: argparse.Namespace) -> int:
    store = ModelStore(args.model_dir)
    cards = _selected(args)
    installed = store.fetch_from_dir(Path(args.source), cards) if args.source else store.download(cards)
    for card in cards:
        warn = "" if card.commercial_use else "  (NOT for commercial use)"
        if card.derived:
            print(
                f"{card.name}: made here from {card.derived.get('from')}: `gatematch models quantize`{warn}"
            )
            continue
        note = "installed" if card.name in installed else "already present"
        print(f"{card.name}: {note}, sha256 verified{warn}")
    return 0


def _quantize(args: argparse.Namespace) -> int:
    from gatematch.errors import ModelError
    from gatematch.quantize import derived_cards, quantize

    store = ModelStore(args.model_dir)
    cards = [card for card in _selected(args) if card.derived] if args.pack else derived_cards()
    if args.model:
        cards = [card for card in derived_cards() if card.name in args.model]
        unknown = sorted(set(args.model) - {card.name for card in cards})
        if unknown:
            raise ModelError(f"no model made here is called {', '.join(unknown)}")
    for card in cards:
        if store.status(card).verified:
            print(f"{card.name}: already made, sha256 verified")
            continue
        digest = quantize(card, store, args.faces)
        folders = ", ".join(card.derived["calibration"])
        print(
            f"{card.name}: made from {card.derived['from']} (calibrated on {folders}), sha256 {digest} verified"
        )
    return 0


def _verify(args: argparse.Namespace) -> int:
    store = ModelStore(args.model_dir)
    problems = 0
    for card in _selected(args):
        status = store.status(card)
        if card.derived and not status.present:
            print(f"{card.name}: not made (optional: `gatematch models quantize`)")
            continue
        if not status.verified:
            problems += 1
            print(f"{card.name}: {status.problem} ({status.path})")
    if problems:
        print(f"{problems} model(s) failed verification")
        return 1
    print("all models present and verified")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    models = commands.add_parser("models", help="install, list and verify the pinned model files")
    actions = models.add_subparsers(dest="models_command", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    add_model_dir_option(common)
    common.add_argument("--pack", help="only the models of this pack")
    listing = actions.add_parser("list", parents=[common], help="each model with its license and state")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_list)
    fetch = actions.add_parser("fetch", parents=[common], help="install models, verifying sha256")
    fetch.add_argument(
        "--from",
        dest="source",
        metavar="DIR",
        help="install from a local folder (offline / air-gapped) instead of downloading",
    )
    fetch.set_defaults(handler=_fetch)
    verify = actions.add_parser(
        "verify", parents=[common], help="exit non-zero if any model is missing or altered"
    )
    verify.set_defaults(handler=_verify)
    make = actions.add_parser(
        "quantize",
        parents=[common],
        help="make the int8 models (cards with [derived]) from their sources, calibrated on photos",
    )
    make.add_argument(
        "--faces", type=Path, default=Path("../shared/faces"), help="the photo root the cards name folders of"
    )
    make.add_argument("--model", action="append", help="only this model (repeatable)")
    make.set_defaults(handler=_quantize)
