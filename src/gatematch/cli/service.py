"""`gatematch serve`, and the clients: `camera` (a video streamed like a gate camera), `match` (one frame),
`verify` (one frame against a reference photo, 1:1), `load-gallery` (a folder of enrollment photos, one
sub-folder per traveler) and `update-gallery` (a delta: travelers added from such a folder, others removed).

`camera`, `match` and `verify` print for people, or with `--json` one JSON object per line for programs, and
exit 0 on a MATCH, 1 on any other answer, 2 on an error (gatematch.cli.options).
"""

from __future__ import annotations

import argparse
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc

from gatematch.cli.options import (
    EXIT_BAD_INPUT,
    EXIT_MATCH,
    EXIT_NO_MATCH,
    add_client_options,
    add_flight_options,
    print_json_line,
    rpc_command,
)
from gatematch.client import (
    call_metadata,
    camera_frames,
    code_name,
    folder_photos,
    load_requests,
    make_frame,
    open_channel,
    update_requests,
)
from gatematch.errors import BadImageError, GatematchError, ManifestError
from gatematch.gallery import DIRECTIONS
from gatematch.v1 import match_pb2


def decision_name(value: int) -> str:
    return match_pb2.Decision.Name(value).removeprefix("DECISION_")


def describe(event: match_pb2.StreamEvent) -> str | None:
    """One line for a decision or a frame error; None for ordinary observations."""
    if event.WhichOneof("event") == "decision":
        d = event.decision
        who = ""
        if d.candidates:
            top = d.candidates[0]
            who = f" {top.traveler_id} score {top.score:.3f} confidence {top.confidence:.4f}"
        return (
            f"encounter {d.encounter_id}: {decision_name(d.decision)}{who} after {d.elapsed_ms:.0f} ms "
            f"(frames {d.first_sequence}-{d.last_sequence}, {d.frames_used} fused, {d.dropped_frames} dropped)"
        )
    obs = event.observation
    if obs.HasField("error"):
        return f"frame {obs.sequence}: {code_name(obs.error.code)}: {obs.error.message}"
    return None


def read_image(path: Path, what: str = "image") -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BadImageError(f"cannot read {what} {path}: {exc.strerror or exc}") from None


# -- commands ------------------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from gatematch.service.config import load_config
    from gatematch.service.server import GateMatchServer, configure_logging, serve_forever

    configure_logging()  # from here stderr is the JSON log: why the service cannot start is a record in it
    try:
        serve_forever(GateMatchServer(load_config(args.config)))
    except GatematchError as exc:
        logging.getLogger("gatematch.serve").error(
            "the service cannot start", extra={"error": exc.describe()}
        )
        return 2
    return 0


def _channel(args: argparse.Namespace) -> grpc.Channel:
    return open_channel(args.target, args.ca, args.cert, args.key)


def _camera(args: argparse.Namespace) -> int:
    """Exit 0 when an encounter was decided MATCH; 2 when every frame came back with an error (nothing could
    be matched: an unknown or ambiguous flight, ...); 1 otherwise."""
    from gatematch.v1 import match_pb2_grpc

    frames = camera_frames(
        args.video,
        args.camera or args.gate,
        args.gate,
        args.flight,
        args.fps,
        args.seconds,
        flight_date=args.date,
        direction=args.direction,
    )
    matched, answered, failed = False, 0, 0
    with _channel(args) as channel:
        stub = match_pb2_grpc.MatchServiceStub(channel)
        for event in stub.StreamMatch(frames, metadata=call_metadata(args.token)):
            if event.WhichOneof("event") == "decision":
                matched |= event.decision.decision == match_pb2.DECISION_MATCH
            else:
                answered += 1
                failed += event.observation.HasField("error")
            if args.json:
                print_json_line(event)
                continue
            line = describe(event)
            if line:
                print(line, flush=True)
    if matched:
        return EXIT_MATCH
    return EXIT_BAD_INPUT if answered and failed == answered else EXIT_NO_MATCH


def _match(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToJson

    from gatematch.v1 import match_pb2_grpc

    image = read_image(args.image)
    frame = make_frame(args.camera or args.gate, args.gate, args.flight, 1, image, args.date, args.direction)
    with _channel(args) as channel:
        response = match_pb2_grpc.MatchServiceStub(channel).Match(
            match_pb2.MatchRequest(frame=frame), metadata=call_metadata(args.token), timeout=args.timeout
        )
    if args.json:
        print_json_line(response)
    else:
        print(MessageToJson(response, indent=2))
    return EXIT_MATCH if response.decision == match_pb2.DECISION_MATCH else EXIT_NO_MATCH


def _verify(args: argparse.Namespace) -> int:
    from gatematch.v1 import match_pb2_grpc

    frame = make_frame(args.camera or args.gate, args.gate, "", 1, read_image(args.image))
    reference = match_pb2.Image(encoded=read_image(args.reference, "reference photo"))
    with _channel(args) as channel:
        response = match_pb2_grpc.MatchServiceStub(channel).Verify(
            match_pb2.VerifyRequest(frame=frame, reference_photo=reference),
            metadata=call_metadata(args.token),
            timeout=args.timeout,
        )
    if args.json:
        print_json_line(response)
    elif response.false_match_rate < 1.0:
        print(
            f"{decision_name(response.decision)}: score {response.score:.4f}, 1:1 false-match rate "
            f"{response.false_match_rate:.2g} (MATCH at {response.threshold:.4f}, FMR {response.target_fmr:g})"
        )
    else:
        reasons = f" ({'; '.join(response.quality_reasons)})" if response.quality_reasons else ""
        print(f"{decision_name(response.decision)}{reasons}")
    return EXIT_MATCH if response.decision == match_pb2.DECISION_MATCH else EXIT_NO_MATCH


def _load_gallery(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToJson

    from gatematch.v1 import gallery_pb2_grpc

    departure = args.departure or datetime.now(UTC) + timedelta(hours=2)
    with _channel(args) as channel:
        response = gallery_pb2_grpc.GalleryServiceStub(channel).Load(
            load_requests(args.flight, departure, folder_photos(args.folder), direction=args.direction),
            metadata=call_metadata(args.token),
        )
    print(MessageToJson(response, indent=2))
    return 0


def _update_gallery(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToJson

    from gatematch.v1 import gallery_pb2_grpc

    photos = folder_photos(args.add) if args.add else []
    if not photos and not args.remove:
        raise ManifestError("nothing to change: give --add FOLDER (with photos) or --remove TRAVELER")
    requests = update_requests(
        args.flight,
        photos,
        args.remove,
        flight_date=args.date,
        direction=args.direction,
        reason=args.reason,
    )
    with _channel(args) as channel:
        response = gallery_pb2_grpc.GalleryServiceStub(channel).Update(
            requests, metadata=call_metadata(args.token)
        )
    print(MessageToJson(response, indent=2))
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    serve = commands.add_parser("serve", help="run the gate matching service (gRPC)")
    serve.add_argument("--config", type=Path, default=None, help="TOML config (default: embedded defaults)")
    serve.set_defaults(handler=_serve)

    camera = commands.add_parser("camera", help="stream a video to the service like a gate camera")
    camera.add_argument("--video", type=Path, required=True)
    camera.add_argument("--flight", required=True)
    camera.add_argument("--gate", required=True)
    camera.add_argument("--camera", default="", help="camera id (default: the gate id)")
    camera.add_argument("--fps", type=float, default=None, help="send rate (default: the video's own)")
    camera.add_argument("--seconds", type=float, default=None, help="stop after this much video")
    add_flight_options(camera)
    camera.add_argument("--json", action="store_true", help="every event as one JSON object per line")
    add_client_options(camera)
    camera.set_defaults(handler=rpc_command(_camera))

    match = commands.add_parser("match", help="match one image against a flight's gallery")
    match.add_argument("image", type=Path)
    match.add_argument("--flight", required=True)
    match.add_argument("--gate", default="cli")
    match.add_argument("--camera", default="")
    match.add_argument("--timeout", type=float, default=10.0)
    add_flight_options(match)
    match.add_argument("--json", action="store_true", help="the answer as one JSON object on one line")
    add_client_options(match)
    match.set_defaults(handler=rpc_command(_match))

    verify = commands.add_parser(
        "verify", help="1:1: is the person in IMAGE the person of the reference photo?"
    )
    verify.add_argument("image", type=Path, help="the live frame")
    verify.add_argument(
        "--reference", type=Path, required=True, help="reference photo (e.g. from a passport chip)"
    )
    verify.add_argument("--gate", default="cli")
    verify.add_argument("--camera", default="")
    verify.add_argument("--timeout", type=float, default=10.0)
    verify.add_argument("--json", action="store_true", help="the answer as one JSON object on one line")
    add_client_options(verify)
    verify.set_defaults(handler=rpc_command(_verify))

    load = commands.add_parser("load-gallery", help="load a flight gallery from FOLDER/<traveler>/<photos>")
    load.add_argument("folder", type=Path)
    load.add_argument("--flight", required=True)
    load.add_argument(
        "--departure",
        type=datetime.fromisoformat,
        default=None,
        help="scheduled time, ISO with zone (the arrival time for --direction arrival; default: in 2 h)",
    )
    load.add_argument("--direction", choices=DIRECTIONS, default=DIRECTIONS[0])
    add_client_options(load)
    load.set_defaults(handler=rpc_command(_load_gallery))

    update = commands.add_parser(
        "update-gallery", help="a delta: add travelers from FOLDER/<traveler>/<photos>, remove others"
    )
    update.add_argument("--flight", required=True)
    add_flight_options(update)
    update.add_argument(
        "--add", type=Path, default=None, help="FOLDER/<traveler>/<photos> of travelers to add"
    )
    update.add_argument("--remove", nargs="+", default=[], metavar="TRAVELER", help="traveler ids to remove")
    update.add_argument("--reason", default="", help="recorded in the audit log")
    add_client_options(update)
    update.set_defaults(handler=rpc_command(_update_gallery))
