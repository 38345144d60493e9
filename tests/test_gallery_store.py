"""Gallery stores: atomic versions, crash safety, retention and purge, encryption at rest, pack binding,
damaged galleries quarantined. Every semantic test runs on both backends (the embedded SQLite store and
PostgreSQL, a real throwaway cluster); what only one backend has (index files, SQLite pages) is tested there.

These tests use synthetic templates (clustered unit vectors), so they run in milliseconds; the real-photo
gallery is built and searched in test_gallery_build.py.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from gatematch.benchmarks.calibration import measure_calibration
from gatematch.errors import (
    GalleryDamagedError,
    GalleryExpiredError,
    GalleryNotFoundError,
    GalleryStoreError,
    MissingKeyError,
    TemplateKeyError,
    WrongPackError,
)
from gatematch.gallery import ModelRef
from gatematch.gallery_store import (
    GalleryDraft,
    is_database_url,
    open_store,
)
from gatematch.gallery_store_sqlite import DB_NAME, SQLiteGalleryStore
from gatematch.template_crypto import TemplateKey, generate_key
from support.drafts import BEFORE, DEPARTURE, DIM, EMBEDDER, RAW, draft, probe_of, unit
from support.postgres import free_port, need_cluster
from support.stores import StoreBackend


@pytest.fixture
def backend(store_location: str, postgres_cluster) -> StoreBackend:
    """A fresh, empty store location on each backend (the parametrised `store_location`)."""
    cluster = postgres_cluster if is_database_url(store_location) else None
    return StoreBackend(store_location, cluster)


def test_write_load_search_roundtrip(backend: StoreBackend) -> None:
    store = backend.open()
    gallery_draft, centres = draft()
    result = store.write(gallery_draft, now=BEFORE)
    info = result.info
    assert not result.unchanged
    assert (info.travelers, info.templates, info.failures) == (20, 40, 1)
    assert info.failed_travelers == ("NOFACE",)
    assert info.expires_at == DEPARTURE + timedelta(hours=12)
    assert info.index_kind == "flat" and info.embedder == EMBEDDER
    assert store.info(info.gallery_id) == info == store.galleries("GM101")[0]

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
    assert provenance[0].quality == {"score": 0.9} and provenance[0].created_at == BEFORE
    assert store.failures(info.gallery_id)[0].reason == "no_face"
    assert [t.traveler_id for t in store.travelers(info.gallery_id)][-2:] == ["T0019", "NOFACE"]
    assert store.verify(info.gallery_id).ok


def test_same_content_is_idempotent_and_new_content_replaces(backend: StoreBackend) -> None:
    store = backend.open()
    first, _ = draft()
    v1 = store.write(first, now=BEFORE).info
    again = store.write(first, now=BEFORE)
    assert again.unchanged and again.info.version == v1.version
    second, centres = draft(travelers=5, seed=1, tag="U")
    v2 = store.write(second, now=BEFORE).info
    assert v2.version == v1.version + 1 and v2.travelers == 5
    assert [g.gallery_id for g in store.galleries()] == [v1.gallery_id]
    assert backend.rows_naming("T0001") == 0, "the previous version's rows went with it"
    if not backend.is_database:
        assert sorted(p.name for p in Path(backend.location).glob("*.faiss")) == [f"{v2.gallery_id}.v2.faiss"]
    found = store.load(v2.gallery_id, now=BEFORE).search(
        probe_of(centres, 3), EMBEDDER, None, point=RAW, now=BEFORE
    )
    assert found.match is not None and found.match.traveler_id == "U0003"


def test_retention_given_at_write_sets_the_expiry(backend: StoreBackend) -> None:
    info = backend.open().write(draft()[0], now=BEFORE, retention=timedelta(hours=1)).info
    assert info.expires_at == DEPARTURE + timedelta(hours=1)


def test_snapshot_survives_replacement_during_search(backend: StoreBackend) -> None:
    store = backend.open()
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


# -- crashes: a writer killed (SIGKILL, a real subprocess) at chosen points of the write path ----------------

CRASH_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from gatematch.gallery_store import open_store
from support.drafts import draft, BEFORE

def die(*_args, **_kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

def after(real):
    def run(*args, **kwargs):
        result = real(*args, **kwargs)
        die()
    return run

point = {point!r}
if point == "before the rename":  # the new index is complete in its temp file, not yet renamed into place
    import gatematch.atomicfile as atomicfile
    atomicfile.os.replace = die
elif point == "after the rename, before the commit":  # the new index file is in place; SQLite not switched
    import gatematch.gallery_store_sqlite as backend
    backend.write_atomic = after(backend.write_atomic)
elif point == "after the commit, before the old file is shredded":
    import gatematch.gallery_store_sqlite as backend
    backend._shred = die
elif point == "rows inserted, before the commit":  # PostgreSQL: everything sent inside the open transaction
    import gatematch.gallery_store_postgres as backend
    backend.PostgresGalleryStore._insert_rows = staticmethod(after(backend.PostgresGalleryStore._insert_rows))
open_store({location!r}).write(draft(travelers=5, seed=7, tag="NEW")[0], now=BEFORE)
"""
SQLITE_POINTS = (
    "before the rename",
    "after the rename, before the commit",
    "after the commit, before the old file is shredded",
)
POSTGRES_POINTS = ("rows inserted, before the commit",)


@pytest.mark.parametrize(
    ("kind", "point"), [*(("sqlite", p) for p in SQLITE_POINTS), *(("postgres", p) for p in POSTGRES_POINTS)]
)
def test_writer_killed_mid_write_leaves_one_whole_version(
    kind: str, point: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "sqlite":
        backend = StoreBackend(str(tmp_path / "store"))
    else:
        cluster = need_cluster(request.getfixturevalue("postgres_cluster"))
        backend = StoreBackend(cluster.database(), cluster)
    store = backend.open()
    old, centres = draft()
    gid = store.write(old, now=BEFORE).info.gallery_id
    script = CRASH_SCRIPT.format(tests=str(Path(__file__).parent), location=backend.location, point=point)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, proc.stderr

    reopened = backend.open()  # a fresh process view (the embedded store collects orphan files here)
    info = reopened.info(gid)
    committed = point.startswith("after the commit")
    assert (info.version, info.travelers) == ((2, 5) if committed else (1, 20))
    probe, expected = probe_of(centres, 11), "T0011"
    if committed:
        probe, expected = probe_of(draft(travelers=5, seed=7, tag="NEW")[1], 3), "NEW0003"
    found = reopened.load(gid, now=BEFORE).search(probe, EMBEDDER, None, point=RAW, now=BEFORE)
    assert found.match is not None and found.match.traveler_id == expected
    assert backend.rows_naming("NEW0000" if not committed else "T0000") == 0, "no row of the other version"
    if not backend.is_database:
        names = {p.name for p in Path(backend.location).iterdir()}
        assert names == {DB_NAME, f"{gid}.v{info.version}.faiss"}, "no orphan index file survives a reopen"


# -- retention, encryption ---------------------------------------------------------------------------------


def test_expired_gallery_is_refused_and_purged_for_real(backend: StoreBackend) -> None:
    store = backend.open(retention=timedelta(hours=1))
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
    with pytest.raises(GalleryNotFoundError):
        store.load(gid, now=BEFORE)
    assert [g.flight_id for g in store.galleries()] == ["GM202"]
    assert backend.rows_naming("SECRETTRAVELER") == 0 and backend.rows_naming(gid) == 0
    assert backend.rows_naming("KEEP0001") > 0, "the other gallery must survive"
    if not backend.is_database:  # SQLite overwrites deleted rows (secure_delete); files are zero-filled
        assert not list(Path(backend.location).glob(f"{gid}*"))
        for name, data in backend.bytes_at_rest().items():  # database (free pages included), journals, index
            assert b"SECRETTRAVELER" not in data, name
            assert template_bytes not in data, name


def test_encrypted_store_holds_no_plaintext_and_needs_the_right_key(backend: StoreBackend) -> None:
    key = TemplateKey.from_base64(generate_key())
    store = backend.open(key=key)
    secret, centres = draft(seed=4242, tag="ENC")  # templates no other test writes
    info = store.write(secret, now=BEFORE).info
    assert info.encrypted
    at_rest = backend.bytes_at_rest()  # PostgreSQL: every file of the cluster, WAL included
    if not backend.is_database:
        assert f"{info.gallery_id}.v1.faiss.enc" in at_rest
    for name, data in at_rest.items():
        for template in secret.templates[:5]:
            assert template.embedding.tobytes() not in data, name
    found = store.load(info.gallery_id, now=BEFORE).search(
        probe_of(centres, 4), EMBEDDER, None, point=RAW, now=BEFORE
    )
    assert found.match is not None and found.match.traveler_id == "ENC0004"

    with pytest.raises(MissingKeyError, match=f"key {key.key_id} is not among"):
        backend.open(key=TemplateKey.from_base64(generate_key())).load(info.gallery_id, now=BEFORE)
    with pytest.raises(TemplateKeyError, match="no template key"):
        backend.open().load(info.gallery_id, now=BEFORE)


def test_ciphertext_is_bound_to_gallery_and_version(backend: StoreBackend) -> None:
    key = TemplateKey.from_base64(generate_key())
    store = backend.open(key=key)
    v1 = store.write(draft()[0], now=BEFORE).info
    old_blob = backend.index_bytes(v1.gallery_id)
    v2 = store.write(draft(seed=3)[0], now=BEFORE).info
    backend.replace_index(v2.gallery_id, lambda _: old_blob)  # replay the old version's templates
    with pytest.raises(GalleryDamagedError, match="sha256"):
        backend.open(key=key).load(v2.gallery_id, now=BEFORE)
    backend.replace_index(v2.gallery_id, lambda _: old_blob, fix_sha256=True)  # ...and fix the recorded hash
    with pytest.raises(TemplateKeyError):  # still fails: the ciphertext is bound to gallery id + version
        backend.open(key=key).load(v2.gallery_id, now=BEFORE)


def test_malformed_key_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEMATCH_TEMPLATE_KEY", "not base64!")
    with pytest.raises(TemplateKeyError, match="base64"):
        TemplateKey.from_env()
    monkeypatch.setenv("GATEMATCH_TEMPLATE_KEY", "c2hvcnQ=")
    with pytest.raises(TemplateKeyError, match="32 bytes"):
        TemplateKey.from_env()
    monkeypatch.delenv("GATEMATCH_TEMPLATE_KEY")
    assert TemplateKey.from_env() is None


def test_encrypted_gallery_is_not_rewritten_in_plaintext_without_the_key(backend: StoreBackend) -> None:
    """Forgetting GATEMATCH_TEMPLATE_KEY on a rebuild must not silently store the templates in the clear."""
    key = TemplateKey.from_base64(generate_key())
    info = backend.open(key=key).write(draft()[0], now=BEFORE).info
    with pytest.raises(TemplateKeyError, match="GATEMATCH_TEMPLATE_KEY"):
        backend.open().check_replaceable(info.gallery_id)
    with pytest.raises(TemplateKeyError, match="GATEMATCH_TEMPLATE_KEY"):
        backend.open().write(draft(seed=1)[0], now=BEFORE)
    assert backend.open().info(info.gallery_id) == info
    if not backend.is_database:
        files = sorted(p.name for p in Path(backend.location).glob("*.faiss*"))
        assert files == [f"{info.gallery_id}.v1.faiss.enc"]


# -- pack binding, search ----------------------------------------------------------------------------------


def test_search_with_another_embedder_is_refused(backend: StoreBackend) -> None:
    store = backend.open()
    gallery_draft, centres = draft()
    gallery = store.load(store.write(gallery_draft, now=BEFORE).info.gallery_id, now=BEFORE)
    probe = probe_of(centres, 1)
    with pytest.raises(WrongPackError, match="w600k"):
        gallery.search(probe, ModelRef("w600k_mbf_int8", "b" * 64), None, point=RAW, now=BEFORE)
    with pytest.raises(WrongPackError, match="sha256"):  # same name, different file
        gallery.search(probe, ModelRef(EMBEDDER.name, "c" * 64), None, point=RAW, now=BEFORE)
    with pytest.raises(WrongPackError, match="dimensions"):
        gallery.search(probe[:64], EMBEDDER, None, point=RAW, now=BEFORE)


def test_unknown_gallery(backend: StoreBackend) -> None:
    store = backend.open()
    for call in (store.load, store.info, store.purge, store.verify):
        with pytest.raises(GalleryNotFoundError, match="NOPE"):
            call("NOPE_20300501T1830Z")


def test_large_gallery_switches_to_hnsw_and_finds_the_same_traveler(
    backend: StoreBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gatematch.gallery as gallery_module

    monkeypatch.setattr(gallery_module, "HNSW_MIN_TEMPLATES", 1000)  # keep the test small; same code path
    gallery_draft, centres = draft(travelers=600, per_traveler=2)
    store = backend.open()
    gallery = store.load(store.write(gallery_draft, now=BEFORE).info.gallery_id, now=BEFORE)
    assert gallery.info.index_kind == "hnsw"
    hits = sum(
        gallery.search(probe_of(centres, t, seed=t), EMBEDDER, None, point=RAW, now=BEFORE).match.traveler_id
        == f"T{t:04d}"
        for t in range(0, 600, 20)
    )
    assert hits == 30


def test_gallery_where_every_traveler_failed_gives_no_candidate(backend: StoreBackend) -> None:
    scores = np.random.default_rng(0).normal(0.0, 0.1, 20_000)
    table = measure_calibration(
        scores, embedder=EMBEDDER.name, embedder_sha256=EMBEDDER.sha256, dataset="synthetic"
    )
    store = backend.open()
    empty = draft(travelers=0)[0]
    gallery = store.load(store.write(empty, now=BEFORE).info.gallery_id, now=BEFORE)
    result = gallery.search(probe_of(draft()[1], 0), EMBEDDER, table, now=BEFORE)
    assert (result.gallery_size, result.candidates, result.match) == (0, (), None)


# -- damaged galleries: quarantined, named, never taking the others down ---------------------------------


def _flip(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]


DAMAGE = {
    "flipped byte": lambda backend, gid: backend.replace_index(gid, _flip),
    "truncated": lambda backend, gid: backend.replace_index(gid, lambda data: data[: len(data) // 3]),
    "deleted": lambda backend, gid: backend.delete_index(gid),
    "undecryptable": lambda backend, gid: backend.replace_index(gid, _flip, fix_sha256=True),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_a_damaged_gallery_is_quarantined_and_the_others_serve(backend: StoreBackend, damage: str) -> None:
    key = TemplateKey.from_base64(generate_key())
    store = backend.open(key=key)
    broken = store.write(draft()[0], now=BEFORE).info.gallery_id
    healthy_draft, centres = draft(flight="GM202", tag="OK", seed=1)
    healthy = store.write(healthy_draft, now=BEFORE).info.gallery_id
    DAMAGE[damage](backend, broken)

    fresh = backend.open(key=key)  # a replica starting after the damage
    expected = TemplateKeyError if damage == "undecryptable" else GalleryDamagedError
    with pytest.raises(expected) as first:
        fresh.load(broken, now=BEFORE)
    assert broken in str(first.value) or damage == "undecryptable"
    with pytest.raises(expected):  # quarantined: the same answer, at once
        fresh.load(broken, now=BEFORE)
    found = fresh.load(healthy, now=BEFORE).search(
        probe_of(centres, 2), EMBEDDER, None, point=RAW, now=BEFORE
    )
    assert found.match is not None and found.match.traveler_id == "OK0002"

    check = fresh.verify(broken)
    assert not check.ok and check.problem, "verify names what is wrong"
    assert fresh.verify(healthy).ok
    again = fresh.write(draft()[0], now=BEFORE)  # reloading the same content replaces the damaged version
    assert not again.unchanged
    assert fresh.load(broken, now=BEFORE).info.version == 2 and fresh.verify(broken).ok


# -- what only the embedded store has: a folder of files and a SQLite database ----------------------------


def test_files_are_owner_only_and_purge_leaves_only_the_database(tmp_path: Path) -> None:
    store = SQLiteGalleryStore(tmp_path)
    gid = store.write(draft()[0], now=BEFORE).info.gallery_id
    assert {p.stat().st_mode & 0o077 for p in tmp_path.iterdir()} == {0}
    store.purge(gid)
    assert sorted(os.listdir(tmp_path)) == [DB_NAME]
    with pytest.raises(GalleryNotFoundError):
        store.purge(gid)


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
        SQLiteGalleryStore(root)


def corrupt_pages(database: Path) -> None:
    """Overwrite every page but the first (the header) with garbage: a disk or copy gone wrong."""
    data = bytearray(database.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    for start in range(page, len(data), page):
        data[start : start + page] = bytes(range(256)) * (page // 256)
    database.write_bytes(bytes(data))


def test_corrupted_database_pages_are_a_store_error_not_a_traceback(tmp_path: Path) -> None:
    store = SQLiteGalleryStore(tmp_path)
    gid = store.write(draft()[0], now=BEFORE).info.gallery_id
    corrupt_pages(tmp_path / DB_NAME)
    for call in (store.galleries, lambda: store.info(gid), lambda: store.load(gid, now=BEFORE)):
        with pytest.raises(GalleryStoreError, match="damaged or unreadable"):
            call()


def test_purge_removes_files_of_every_version_left_by_a_crash(tmp_path: Path) -> None:
    """A writer killed after its switch but before shredding leaves the previous version's file behind; a
    long-lived store (the service's purge timer) must not leave those templates on disk after purging."""
    store = SQLiteGalleryStore(tmp_path)
    gid = store.write(draft()[0], now=BEFORE).info.gallery_id
    old = (tmp_path / f"{gid}.v1.faiss").read_bytes()
    store.write(draft(seed=1)[0], now=BEFORE)
    (tmp_path / f"{gid}.v1.faiss").write_bytes(old)  # what that crash leaves
    store.purge(gid)
    assert sorted(os.listdir(tmp_path)) == [DB_NAME]


def test_store_opened_on_the_wrong_folder_leaves_other_files_alone(tmp_path: Path) -> None:
    """Orphan collection removes only files named like the store's own index files: `--store` pointed at the
    wrong folder must not shred somebody's *.faiss or editor temp files."""
    theirs = {"research.faiss": b"someone's index", "notes.txt.tmp-12": b"draft", "x.faiss.enc": b"blob"}
    for name, data in theirs.items():
        (tmp_path / name).write_bytes(data)
    orphan = tmp_path / "GM101_20300501T1830Z.v3.faiss.tmp-999"
    orphan.write_bytes(b"half-written")
    SQLiteGalleryStore(tmp_path)
    assert {name: (tmp_path / name).read_bytes() for name in theirs} == theirs
    assert not orphan.exists()


# -- what only PostgreSQL has: a server that may be unreachable, several replicas ---------------------------


def test_unreachable_database_is_a_clear_error_without_the_password() -> None:
    url = f"postgresql://gate:s3cret-pw@127.0.0.1:{free_port()}/galleries"
    with pytest.raises(GalleryStoreError) as caught:
        open_store(url)
    message = str(caught.value)
    assert "postgresql://gate@127.0.0.1" in message and "s3cret" not in message and "\n" not in message


def test_frame_lookups_see_every_write_of_another_process_at_once(tmp_path: Path) -> None:
    """The SQLite store answers a frame's lookup from what it read last while the database's change counter
    stands still; a write through any other connection moves it, so the next lookup reads again."""
    reader, writer = SQLiteGalleryStore(tmp_path), SQLiteGalleryStore(tmp_path)
    first, _ = draft(seed=1)
    gid = writer.write(first, now=BEFORE).info.gallery_id
    assert [g.version for g in reader.galleries("GM101")] == [1] and reader.load(
        gid, now=BEFORE
    ).info.version == 1
    counter = reader._change_counter()
    assert counter is not None and reader.load(gid, now=BEFORE) is reader.load(
        gid, now=BEFORE
    )  # answered from memory
    second, _ = draft(seed=2)
    writer.write(second, now=BEFORE)
    assert reader._change_counter() != counter
    assert [g.version for g in reader.galleries("GM101")] == [2] and reader.load(
        gid, now=BEFORE
    ).info.version == 2
    writer.purge(gid)
    assert reader.galleries("GM101") == []
    with pytest.raises(GalleryNotFoundError):
        reader.load(gid, now=BEFORE)


def test_a_lookup_that_read_an_older_version_never_leaves_it_in_memory_as_current(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A frame's lookup that read version 1 and finished after another lookup had read version 2 (written in
    between) must not make later lookups answer version 1 from memory while nothing else is written."""
    import gatematch.gallery_store_sqlite as sqlite_store

    reader, writer = SQLiteGalleryStore(tmp_path), SQLiteGalleryStore(tmp_path)
    gid = writer.write(draft(seed=1)[0], now=BEFORE).info.gallery_id
    opened, proceed = threading.Event(), threading.Event()
    open_snapshot = sqlite_store.open_snapshot

    def held_open_snapshot(*args, **kwargs):
        if threading.current_thread().name == "slow-lookup":
            opened.set()
            assert proceed.wait(10)
        return open_snapshot(*args, **kwargs)

    monkeypatch.setattr(sqlite_store, "open_snapshot", held_open_snapshot)
    versions: list[int] = []
    slow = threading.Thread(
        target=lambda: versions.append(reader.load(gid, now=BEFORE).info.version), name="slow-lookup"
    )
    slow.start()
    assert opened.wait(10), "the slow lookup reads version 1"
    writer.write(draft(seed=2)[0], now=BEFORE)
    assert reader.load(gid, now=BEFORE).info.version == 2
    proceed.set()
    slow.join(10)
    assert versions == [1]
    assert [reader.load(gid, now=BEFORE).info.version for _ in range(3)] == [2, 2, 2]


def test_a_store_dropped_without_close_closes_its_change_counter_descriptor(tmp_path: Path) -> None:
    """Stores opened for one question (the server's start-up check of the key file, a benchmark's fresh
    reader) are dropped without `close()`: their descriptor of the database file must not outlive them."""
    import gc

    store = SQLiteGalleryStore(tmp_path)
    gid = store.write(draft(seed=1)[0], now=BEFORE).info.gallery_id
    store.load(gid, now=BEFORE)
    closer = store._header_closer
    assert store._header is not None and closer is not None and closer.alive  # open while the store lives
    del store
    gc.collect()
    assert not closer.alive, "closed with the store"


def test_a_database_in_wal_mode_is_read_every_time(tmp_path: Path) -> None:
    store = SQLiteGalleryStore(tmp_path)
    gid = store.write(draft(seed=1)[0], now=BEFORE).info.gallery_id
    con = sqlite3.connect(tmp_path / DB_NAME)
    con.execute("PRAGMA journal_mode = WAL").fetchone()
    con.close()
    assert store._change_counter() is None  # WAL leaves the counter alone: it cannot be trusted
    assert store.load(gid, now=BEFORE).info.version == 1
    store.write(draft(seed=2)[0], now=BEFORE)
    assert store.load(gid, now=BEFORE).info.version == 2


def test_a_database_file_replaced_under_a_running_store_is_read_anew(tmp_path: Path) -> None:
    store, other_root = SQLiteGalleryStore(tmp_path / "a"), tmp_path / "b"
    gid = store.write(draft(seed=1)[0], now=BEFORE).info.gallery_id
    assert store.load(gid, now=BEFORE).info.version == 1
    other = SQLiteGalleryStore(other_root)
    other.write(draft(seed=1)[0], now=BEFORE)
    other.write(draft(seed=2)[0], now=BEFORE)
    other.close()
    for name in os.listdir(other_root):  # the other store's files, the database renamed over this one's
        os.replace(other_root / name, tmp_path / "a" / name)
    assert store.load(gid, now=BEFORE).info.version == 2
    store.close()
