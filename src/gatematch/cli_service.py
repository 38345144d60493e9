"""`gatematch serve`, and the clients: `camera` (a video streamed like a gate camera), `match` (one frame),
`load-gallery` (a folder of enrollment photos, one sub-folder per traveler)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc

DEFAULT_TARGET = "127.0.0.1:50051"
CHUNK_BYTES = 1024 * 1024  # photos per load message: far below the 16 MiB message limit
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


# -- client helpers (also used by the end-to-end tests) ------------------------------------------------------


def open_channel(target: str, ca: str = "", cert: str = "", key: str = "") -> grpc.Channel:
    """Plaintext without a CA file, TLS with one, mutual TLS when a client certificate is given too."""
    if not ca:
        return grpc.insecure_channel(target)
    from gatematch.service.security import channel_credentials

    return grpc.secure_channel(target, channel_credentials(ca, cert, key))


def call_metadata(token: str = "") -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


def folder_photos(folder: Path) -> list[tuple[str, bytes]]:
    """(traveler id, photo bytes) for every photo of every traveler sub-folder, in name order."""
    return [
        (person.name, photo.read_bytes())
        for person in sorted(p for p in Path(folder).iterdir() if p.is_dir())
        for photo in sorted(person.iterdir())
        if photo.suffix.lower() in PHOTO_SUFFIXES
    ]


def load_requests(
    flight_id: str,
    departure: datetime,
    photos: Iterable[tuple[str, bytes]],
    retention: timedelta | None = None,
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator:
    """The GalleryService.Load stream: header, photo chunks of at most about `chunk_bytes` each, commit."""
    from gatematch.v1 import gallery_pb2

    header = gallery_pb2.GalleryHeader(flight_id=flight_id)
    header.departure_utc.FromDatetime(departure)
    if retention is not None:
        header.retention.FromTimedelta(retention)
    yield gallery_pb2.LoadGalleryRequest(header=header)
    chunk, size, count = [], 0, 0
    for traveler_id, data in photos:
        if chunk and size + len(data) > chunk_bytes:
            yield gallery_pb2.LoadGalleryRequest(photos=gallery_pb2.PhotoChunk(photos=chunk))
            chunk, size = [], 0
        chunk.append(gallery_pb2.EnrollmentPhoto(traveler_id=traveler_id, image=data))
        size += len(data)
        count += 1
    if chunk:
        yield gallery_pb2.LoadGalleryRequest(photos=gallery_pb2.PhotoChunk(photos=chunk))
    yield gallery_pb2.LoadGalleryRequest(commit=gallery_pb2.LoadCommit(photo_count=count))


def make_frame(camera: str, gate: str, flight: str, sequence: int, encoded: bytes):
    from gatematch.v1 import match_pb2

    frame = match_pb2.Frame(camera_id=camera, gate_id=gate, flight_id=flight, sequence=sequence)
    frame.captured_at.GetCurrentTime()
    frame.image.encoded = encoded
    return frame


def video_frames(
    video: Path,
    camera: str,
    gate: str,
    flight: str,
    fps: float | None = None,
    seconds: float | None = None,
    realtime: bool = True,
) -> Iterator:
    """Frames of a video file as a gate camera would send them: JPEG, paced at the video's rate (or `fps`)."""
    import cv2

    from gatematch.errors import BadImageError

    capture = cv2.VideoCapture(str(video))
    if not capture.isOpened():
        raise BadImageError(f"cannot open video {video}")
    native = capture.get(cv2.CAP_PROP_FPS) or 25.0
    rate = min(fps or native, native)
    step = native / rate  # source frames per sent frame
    start = time.monotonic()
    try:
        index, sent, next_source = 0, 0, 0.0
        while seconds is None or index / native < seconds:
            ok, image = capture.read()
            if not ok:
                break
            index += 1
            if index - 1 < next_source:
                continue
            next_source += step
            if realtime:
                time.sleep(max(start + sent / rate - time.monotonic(), 0.0))
            ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            sent += 1
            yield make_frame(camera, gate, flight, sent, encoded.tobytes())
    finally:
        capture.release()


def code_name(code: int) -> str:
    return next((c.name for c in grpc.StatusCode if c.value[0] == code), str(code))


def _rpc(handler: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """A refused call as one line and exit code 2, like every other gatematch error."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except grpc.RpcError as exc:
            print(f"gatematch: error: {exc.code().name}: {exc.details()}", file=sys.stderr)
            return 2

    return run


def describe(event) -> str | None:
    """One line for a decision or a frame error; None for ordinary observations."""
    from gatematch.v1 import match_pb2

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

    frames = video_frames(
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


def _client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--target", default=DEFAULT_TARGET, help=f"service address (default {DEFAULT_TARGET})"
    )
    parser.add_argument("--ca", default="", help="CA certificate (PEM) to verify the server: enables TLS")
    parser.add_argument("--cert", default="", help="client certificate (PEM) for mutual TLS")
    parser.add_argument("--key", default="", help="client private key (PEM) for mutual TLS")
    parser.add_argument(
        "--token", default="", help="bearer token, when the policy identifies clients by token"
    )


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
    _client_options(camera)
    camera.set_defaults(handler=_rpc(_camera))

    match = commands.add_parser("match", help="match one image against a flight's gallery")
    match.add_argument("image", type=Path)
    match.add_argument("--flight", required=True)
    match.add_argument("--gate", default="cli")
    match.add_argument("--camera", default="")
    match.add_argument("--timeout", type=float, default=10.0)
    _client_options(match)
    match.set_defaults(handler=_rpc(_match))

    load = commands.add_parser("load-gallery", help="load a flight gallery from FOLDER/<traveler>/<photos>")
    load.add_argument("folder", type=Path)
    load.add_argument("--flight", required=True)
    load.add_argument(
        "--departure", type=datetime.fromisoformat, default=None, help="ISO time with zone (default: in 2 h)"
    )
    _client_options(load)
    load.set_defaults(handler=_rpc(_load_gallery))
