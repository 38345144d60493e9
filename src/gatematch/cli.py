"""`gatematch` command line.

Every subcommand lives next to the code it drives and registers itself here; this module only dispatches and
turns domain errors into a one-line message with exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from gatematch.errors import GatematchError

EXIT_BAD_INPUT = 2

Handler = Callable[[argparse.Namespace], int]


def print_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def add_model_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=None,
        help="model store (default: $GATEMATCH_MODEL_DIR or the per-user cache)",
    )


def build_parser() -> argparse.ArgumentParser:
    from gatematch import cli_faces, cli_models, cli_service
    from gatematch.benchmarks import cli as cli_bench
    from gatematch.gallery_tools import cli as cli_gallery

    parser = argparse.ArgumentParser(
        prog="gatematch", description="gatematch: face matching for departure gates."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (cli_models, cli_faces, cli_gallery, cli_service, cli_bench):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except GatematchError as exc:
        print(f"gatematch: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`gatematch ... | head`): not an error of ours; keep Python from
        # complaining again when it flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
