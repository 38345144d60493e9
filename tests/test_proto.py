"""The committed gRPC code is exactly what the .proto files generate, and the contract has what clients rely on."""

from __future__ import annotations

from pathlib import Path

from gatematch.service import protogen
from gatematch.v1 import gallery_pb2, gate_pb2, match_pb2, match_pb2_grpc


def test_committed_code_is_current(tmp_path: Path) -> None:
    fresh = {p.name: p.read_bytes() for p in protogen.generate(protogen.PROTO_ROOT, tmp_path)}
    committed = {p.name: p.read_bytes() for p in protogen.GENERATED.glob("*.py*")}
    assert sorted(fresh) == sorted(committed)
    assert [name for name in fresh if fresh[name] != committed[name]] == []
    assert protogen.stale_files() == []


def test_check_flags_an_edited_file(tmp_path: Path) -> None:
    generated = tmp_path / "v1"
    protogen.generate(protogen.PROTO_ROOT, generated)
    target = generated / "match_pb2.py"
    target.write_bytes(target.read_bytes() + b"# edited\n")
    (generated / "stray_pb2.py").write_text("")
    assert protogen.stale_files(protogen.PROTO_ROOT, generated) == ["match_pb2.py", "stray_pb2.py"]


def test_decisions_have_an_unspecified_zero() -> None:
    names = [v.name for v in match_pb2.Decision.DESCRIPTOR.values]
    assert match_pb2.Decision.Name(0) == "DECISION_UNSPECIFIED"
    assert names[1:] == [
        "DECISION_MATCH",
        "DECISION_NO_MATCH",
        "DECISION_NO_FACE",
        "DECISION_QUALITY_FAILED",
        "DECISION_MULTIPLE_FACES",
        "DECISION_LIVENESS_FAILED",
        "DECISION_BUDGET_EXCEEDED",
    ]


def test_frame_image_is_encoded_or_raw() -> None:
    frame = match_pb2.Frame(camera_id="cam", image=match_pb2.Image(encoded=b"\xff\xd8"))
    assert frame.image.WhichOneof("data") == "encoded"
    frame.image.raw.width = 4  # setting the other member clears the first
    assert frame.image.WhichOneof("data") == "raw"
    assert frame.image.encoded == b""
    parsed = match_pb2.Frame.FromString(frame.SerializeToString())
    assert parsed.image.raw.width == 4


def test_services_and_streaming_shapes() -> None:
    match = match_pb2.DESCRIPTOR.services_by_name["MatchService"].methods_by_name
    assert (match["Match"].client_streaming, match["Match"].server_streaming) == (False, False)
    assert (match["StreamMatch"].client_streaming, match["StreamMatch"].server_streaming) == (True, True)
    assert (match["Verify"].client_streaming, match["Verify"].server_streaming) == (False, False)
    assert (match["StreamVerify"].client_streaming, match["StreamVerify"].server_streaming) == (True, True)
    gallery = gallery_pb2.DESCRIPTOR.services_by_name["GalleryService"].methods_by_name
    assert sorted(gallery) == ["Delete", "Get", "List", "Load", "Update"]
    assert gallery["Load"].client_streaming and not gallery["Load"].server_streaming
    assert gallery["Update"].client_streaming and not gallery["Update"].server_streaming
    gates = gate_pb2.DESCRIPTOR.services_by_name["GateService"].methods_by_name
    assert sorted(gates) == ["Assign", "List", "Release"]
    assert hasattr(match_pb2_grpc, "add_MatchServiceServicer_to_server")


def test_existing_field_numbers_are_kept() -> None:
    """Clients built against earlier versions of the contract keep working: fields added, none renumbered."""
    frame = match_pb2.Frame.DESCRIPTOR.fields_by_name
    assert [
        frame[n].number for n in ("camera_id", "gate_id", "flight_id", "captured_at", "sequence", "image")
    ] == [
        1,
        2,
        3,
        4,
        5,
        6,
    ]
    assert (frame["flight_date"].number, frame["direction"].number) == (7, 8)
    info = gallery_pb2.GalleryInfo.DESCRIPTOR.fields_by_name
    assert (info["expired"].number, info["direction"].number, info["content_hash"].number) == (11, 12, 14)


def test_load_request_parts_are_exclusive() -> None:
    request = gallery_pb2.LoadGalleryRequest(header=gallery_pb2.GalleryHeader(flight_id="BA117"))
    request.templates.templates.add(traveler_id="t1", values=[0.6, 0.8])
    assert request.WhichOneof("part") == "templates"
    assert not request.HasField("header")
