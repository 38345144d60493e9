"""Gallery deltas on real photos (../shared/faces/examples6), in the store and through `gatematch gallery
add|remove`: a late passenger is enrolled with only their own photo embedded and matched at once; a removed
no-show no longer matches; each change is a new version, encrypted like a full build, and audited."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
import pytest

from gatematch.cli.main import main
from gatematch.enrollment import Enrollment, EnrollmentPhoto
from gatematch.facepipeline import FacePipeline
from gatematch.gallery import ARRIVAL, OperatingPoint, load_default_calibration
from gatematch.gallery_delta import apply_delta, start_delta
from gatematch.gallery_store import TravelerRecord, open_store
from gatematch.modelstore import sha256_of
from gatematch.quality import QualityThresholds
from gatematch.service.audit import verify_log
from gatematch.template_crypto import ENV_TEMPLATE_KEY, TemplateKey, generate_key

BOARDING = {"obama": "obama/obama.jpg", "biden": "biden/biden.jpg", "rose_leslie": "rose_leslie/img1.jpg"}
LATE = ("alex_lacamoire", "alex_lacamoire/alex-lacamoire.png")


class Counted:
    """Counts the faces an embedder embeds (what a delta must not spend on the travelers it keeps)."""

    def __init__(self, pipeline: FacePipeline, monkeypatch: pytest.MonkeyPatch) -> None:
        self.faces = 0
        embed = pipeline.embedder.embed

        def counted(crops):
            self.faces += len(crops)
            return embed(crops)

        monkeypatch.setattr(pipeline.embedder, "embed", counted)


def photo(examples: Path, traveler: str, relative: str) -> tuple[EnrollmentPhoto, str]:
    path = examples / relative
    return EnrollmentPhoto(traveler, str(path), sha256_of(path)), str(path)


def who(store, gallery_id: str, pipeline: FacePipeline, image: Path) -> str | None:
    calibration = load_default_calibration(pipeline.pack.embedder.name)
    face = pipeline.analyze(str(image)).primary()
    gallery = store.load(gallery_id)
    found = gallery.search(face.embedding, gallery.info.embedder, calibration, point=OperatingPoint())
    return found.match.traveler_id if found.match else None


def test_a_late_passenger_is_enrolled_alone_and_a_no_show_removed(
    store_location: str, pipeline: FacePipeline, examples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(store_location, key=TemplateKey.from_base64(generate_key()))
    enroller = pipeline.with_quality(QualityThresholds.enrollment())
    departure = datetime.now(UTC) + timedelta(hours=3)
    boarding = Enrollment(enroller, "GM101", departure)
    boarding.add_photos([photo(examples, t, p) for t, p in BOARDING.items()])
    first = store.write(boarding.draft()).info
    assert (
        who(store, first.gallery_id, pipeline, examples / "alex_lacamoire/alex_lacamoire_test1.jpg") is None
    )

    counted = Counted(pipeline, monkeypatch)
    late = start_delta(store, first.gallery_id, enroller, batch_size=8)
    late.expect(TravelerRecord(LATE[0], "passport"))
    late.add_photos([photo(examples, *LATE)])
    added = apply_delta(store, first.gallery_id, late)
    assert counted.faces == 1, "only the late passenger's photo was embedded"
    assert added.added == (LATE[0],) and added.info.version == first.version + 1
    assert added.info.encrypted and added.info.expires_at == first.expires_at
    assert (
        who(store, first.gallery_id, pipeline, examples / "alex_lacamoire/alex_lacamoire_test1.jpg")
        == LATE[0]
    )

    removed = apply_delta(store, first.gallery_id, None, ["biden"])
    assert removed.info.version == first.version + 2 and removed.info.travelers == 3
    assert who(store, first.gallery_id, pipeline, examples / "biden/biden2.jpg") is None
    assert who(store, first.gallery_id, pipeline, examples / "obama/obama3.jpg") == "obama"
    assert len({first.content_hash, added.info.content_hash, removed.info.content_hash}) == 3
    assert [t.traveler_id for t in store.travelers(first.gallery_id)] == ["obama", "rose_leslie", LATE[0]]
    assert [t.document_type for t in store.travelers(first.gallery_id)][-1] == "passport"


def test_gallery_add_and_remove_from_the_command_line(
    tmp_path: Path, model_dir: Path, examples: Path, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    """An arrival's gallery built from a manifest, then changed by `gallery add|remove`, each audited."""
    monkeypatch.setenv("GATEMATCH_MODEL_DIR", str(model_dir))
    monkeypatch.setenv(ENV_TEMPLATE_KEY, generate_key())
    store = tmp_path / "store"
    (tmp_path / "service.toml").write_text(f'[audit]\npath = "{tmp_path / "audit.jsonl"}"\n')
    arrival = datetime.now(UTC) - timedelta(hours=1)
    rows = [f"{t},{examples / p},passport" for t, p in BOARDING.items()]
    manifest = tmp_path / "inbound.csv"
    manifest.write_text(
        "flight_id,departure,traveler_id,photos,document_type,direction\n"
        + "".join(f"GM101,{arrival:%Y-%m-%dT%H:%M:%SZ},{row},arrival\n" for row in rows)
    )

    config = ("--config", str(tmp_path / "service.toml"))

    def gallery(*argv: str) -> tuple[int, dict | str]:
        code = main(["gallery", *argv, "--store", str(store), *config])
        out = capsys.readouterr()
        try:
            return code, json.loads(out.out)
        except json.JSONDecodeError:
            return code, out.out + out.err

    code, built = gallery("build", str(manifest), "--json", "--no-progress", "--photo-root", str(examples))
    assert code == 0 and built["direction"] == ARRIVAL and built["gallery_id"].endswith("_arr")
    gid = built["gallery_id"]
    code, added = gallery("add", gid, LATE[0], str(examples / LATE[1]), "--json", "--reason", "standby")
    assert code == 0 and added["version"] == 2 and added["added"] == [LATE[0]] and added["encrypted"]
    assert added["key_id"] == TemplateKey.from_env().key_id  # sealed under the newest key, as a build is
    code, again = gallery("add", gid, LATE[0], str(examples / LATE[1]), "--json")
    assert code == 0 and again["unchanged"] and again["version"] == 2
    blank = tmp_path / "blank.png"
    blank.write_bytes(cv2.imencode(".png", np.full((200, 200, 3), 128, np.uint8))[1].tobytes())  # no face
    code, failed = gallery("add", gid, "P404", str(blank), "--json")
    assert code == 1 and failed["version"] == 3 and "P404" in failed["failed_travelers"]
    assert [f["photo"] for f in failed["enrollment_failures"]] == [f"sha256:{sha256_of(blank)[:16]}"]
    code, removed = gallery("remove", gid, "biden", "--json", "--reason", "offloaded")
    assert code == 0 and removed["version"] == 4 and removed["removed"] == ["biden"]
    code, message = gallery("remove", gid, "nobody")
    assert code == 2 and "nobody" in message
    code, message = gallery("add", "GM999_20300101T0000Z", LATE[0], str(examples / LATE[1]))
    assert code == 2 and "GM999" in message

    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(r["event"], r["gallery_version"]) for r in records][1:] == [
        ("gallery.add", "2"),
        ("gallery.add", "3"),
        ("gallery.remove", "4"),
    ]
    assert records[0]["event"] == "gallery.build"  # the same chained trail as every other gallery command
    assert all(r["client"].startswith("cli:") for r in records) and "standby" in records[1]["detail"]
    assert "offloaded" in records[3]["detail"] and "biden" in records[3]["detail"]
    chain = verify_log(tmp_path / "audit.jsonl")
    assert chain.ok and chain.records == 4, chain.problems
    store_ = open_store(store, key=TemplateKey.from_env())
    assert np.isfinite(store_.load(gid).vectors()).all() and store_.info(gid).travelers == 3
    stored = [p.photo for p in store_.provenance(gid)] + [f.photo for f in store_.failures(gid)]
    assert stored and all(re.fullmatch(r"sha256:[0-9a-f]{16}", photo) for photo in stored)  # no paths
