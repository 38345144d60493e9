"""What several commands share: JSON output, the model-store option, service client options, exit codes."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

import grpc

EXIT_BAD_INPUT = 2  # a one-line message on stderr: bad input, refused call, missing model
DEFAULT_TARGET = "127.0.0.1:50051"

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


def add_client_options(parser: argparse.ArgumentParser) -> None:
    """Where the service is and how to prove who we are (TLS, mutual TLS, bearer token)."""
    parser.add_argument(
        "--target", default=DEFAULT_TARGET, help=f"service address (default {DEFAULT_TARGET})"
    )
    parser.add_argument("--ca", default="", help="CA certificate (PEM) to verify the server: enables TLS")
    parser.add_argument("--cert", default="", help="client certificate (PEM) for mutual TLS")
    parser.add_argument("--key", default="", help="client private key (PEM) for mutual TLS")
    parser.add_argument(
        "--token", default="", help="bearer token, when the policy identifies clients by token"
    )


def rpc_command(handler: Handler) -> Handler:
    """A refused call as one line and exit code 2, like every other gatematch error."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except grpc.RpcError as exc:
            print(f"gatematch: error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return EXIT_BAD_INPUT

    return run
