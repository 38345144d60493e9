"""`gatematch` command line: builds the parser from every command's `register`, then dispatches.

Domain errors become a one-line message with exit code 2, never a traceback. Process-wide settings are made
here, where the process starts, not when a module is imported.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from gatematch.cli.options import EXIT_BAD_INPUT, Handler
from gatematch.errors import GatematchError
from gatematch.process import configure_process


def build_parser() -> argparse.ArgumentParser:
    from gatematch.benchmarks import cli as bench
    from gatematch.cli import audit, faces, gates, keys, models, service
    from gatematch.gallery_tools import cli as gallery

    parser = argparse.ArgumentParser(
        prog="gatematch", description="gatematch: face matching for departure gates."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (models, faces, gallery, keys, audit, service, gates, bench):
        module.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    configure_process()
    try:
        return handler(args)
    except GatematchError as exc:
        print(f"gatematch: error: {exc.describe()}", file=sys.stderr)
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
