"""One enrollment path: `gatematch gallery build` (photos named by a manifest) and the service's Load (the same
photos streamed by a client) judge every photo alike and give the gallery the same content hash."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from gatematch.client import load_requests, open_channel
from gatematch.facepipeline import FacePipeline, PipelineConfig
from gatematch.gallery_store import open_store
from gatematch.gallery_tools.build import build_gallery
from gatematch.gallery_tools.manifest import load_manifest
from gatematch.quality import QualityThresholds
from gatematch.v1 import gallery_pb2_grpc
from support.server import calibration_for, service_config, start_server

PEOPLE = ("obama", "biden", "kit_harington")  # each enrolls with the first photo of their folder


def test_build_and_service_load_enroll_alike(tmp_path: Path, model_store, faces_dir, examples) -> None:
    photos = {who: next(p for p in sorted((examples / who).iterdir()) if p.is_file()) for who in PEOPLE}
    departure = (datetime.now(UTC) + timedelta(hours=3)).replace(second=0, microsecond=0)
    stamp = departure.strftime("%Y-%m-%dT%H:%M:%SZ")
    manifest = tmp_path / "GM900.csv"
    manifest.write_text(
        "flight_id,departure,traveler_id,photos,document_type\n"
        + "".join(f"GM900,{stamp},{who},{photo.as_uri()},\n" for who, photo in photos.items()),
        encoding="utf-8",
    )
    enroller = FacePipeline.from_pack(
        "default", store=model_store, config=PipelineConfig(quality=QualityThresholds.enrollment())
    )
    built = build_gallery(
        load_manifest(manifest, examples), open_store(tmp_path / "built"), enroller, progress=False
    )

    config = service_config(tmp_path / "service")
    server, _ = start_server(config, model_store, calibration_for(enroller, faces_dir))
    try:
        with open_channel(f"127.0.0.1:{server.port}") as channel:
            sent = [(who, photo.read_bytes()) for who, photo in photos.items()]
            gallery_pb2_grpc.GalleryServiceStub(channel).Load(
                load_requests("GM900", departure, sent), timeout=120
            )
        store = server.ready()[0].store
        loaded = store.info(built.info.gallery_id)
        assert loaded.content_hash == built.info.content_hash, "one content-hash rule"
        assert (loaded.travelers, loaded.templates, loaded.failed_travelers) == (
            built.info.travelers,
            built.info.templates,
            built.info.failed_travelers,
        )
        assert sorted(f.reason for f in store.failures(loaded.gallery_id)) == sorted(
            f.reason for f in built.failures
        )
        ours = store.load(loaded.gallery_id).vectors()
        theirs = open_store(tmp_path / "built").load(built.info.gallery_id).vectors()
        assert abs(ours - theirs).max() < 1e-4, "the same templates"
    finally:
        server.stop(1.0)
