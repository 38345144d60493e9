"""`gatematch gate assign|release|list`: run-time gate assignments through the service's GateService.

An assignment lets the gate's cameras match the flight from its start to its end (at most 24 h); `--replace`
makes it a reassignment (the gate's other assignments overlapping the window end first). The service's policy
file says who may (the gate-admin role, within the client's flight scope); every change is audited.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

from gatematch.cli.options import add_client_options, print_json_line, rpc_command
from gatematch.client import call_metadata, open_channel
from gatematch.gallery import iso
from gatematch.v1 import gate_pb2


def _moment(text: str) -> datetime:
    """argparse type: an ISO 8601 time with a UTC offset."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r} has no UTC offset; write it in UTC, e.g. {text}Z")
    return moment


def _hours(text: str) -> float:
    try:
        hours = float(text)
    except ValueError:
        hours = 0.0
    if not 0 < hours <= 24:
        raise argparse.ArgumentTypeError(f"must be a number of hours in (0, 24], got {text!r}")
    return hours


def _stub(args: argparse.Namespace):
    from gatematch.v1 import gate_pb2_grpc

    channel = open_channel(args.target, args.ca, args.cert, args.key)
    return channel, gate_pb2_grpc.GateServiceStub(channel)


def _line(a: gate_pb2.GateAssignment) -> str:
    window = f"{iso(a.starts_at.ToDatetime(UTC))} to {iso(a.ends_at.ToDatetime(UTC))}"
    released = f", released by {a.released_by}" if a.HasField("released_at") else ""
    return f"assignment {a.assignment_id}: gate {a.gate_id} -> {a.flight_id}, {window} (by {a.assigned_by}{released})"


def _assign(args: argparse.Namespace) -> int:
    starts = args.start or datetime.now(UTC)
    ends = args.until or starts + timedelta(hours=args.hours)
    request = gate_pb2.AssignGateRequest(
        gate_id=args.gate, flight_id=args.flight, replace=args.replace, reason=args.reason
    )
    if args.start:
        request.starts_at.FromDatetime(starts)
    request.ends_at.FromDatetime(ends)
    channel, stub = _stub(args)
    with channel:
        response = stub.Assign(request, metadata=call_metadata(args.token), timeout=args.timeout)
    if args.json:
        print_json_line(response)
        return 0
    for released in response.released:
        print("released " + _line(released))
    print("assigned " + _line(response.assignment))
    return 0


def _release(args: argparse.Namespace) -> int:
    channel, stub = _stub(args)
    with channel:
        released = stub.Release(
            gate_pb2.ReleaseGateRequest(assignment_id=args.assignment, reason=args.reason),
            metadata=call_metadata(args.token),
            timeout=args.timeout,
        )
    if args.json:
        print_json_line(released)
    else:
        print("released " + _line(released))
    return 0


def _list(args: argparse.Namespace) -> int:
    channel, stub = _stub(args)
    with channel:
        response = stub.List(
            gate_pb2.ListGateAssignmentsRequest(gate_id=args.gate or ""),
            metadata=call_metadata(args.token),
            timeout=args.timeout,
        )
    for assignment in response.assignments:
        if args.json:
            print_json_line(assignment)
        else:
            print(_line(assignment))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    gate = commands.add_parser("gate", help="assign gates to flights at run time, release them, list them")
    actions = gate.add_subparsers(dest="gate_command", required=True, metavar="ACTION")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="one JSON object per line")
    common.add_argument("--timeout", type=float, default=10.0)
    add_client_options(common)

    assign = actions.add_parser(
        "assign", parents=[common], help="let a gate's cameras match a flight for a while"
    )
    assign.add_argument("gate")
    assign.add_argument("flight")
    assign.add_argument(
        "--from", dest="start", type=_moment, default=None, help="start, ISO time (default: now)"
    )
    window = assign.add_mutually_exclusive_group(required=True)
    window.add_argument("--until", type=_moment, default=None, help="end, ISO time")
    window.add_argument("--hours", type=_hours, default=None, help="end this many hours after the start")
    assign.add_argument(
        "--replace",
        action="store_true",
        help="a reassignment: end the gate's other assignments in this window",
    )
    assign.add_argument("--reason", default="", help="recorded in the audit log")
    assign.set_defaults(handler=rpc_command(_assign))

    release = actions.add_parser("release", parents=[common], help="end an assignment now")
    release.add_argument("assignment", type=int, help="assignment id (from `assign` or `list`)")
    release.add_argument("--reason", default="", help="recorded in the audit log")
    release.set_defaults(handler=rpc_command(_release))

    listing = actions.add_parser("list", parents=[common], help="assignments in force now or to come")
    listing.add_argument("--gate", default=None)
    listing.set_defaults(handler=rpc_command(_list))
