"""What several commands share: JSON output, the model-store option, service client options, exit codes.

Exit codes of the clients that decide (`camera`, `match`, `verify`): EXIT_MATCH (0) a MATCH, EXIT_NO_MATCH (1)
an answer that is not a MATCH (NO_MATCH, NO_FACE, QUALITY_FAILED, ...), EXIT_BAD_INPUT (2) an error: bad input, a
refused or failed call, an unreachable service. With `--json` they print one JSON object per line (the
contract's messages with proto field names; an error as {"error": {"code", "message"}}).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path

import grpc
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from gatematch.errors import GatematchError
from gatematch.gallery import DIRECTIONS

EXIT_MATCH = 0  # the answer is a MATCH (and, for other commands, success)
EXIT_NO_MATCH = 1  # an answer that is not a MATCH
EXIT_BAD_INPUT = 2  # a one-line message on stderr: bad input, refused call, missing model
DEFAULT_TARGET = "127.0.0.1:50051"

Handler = Callable[[argparse.Namespace], int]


def print_json(data: object) -> None:
    json.dump(data, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")


def print_json_line(data: Message | dict) -> None:
    """One JSON object on one line (a contract message with its proto field names, every field present)."""
    if isinstance(data, Message):
        data = MessageToDict(
            data, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
    sys.stdout.write(json.dumps(data, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def flight_date(text: str) -> date:
    """argparse type: a flight's date, YYYY-MM-DD."""
    try:
        if len(text) != 10:
            raise ValueError
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a date is written YYYY-MM-DD, got {text!r}") from None


def add_flight_options(parser: argparse.ArgumentParser) -> None:
    """Which of a flight number's galleries: its date at the site and its direction (default: the one in service)."""
    parser.add_argument(
        "--date", type=flight_date, default=None, help="the flight's date, YYYY-MM-DD (local)"
    )
    parser.add_argument(
        "--direction", choices=DIRECTIONS, default=None, help="departure (exit) or arrival (entry)"
    )


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
    """A refused call as one line and exit code 2, like every other gatematch error (with `--json`, also as a
    JSON object on stdout, so a program reading the lines sees why they ended)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except grpc.RpcError as exc:
            code, message = exc.code().name, exc.details()
        except (
            GatematchError
        ) as exc:  # found before the call (an unreadable image, ...): as the server would say
            from gatematch.service.status import status_for

            status, message = status_for(exc)
            code = status.name
        print(f"gatematch: error: {code}: {message}", file=sys.stderr)
        if getattr(args, "json", False):
            print_json_line({"error": {"code": code, "message": message}})
        return EXIT_BAD_INPUT

    return run
