"""Clients of the gatematch service: channels, credentials, and the messages gate cameras, checkpoints and
gallery loaders send.

Used by the CLI (`camera`, `match`, `verify`, `load-gallery`, `update-gallery`, `gate`), the latency benchmark
and the end-to-end tests, so they all speak to the service the same way.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta
from pathlib import Path

import grpc

from gatematch.gallery import ARRIVAL, DEPARTURE
from gatematch.images import encode_jpeg
from gatematch.v1 import flight_pb2, gallery_pb2, match_pb2
from gatematch.video import read_frames

CHUNK_BYTES = 1024 * 1024  # photos per load message: far below the 16 MiB message limit
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


# gRPC shares one connection among channels to the same target unless told not to: a channel with this option
# has a connection of its own, as a separate gate camera would (per-client limits count connections)
OWN_CONNECTION = (("grpc.use_local_subchannel_pool", 1),)


def open_channel(
    target: str, ca: str = "", cert: str = "", key: str = "", options: tuple[tuple[str, object], ...] = ()
) -> grpc.Channel:
    """Plaintext without a CA file, TLS with one, mutual TLS when a client certificate is given too."""
    if not ca:
        return grpc.insecure_channel(target, options=options)
    from gatematch.service.security import channel_credentials

    return grpc.secure_channel(target, channel_credentials(ca, cert, key), options=options)


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


DIRECTIONS = {DEPARTURE: flight_pb2.DIRECTION_DEPARTURE, ARRIVAL: flight_pb2.DIRECTION_ARRIVAL}


def direction_value(direction: str | None) -> int:
    """The contract's Direction for "departure", "arrival" or None (either)."""
    return DIRECTIONS[direction] if direction else flight_pb2.DIRECTION_UNSPECIFIED


def load_requests(
    flight_id: str,
    departure: datetime,
    photos: Iterable[tuple[str, bytes]],
    retention: timedelta | None = None,
    chunk_bytes: int = CHUNK_BYTES,
    direction: str = DEPARTURE,
) -> Iterator[gallery_pb2.LoadGalleryRequest]:
    """The GalleryService.Load stream: header, photo chunks of at most about `chunk_bytes` each, commit.
    For an arrival, `departure` is the flight's scheduled arrival time."""
    header = gallery_pb2.GalleryHeader(flight_id=flight_id, direction=direction_value(direction))
    header.departure_utc.FromDatetime(departure)
    if retention is not None:
        header.retention.FromTimedelta(retention)
    yield gallery_pb2.LoadGalleryRequest(header=header)
    for kind, part in _photo_parts(photos, chunk_bytes):
        yield gallery_pb2.LoadGalleryRequest(**{kind: part})


def update_requests(
    flight_id: str,
    photos: Iterable[tuple[str, bytes]] = (),
    removals: Iterable[str] = (),
    *,
    flight_date: date | None = None,
    direction: str | None = None,
    reason: str = "",
    chunk_bytes: int = CHUNK_BYTES,
) -> Iterator[gallery_pb2.UpdateGalleryRequest]:
    """The GalleryService.Update stream (a delta): header with the removals, photo chunks of travelers added,
    commit."""
    header = gallery_pb2.UpdateHeader(
        flight_id=flight_id,
        flight_date=flight_date.isoformat() if flight_date else "",
        direction=direction_value(direction),
        remove=list(removals),
        reason=reason,
    )
    yield gallery_pb2.UpdateGalleryRequest(header=header)
    for kind, part in _photo_parts(photos, chunk_bytes):
        yield gallery_pb2.UpdateGalleryRequest(**{kind: part})


def _photo_parts(
    photos: Iterable[tuple[str, bytes]], chunk_bytes: int
) -> Iterator[tuple[str, gallery_pb2.PhotoChunk | gallery_pb2.LoadCommit]]:
    """("photos", chunk)... then ("commit", counts): what a load and an update send after their header."""
    chunk, size, count = [], 0, 0
    for traveler_id, data in photos:
        if chunk and size + len(data) > chunk_bytes:
            yield "photos", gallery_pb2.PhotoChunk(photos=chunk)
            chunk, size = [], 0
        chunk.append(gallery_pb2.EnrollmentPhoto(traveler_id=traveler_id, image=data))
        size += len(data)
        count += 1
    if chunk:
        yield "photos", gallery_pb2.PhotoChunk(photos=chunk)
    yield "commit", gallery_pb2.LoadCommit(photo_count=count)


def make_frame(
    camera: str,
    gate: str,
    flight: str,
    sequence: int,
    encoded: bytes,
    flight_date: date | None = None,
    direction: str | None = None,
) -> match_pb2.Frame:
    frame = match_pb2.Frame(
        camera_id=camera,
        gate_id=gate,
        flight_id=flight,
        sequence=sequence,
        flight_date=flight_date.isoformat() if flight_date else "",
        direction=direction_value(direction),
    )
    frame.captured_at.GetCurrentTime()
    frame.image.encoded = encoded
    return frame


def camera_frames(
    video: Path,
    camera: str,
    gate: str,
    flight: str,
    fps: float | None = None,
    seconds: float | None = None,
    realtime: bool = True,
    flight_date: date | None = None,
    direction: str | None = None,
) -> Iterator[match_pb2.Frame]:
    """A video as a gate camera sends it: JPEG frames numbered from 1, paced at `fps` (default the video's)."""
    from gatematch.video import native_fps

    rate = min(fps or native_fps(video), native_fps(video))
    start = time.monotonic()
    for sent, image in enumerate(read_frames(video, fps, seconds)):
        if realtime:
            time.sleep(max(start + sent / rate - time.monotonic(), 0.0))
        yield make_frame(camera, gate, flight, sent + 1, encode_jpeg(image), flight_date, direction)


def verify_stream_requests(
    frames: Iterable[match_pb2.Frame], photo: bytes = b"", template: match_pb2.ReferenceTemplate | None = None
) -> Iterator[match_pb2.VerifyStreamRequest]:
    """The MatchService.StreamVerify stream: the reference (a photo, or a template), then the frames."""
    reference = match_pb2.VerifyReference(template=template) if template else match_pb2.VerifyReference()
    if template is None:
        reference.photo.encoded = photo
    yield match_pb2.VerifyStreamRequest(reference=reference)
    for frame in frames:
        yield match_pb2.VerifyStreamRequest(frame=frame)


def code_name(code: int) -> str:
    return next((c.name for c in grpc.StatusCode if c.value[0] == code), str(code))
