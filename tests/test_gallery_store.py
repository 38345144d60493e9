"""Gallery store: atomic versions, crash safety, retention and purge, encryption at rest, pack binding.

These tests use synthetic templates (clustered unit vectors), so they run in milliseconds; the real-photo
gallery is built and searched in test_gallery_build.py.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from gatematch.errors import (
    GalleryExpiredError,
    GalleryNotFoundError,
    GalleryStoreError,
    TemplateKeyError,
    WrongPackError,
)
from gatematch.gallery import EnrollmentFailure, ModelRef, OperatingPoint
from gatematch.gallery_store import (
    DB_NAME,
    GalleryDraft,
    GalleryStore,
    TemplateRecord,
    TravelerRecord,
)
from gatematch.template_crypto import TemplateKey, generate_key

DIM = 128
EMBEDDER = ModelRef("mobilefacenet_128d", "a" * 64)
DEPARTURE = datetime(2030, 5, 1, 18, 30, tzinfo=UTC)
BEFORE = DEPARTURE - timedelta(hours=2)
RAW = OperatingPoint(threshold=0.5)


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def draft(
    travelers: int = 20, per_traveler: int = 2, seed: int = 0, flight: str = "GM101", tag: str = "T"
) -> tuple[GalleryDraft, np.ndarray]:
    """A gallery of `travelers` identities, each `per_traveler` noisy templates around its own centre."""
    rng = np.random.default_rng(seed)
    centres = unit(rng.normal(size=(travelers, DIM)))
    templates = []
    for t in range(travelers):
        for p in range(per_traveler):
            vector = unit(centres[t] + 0.04 * rng.normal(size=DIM))
            templates.append(
                TemplateRecord(
                    f"{tag}{t:04d}", f"/photos/{tag}{t:04d}_{p}.jpg", f"{t:064x}", {"score": 0.9}, vector
                )
            )
    result = GalleryDraft(
        flight_id=flight,
        departure=DEPARTURE,
        pack="default",
        model_hashes={EMBEDDER.name: EMBEDDER.sha256},
        embedder=EMBEDDER,
        dim=DIM,
        travelers=(
            *(TravelerRecord(f"{tag}{t:04d}", "passport") for t in range(travelers)),
            TravelerRecord("NOFACE"),
        ),
        templates=tuple(templates),
        failures=(EnrollmentFailure("NOFACE", "/photos/noface.jpg", "no_face", "no face detected"),),
        content_hash=f"{tag}-{seed}-{travelers}-{per_traveler}",
    )
    return result, centres


def probe_of(centres: np.ndarray, traveler: int, seed: int = 99) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return unit(centres[traveler] + 0.04 * rng.normal(size=DIM))


def test_write_load_search_roundtrip(tmp_path: Path) -> None:
    store = GalleryStore(tmp_path)
    gallery_draft, centres = draft()
    result = store.write(gallery_draft, now=BEFORE)
    info = result.info
    assert not result.unchanged
    assert (info.travelers, info.templates, info.failures) == (20, 40, 1)
    assert info.failed_travelers == ("NOFACE",)
    assert info.expires_at == DEPARTURE + timedelta(hours=12)
    assert info.index_kind == "flat" and info.embedder == EMBEDDER

    gallery = store.load(info.gallery_id, now=BEFORE)
    found = gallery.search(probe_of(centres, 7), EMBEDDER, None, k=3, point=RAW, now=BEFORE)
    assert found.match is not None and found.match.traveler_id == "T0007"
    ids = [c.traveler_id for c in found.candidates]
    assert len(ids) == 3 and len(set(ids)) == 3, (
        "one candidate per traveler (best template), not per template"
    )
    assert found.candidates[0].score > 0.7 > 0.3 > found.candidates[1].score

    stranger = unit(np.random.default_rng(5).normal(size=DIM))
    assert gallery.search(stranger, EMBEDDER, None, point=RAW, now=BEFORE).match is None

    provenance = store.provenance(info.gallery_id)
    assert provenance[found.match.template_row].traveler_id == "T0007"
    assert store.failures(info.gallery_id)[0].reason == "no_face"


def test_same_content_is_idempotent_and_new_content_replaces(tmp_path: Path) -> None:
    store = GalleryStore(tmp_path)
    first, _ = draft()
    v1 = store.write(first, now=BEFORE).info
    again = store.write(first, now=BEFORE)
    assert again.unchanged and again.info.version == v1.version
    second, centres = draft(travelers=5, seed=1, tag="U")
    v2 = store.write(second, now=BEFORE).info
    assert v2.version == v1.version + 1 and v2.travelers == 5
    assert [g.gallery_id for g in store.galleries()] == [v1.gallery_id]
    assert sorted(p.name for p in tmp_path.glob("*.faiss")) == [f"{v2.gallery_id}.v2.faiss"]
    found = store.load(v2.gallery_id, now=BEFORE).search(
        probe_of(centres, 3), EMBEDDER, None, point=RAW, now=BEFORE
    )
    assert found.match is not None and found.match.traveler_id == "U0003"


def test_snapshot_survives_replacement_during_search(tmp_path: Path) -> None:
    store = GalleryStore(tmp_path)
    old, centres = draft()
    gid = store.write(old, now=BEFORE).info.gallery_id
    snapshot = store.load(gid, now=BEFORE)
    errors: list[BaseException] = []

    def search_loop() -> None:
        try:
            for _ in range(300):
                result = snapshot.search(probe_of(centres, 2), EMBEDDER, None, point=RAW, now=BEFORE)
                assert (
                    result.version == 1 and result.match is not None and result.match.traveler_id == "T0002"
                )
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=search_loop)
    worker.start()
    for seed in range(1, 4):
        store.write(draft(travelers=10, seed=seed, tag="V")[0], now=BEFORE)
    worker.join()
    assert not errors
    assert store.load(gid, now=BEFORE).info.version == 4


CRASH_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import gatematch.gallery_store as gs
from test_gallery_store import draft, BEFORE

real = gs.write_atomic
def write_then_die(path, data, **options):
    real(path, data, **options)  # the new index file is complete and renamed into place...
    os.kill(os.getpid(), signal.SIGKILL)  # ...and the process dies before the SQLite switch
gs.write_atomic = write_then_die
gs.GalleryStore({root!r}).write(draft(travelers=5, seed=7, tag="NEW")[0], now=BEFORE)
"""


def test_crash_after_index_written_before_switch_keeps_old_version(tmp_path: Path) -> None:
    store = GalleryStore(tmp_path)
    old, centres = draft()
    gid = store.write(old, now=BEFORE).info.gallery_id
    script = CRASH_SCRIPT.format(tests=str(Path(__file__).parent), root=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (tmp_path / f"{gid}.v2.faiss").exists(), "the crash happened after the new file was in place"

    reopened = GalleryStore(tmp_path)  # a fresh process view: collects the orphan file
    info = reopened.info(gid)
    assert info.version == 1 and info.travelers == 20
    assert not (tmp_path / f"{gid}.v2.faiss").exists()
    found = reopened.load(gid, now=BEFORE).search(
        probe_of(centres, 11), EMBEDDER, None, point=RAW, now=BEFORE
    )
    assert found.match is not None and found.match.traveler_id == "T0011"


def test_expired_gallery_is_refused_and_purged_for_real(tmp_path: Path) -> None:
    store = GalleryStore(tmp_path, retention=timedelta(hours=1))
    secret, _ = draft(tag="SECRETTRAVELER")
    keep, _ = draft(flight="GM202", tag="KEEP", seed=1)
    keep = GalleryDraft(**{**keep.__dict__, "departure": DEPARTURE + timedelta(days=1)})
    gid = store.write(secret, now=BEFORE).info.gallery_id
    store.write(keep, now=BEFORE)
    template_bytes = secret.templates[0].embedding.tobytes()
    after = DEPARTURE + timedelta(hours=1)

    snapshot = store.load(gid, now=BEFORE)
    with pytest.raises(GalleryExpiredError, match="expired"):
        snapshot.search(secret.templates[0].embedding, EMBEDDER, None, point=RAW, now=after)
    with pytest.raises(GalleryExpiredError):
        store.load(gid, now=after)

    assert store.purge_expired(now=after - timedelta(seconds=1)) == []
    assert store.purge_expired(now=after) == [gid]
    with pytest.raises(GalleryNotFoundError):
        store.info(gid)
    assert [g.flight_id for g in store.galleries()] == ["GM202"]
    assert not list(tmp_path.glob(f"{gid}*"))
    for path in tmp_path.iterdir():  # database (free pages included), journals, index files
        data = path.read_bytes()
        assert b"SECRETTRAVELER" not in data, path.name
        assert template_bytes not in data, path.name
    assert b"KEEP0001" in (tmp_path / DB_NAME).read_bytes(), "the other gallery must survive"


def test_encrypted_store_holds_no_plaintext_and_needs_the_right_key(tmp_path: Path) -> None:
    key = TemplateKey.from_base64(generate_key())
    store = GalleryStore(tmp_path, key=key)
    secret, centres = draft()
    info = store.write(secret, now=BEFORE).info
    assert info.encrypted
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert f"{info.gallery_id}.v1.faiss.enc" in files
    for name, data in files.items():
        for template in secret.templates[:5]:
            assert template.embedding.tobytes() not in data, name
    found = store.load(info.gallery_id, now=BEFORE).search(
        probe_of(centres, 4), EMBEDDER, None, point=RAW, now=BEFORE
    )
    assert found.match is not None and found.match.traveler_id == "T0004"

    with pytest.raises(TemplateKeyError, match="wrong"):
        GalleryStore(tmp_path, key=TemplateKey.from_base64(generate_key())).load(info.gallery_id, now=BEFORE)
    with pytest.raises(TemplateKeyError, match="GATEMATCH_TEMPLATE_KEY"):
        GalleryStore(tmp_path).load(info.gallery_id, now=BEFORE)


def test_ciphertext_is_bound_to_gallery_and_version(tmp_path: Path) -> None:
    key = TemplateKey.from_base64(generate_key())
    store = GalleryStore(tmp_path, key=key)
    v1 = store.write(draft()[0], now=BEFORE).info
    old_blob = (tmp_path / f"{v1.gallery_id}.v1.faiss.enc").read_bytes()
    v2 = store.write(draft(seed=3)[0], now=BEFORE).info
    (tmp_path / f"{v2.gallery_id}.v2.faiss.enc").write_bytes(old_blob)  # replay the old version's templates
    with pytest.raises(GalleryStoreError, match="sha256"):
        GalleryStore(tmp_path, key=key).load(v2.gallery_id, now=BEFORE)
    with sqlite3.connect(tmp_path / DB_NAME) as con:  # an attacker who also fixes the recorded hash...
        con.execute("UPDATE galleries SET index_sha256 = ?", (hashlib.sha256(old_blob).hexdigest(),))
    with pytest.raises(TemplateKeyError):  # ...still fails: the ciphertext is bound to gallery id + version
        GalleryStore(tmp_path, key=key).load(v2.gallery_id, now=BEFORE)


def test_malformed_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEMATCH_TEMPLATE_KEY", "not base64!")
    with pytest.raises(TemplateKeyError, match="base64"):
        TemplateKey.from_env()
    monkeypatch.setenv("GATEMATCH_TEMPLATE_KEY", "c2hvcnQ=")
    with pytest.raises(TemplateKeyError, match="32 bytes"):
        TemplateKey.from_env()
    monkeypatch.delenv("GATEMATCH_TEMPLATE_KEY")
    assert TemplateKey.from_env() is None


def test_search_with_another_embedder_is_refused(tmp_path: Path) -> None:
    store = GalleryStore(tmp_path)
    gallery_draft, centres = draft()
    gallery = store.load(store.write(gallery_draft, now=BEFORE).info.gallery_id, now=BEFORE)
    probe = probe_of(centres, 1)
    with pytest.raises(WrongPackError, match="w600k"):
        gallery.search(probe, ModelRef("w600k_mbf_int8", "b" * 64), None, point=RAW, now=BEFORE)
    with pytest.raises(WrongPackError, match="sha256"):  # same name, different file
        gallery.search(probe, ModelRef(EMBEDDER.name, "c" * 64), None, point=RAW, now=BEFORE)
    with pytest.raises(WrongPackError, match="dimensions"):
        gallery.search(probe[:64], EMBEDDER, None, point=RAW, now=BEFORE)


def test_unknown_gallery(tmp_path: Path) -> None:
    with pytest.raises(GalleryNotFoundError, match="NOPE"):
        GalleryStore(tmp_path).load("NOPE_20300501T1830Z")


def test_large_gallery_switches_to_hnsw_and_finds_the_same_traveler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gatematch.gallery as gallery_module

    monkeypatch.setattr(gallery_module, "HNSW_MIN_TEMPLATES", 1000)  # keep the test small; same code path
    gallery_draft, centres = draft(travelers=600, per_traveler=2)
    store = GalleryStore(tmp_path)
    gallery = store.load(store.write(gallery_draft, now=BEFORE).info.gallery_id, now=BEFORE)
    assert gallery.info.index_kind == "hnsw"
    hits = sum(
        gallery.search(probe_of(centres, t, seed=t), EMBEDDER, None, point=RAW, now=BEFORE).match.traveler_id
        == f"T{t:04d}"
        for t in range(0, 600, 20)
    )
    assert hits == 30


def test_files_are_owner_only_and_purge_leaves_only_the_database(tmp_path: Path) -> None:
    store = GalleryStore(tmp_path)
    gid = store.write(draft()[0], now=BEFORE).info.gallery_id
    assert {p.stat().st_mode & 0o077 for p in tmp_path.iterdir()} == {0}
    store.purge(gid)
    assert sorted(os.listdir(tmp_path)) == [DB_NAME]
    with pytest.raises(GalleryNotFoundError):
        store.purge(gid)


def test_altered_index_file_is_refused_not_searched(tmp_path: Path) -> None:
    store = GalleryStore(tmp_path)
    info = store.write(draft()[0], now=BEFORE).info
    path = tmp_path / f"{info.gallery_id}.v1.faiss"
    data = bytearray(path.read_bytes())
    data[-8:] = bytes(8)  # a template's last components zeroed: still a loadable index, wrong content
    path.write_bytes(bytes(data))
    with pytest.raises(GalleryStoreError, match="sha256"):
        GalleryStore(tmp_path).load(info.gallery_id, now=BEFORE)


@pytest.mark.parametrize("kind", ["file", "not a database"])
def test_store_that_is_not_a_store_is_a_clear_error(tmp_path: Path, kind: str) -> None:
    if kind == "file":
        root = tmp_path / "plain-file"
        root.write_text("not a folder")
    else:
        root = tmp_path / "store"
        root.mkdir()
        (root / DB_NAME).write_text("garbage, not SQLite")
    with pytest.raises(GalleryStoreError, match=str(root)):
        GalleryStore(root)


def test_purge_removes_files_of_every_version_left_by_a_crash(tmp_path: Path) -> None:
    """A writer killed after its switch but before shredding leaves the previous version's file behind; a
    long-lived store (the service's purge timer) must not leave those templates on disk after purging."""
    store = GalleryStore(tmp_path)
    gid = store.write(draft()[0], now=BEFORE).info.gallery_id
    old = (tmp_path / f"{gid}.v1.faiss").read_bytes()
    store.write(draft(seed=1)[0], now=BEFORE)
    (tmp_path / f"{gid}.v1.faiss").write_bytes(old)  # what that crash leaves
    store.purge(gid)
    assert sorted(os.listdir(tmp_path)) == [DB_NAME]


def test_encrypted_gallery_is_not_rewritten_in_plaintext_without_the_key(tmp_path: Path) -> None:
    """Forgetting GATEMATCH_TEMPLATE_KEY on a rebuild must not silently store the templates in the clear."""
    key = TemplateKey.from_base64(generate_key())
    info = GalleryStore(tmp_path, key=key).write(draft()[0], now=BEFORE).info
    with pytest.raises(TemplateKeyError, match="GATEMATCH_TEMPLATE_KEY"):
        GalleryStore(tmp_path).write(draft(seed=1)[0], now=BEFORE)
    assert GalleryStore(tmp_path).info(info.gallery_id) == info
    assert sorted(p.name for p in tmp_path.glob("*.faiss*")) == [f"{info.gallery_id}.v1.faiss.enc"]


def test_gallery_where_every_traveler_failed_gives_no_candidate(tmp_path: Path) -> None:
    from gatematch.benchmarks.calibration import CalibrationTable

    scores = np.random.default_rng(0).normal(0.0, 0.1, 20_000)
    table = CalibrationTable.from_impostor_scores(
        scores, embedder=EMBEDDER.name, embedder_sha256=EMBEDDER.sha256, dataset="synthetic"
    )
    store = GalleryStore(tmp_path)
    empty = draft(travelers=0)[0]
    gallery = store.load(store.write(empty, now=BEFORE).info.gallery_id, now=BEFORE)
    result = gallery.search(probe_of(draft()[1], 0), EMBEDDER, table, now=BEFORE)
    assert (result.gallery_size, result.candidates, result.match) == (0, (), None)


def test_store_opened_on_the_wrong_folder_leaves_other_files_alone(tmp_path: Path) -> None:
    """Orphan collection removes only files named like the store's own index files: `--store` pointed at the
    wrong folder must not shred somebody's *.faiss or editor temp files."""
    theirs = {"research.faiss": b"someone's index", "notes.txt.tmp-12": b"draft", "x.faiss.enc": b"blob"}
    for name, data in theirs.items():
        (tmp_path / name).write_bytes(data)
    orphan = tmp_path / "GM101_20300501T1830Z.v3.faiss.tmp-999"
    orphan.write_bytes(b"half-written")
    GalleryStore(tmp_path)
    assert {name: (tmp_path / name).read_bytes() for name in theirs} == theirs
    assert not orphan.exists()
