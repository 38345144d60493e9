"""`gatematch serve`, and the clients: `camera` (a video streamed like a gate camera), `match` (one frame),
`load-gallery` (a folder of enrollment photos, one sub-folder per traveler)."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc

from gatematch.cli.options import add_client_options, rpc_command
from gatematch.client import (
    call_metadata,
    camera_frames,
    code_name,
    folder_photos,
    load_requests,
    make_frame,
    open_channel,
)
from gatematch.v1 import match_pb2


def describe(event: match_pb2.StreamEvent) -> str | None:
    """One line for a decision or a frame error; None for ordinary observations."""
    if event.WhichOneof("event") == "decision":
        d = event.decision
        who = ""
        if d.candidates:
            top = d.candidates[0]
            who = f" {top.traveler_id} score {top.score:.3f} confidence {top.confidence:.4f}"
        name = match_pb2.Decision.Name(d.decision).removeprefix("DECISION_")
        return (
            f"encounter {d.encounter_id}: {name}{who} after {d.elapsed_ms:.0f} ms "
            f"(frames {d.first_sequence}-{d.last_sequence}, {d.frames_used} fused, {d.dropped_frames} dropped)"
        )
    obs = event.observation
    if obs.HasField("error"):
        return f"frame {obs.sequence}: {code_name(obs.error.code)}: {obs.error.message}"
    return None


# -- commands ------------------------------------------------------------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    from gatematch.service.config import load_config
    from gatematch.service.server import GateMatchServer, configure_logging, serve_forever

    configure_logging()
    serve_forever(GateMatchServer(load_config(args.config)))
    return 0


def _channel(args: argparse.Namespace) -> grpc.Channel:
    return open_channel(args.target, args.ca, args.cert, args.key)


def _camera(args: argparse.Namespace) -> int:
    from gatematch.v1 import match_pb2_grpc

    frames = camera_frames(
        args.video, args.camera or args.gate, args.gate, args.flight, args.fps, args.seconds
    )
    with _channel(args) as channel:
        stub = match_pb2_grpc.MatchServiceStub(channel)
        for event in stub.StreamMatch(frames, metadata=call_metadata(args.token)):
            line = describe(event)
            if line:
                print(line, flush=True)
    return 0


def _match(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToJson

    from gatematch.v1 import match_pb2, match_pb2_grpc

    frame = make_frame(args.camera or args.gate, args.gate, args.flight, 1, args.image.read_bytes())
    with _channel(args) as channel:
        response = match_pb2_grpc.MatchServiceStub(channel).Match(
            match_pb2.MatchRequest(frame=frame), metadata=call_metadata(args.token), timeout=args.timeout
        )
    print(MessageToJson(response, indent=2))
    return 0 if response.decision == match_pb2.DECISION_MATCH else 1


def _load_gallery(args: argparse.Namespace) -> int:
    from google.protobuf.json_format import MessageToJson

    from gatematch.v1 import gallery_pb2_grpc

    departure = args.departure or datetime.now(UTC) + timedelta(hours=2)
    with _channel(args) as channel:
        response = gallery_pb2_grpc.GalleryServiceStub(channel).Load(
            load_requests(args.flight, departure, folder_photos(args.folder)),
            metadata=call_metadata(args.token),
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
    add_client_options(camera)
    camera.set_defaults(handler=rpc_command(_camera))

    match = commands.add_parser("match", help="match one image against a flight's gallery")
    match.add_argument("image", type=Path)
    match.add_argument("--flight", required=True)
    match.add_argument("--gate", default="cli")
    match.add_argument("--camera", default="")
    match.add_argument("--timeout", type=float, default=10.0)
    add_client_options(match)
    match.set_defaults(handler=rpc_command(_match))

    load = commands.add_parser("load-gallery", help="load a flight gallery from FOLDER/<traveler>/<photos>")
    load.add_argument("folder", type=Path)
    load.add_argument("--flight", required=True)
    load.add_argument(
        "--departure", type=datetime.fromisoformat, default=None, help="ISO time with zone (default: in 2 h)"
    )
    add_client_options(load)
    load.set_defaults(handler=rpc_command(_load_gallery))
