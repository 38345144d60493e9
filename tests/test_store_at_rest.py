"""Data at rest, on both store backends: keys with ids and rotation (reseal) while galleries are read, plaintext
galleries refused where keys are held, the retention policy (maximum, horizon), expired data unreadable, and no
photo paths kept. Synthetic templates (milliseconds); the service-level tests are in test_service_at_rest.py."""

from __future__ import annotations

import os
import shutil
import sqlite3
import threading
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gatematch.errors import (
    GalleryExpiredError,
    MissingKeyError,
    PlaintextGalleryError,
    RetentionError,
    TemplateKeyError,
)
from gatematch.gallery_store import RetentionPolicy, is_database_url
from gatematch.gallery_store_sqlite import DB_NAME, SQLiteGalleryStore
from gatematch.keyfile import KeyFile, template_keys
from gatematch.template_crypto import Keyring, TemplateKey, generate_key, sealed_key_id
from support.data import need_root
from support.drafts import BEFORE, DEPARTURE, EMBEDDER, RAW, draft, probe_of
from support.stores import StoreBackend


@pytest.fixture
def backend(store_location: str, postgres_cluster) -> StoreBackend:
    return StoreBackend(store_location, postgres_cluster if is_database_url(store_location) else None)


def new_key() -> TemplateKey:
    return TemplateKey.from_base64(generate_key())


def matches(store, gallery_id: str, centres, traveler: int, tag: str = "T") -> bool:
    found = store.load(gallery_id, now=BEFORE).search(
        probe_of(centres, traveler), EMBEDDER, None, point=RAW, now=BEFORE
    )
    return found.match is not None and found.match.traveler_id == f"{tag}{traveler:04d}"


# -- keys: ids, rotation, plaintext refused ------------------------------------------------------------------


def test_keys_have_stable_ids_and_sealed_data_names_its_key() -> None:
    text = generate_key()
    key = TemplateKey.from_base64(text)
    assert key.key_id == TemplateKey.from_base64(text).key_id != new_key().key_id
    assert text not in repr(key) and key.key_id in repr(key)
    sealed = key.encrypt(b"templates", b"gallery:v1")
    assert sealed_key_id(sealed) == key.key_id
    assert Keyring([new_key(), key]).get(key.key_id).decrypt(sealed, b"gallery:v1") == b"templates"
    with pytest.raises(TemplateKeyError, match="altered"):
        key.decrypt(sealed, b"gallery:v2")


def test_reseal_moves_every_gallery_to_the_newest_key_while_it_is_searched(backend: StoreBackend) -> None:
    old, new = new_key(), new_key()
    gallery_draft, centres = draft()
    gid = backend.open(key=old).write(gallery_draft, now=BEFORE).info.gallery_id
    old_blob = backend.index_bytes(gid)
    assert sealed_key_id(old_blob) == old.key_id

    both = backend.open(key=Keyring([old, new]))
    searching = backend.open(key=Keyring([old, new]))
    errors: list[BaseException] = []
    stop = threading.Event()

    def search_loop() -> None:  # a reader of the same store all through the reseal
        try:
            while not stop.is_set():
                assert matches(searching, gid, centres, 5)
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=search_loop)
    reader.start()
    try:
        assert both.reseal(gid) is True
        assert both.reseal(gid) is False, "already under the newest key"
    finally:
        stop.set()
        reader.join()
    assert not errors

    info = both.info(gid)
    assert (info.version, info.key_id, info.content_hash) == (2, new.key_id, gallery_draft.content_hash)
    only_new = backend.open(key=new)  # the old key can go: nothing needs it any more
    assert matches(only_new, gid, centres, 5) and matches(only_new, gid, centres, 17)
    assert only_new.verify(gid).ok
    assert [t.traveler_id for t in only_new.travelers(gid)][:2] == ["T0000", "T0001"], "rows moved along"
    assert len(only_new.provenance(gid)) == 40 and only_new.failures(gid)[0].reason == "no_face"
    for name, data in backend.bytes_at_rest().items() if not backend.is_database else {}.items():
        assert old_blob not in data, f"{name}: the old ciphertext is shredded"
    with pytest.raises(MissingKeyError, match=new.key_id):
        backend.open(key=old).load(gid, now=BEFORE)


def test_a_store_with_keys_refuses_a_plaintext_gallery_and_keeps_serving_the_others(
    backend: StoreBackend,
) -> None:
    key = new_key()
    plain_draft, plain_centres = draft(tag="P")
    plain = backend.open().write(plain_draft, now=BEFORE).info.gallery_id  # e.g. from an earlier gatematch
    sealed_draft, sealed_centres = draft(flight="GM202", tag="S", seed=1)
    store = backend.open(key=key)
    sealed = store.write(sealed_draft, now=BEFORE).info.gallery_id
    for _ in range(2):  # quarantined: the same refusal at once the second time
        with pytest.raises(PlaintextGalleryError, match=r"plaintext.*keys rotate"):
            store.load(plain, now=BEFORE)
    assert matches(store, sealed, sealed_centres, 3, "S")
    check = store.verify(plain)
    assert not check.ok and "plaintext" in check.problem

    assert store.reseal(plain) is True  # `gatematch keys rotate` encrypts it
    assert store.info(plain).encrypted and store.info(plain).key_id == key.key_id
    assert matches(store, plain, plain_centres, 4, "P") and store.verify(plain).ok
    for name, data in backend.bytes_at_rest().items() if not backend.is_database else {}.items():
        assert plain_draft.templates[0].embedding.tobytes() not in data, name


def test_a_key_added_to_the_key_file_is_picked_up_by_a_running_store(
    tmp_path: Path, backend: StoreBackend
) -> None:
    """Another host (or `gatematch keys create` + `rotate`) reseals under a key this store's file did not have:
    the gallery is refused with the missing key named, then served as soon as the file holds that key."""
    ours = KeyFile.create(tmp_path / "ours.json")
    gallery_draft, centres = draft()
    serving = backend.open(key=ours)
    gid = serving.write(gallery_draft, now=BEFORE).info.gallery_id
    assert matches(serving, gid, centres, 1)

    shutil.copy(ours.path, tmp_path / "theirs.json")
    theirs = KeyFile(tmp_path / "theirs.json")
    added = theirs.add()
    assert backend.open(key=theirs).reseal(gid)
    for _ in range(2):
        with pytest.raises(MissingKeyError, match=f"{added.key_id} is not in the key file ours.json"):
            serving.load(gid, now=BEFORE)
    shutil.copy(theirs.path, ours.path)  # the operator copies the new key file in
    assert matches(serving, gid, centres, 1)
    assert serving.write(draft(seed=2)[0], now=BEFORE).info.key_id == added.key_id, "the newest key seals"


def test_key_file_is_owner_only_validated_and_never_replaced(tmp_path: Path) -> None:
    keys = KeyFile.create(tmp_path / "keys.json")
    assert (tmp_path / "keys.json").stat().st_mode & 0o777 == 0o600
    with pytest.raises(TemplateKeyError, match="exists"):
        KeyFile.create(tmp_path / "keys.json")
    first = keys.current()
    second = keys.add()
    assert [e.key_id for e in keys.entries] == [first.key_id, second.key_id] and keys.current() == second
    with pytest.raises(TemplateKeyError, match="newest"):
        keys.retire(second.key_id)
    keys.retire(first.key_id)
    assert [e.key_id for e in KeyFile(keys.path).entries] == [second.key_id]

    (tmp_path / "keys.json").chmod(0o644)
    with pytest.raises(TemplateKeyError, match="other users"):
        KeyFile(tmp_path / "keys.json")
    bad = tmp_path / "bad.json"
    for text, message in (
        ("not json", "not valid JSON"),
        ('{"format": "other"}', "not a gatematch key file"),
        ('{"format": "gatematch-template-keys/1", "keys": []}', "holds no keys"),
        (
            '{"format": "gatematch-template-keys/1", "keys": [{"id": "0000000000000000", "created": "x", '
            f'"key": "{generate_key()}"}}]}}',
            "not the key its id",
        ),
    ):
        bad.write_text(text)
        bad.chmod(0o600)
        with pytest.raises(TemplateKeyError, match=message):
            KeyFile(bad)


def test_key_file_may_be_group_readable_only_as_a_secret_volume_gives_it(tmp_path: Path) -> None:
    """What a Kubernetes Secret volume gives a non-root pod (root-owned, group fsGroup, mode 0440) is accepted
    when fsGroup is the process's group; a group-readable file another user owns, another group, anything
    beyond reading for the group and any access for others are refused."""
    need_root("to give a key file root, another user or another group as owner")
    keys = KeyFile.create(tmp_path / "keys.json")  # root-owned, group: this process's
    key_id = keys.current().key_id
    for mode in (0o400, 0o440, 0o640):
        keys.path.chmod(mode)
        assert KeyFile(keys.path).current().key_id == key_id, f"{mode:04o}, root-owned, the process's group"
    for mode, message in ((0o660, "beyond reading"), (0o444, "other users"), (0o604, "other users")):
        keys.path.chmod(mode)
        with pytest.raises(TemplateKeyError, match=message):
            KeyFile(keys.path)
    keys.path.chmod(0o640)
    os.chown(keys.path, 4242, -1)  # another user's file, readable by our group: its owner holds the keys too
    with pytest.raises(TemplateKeyError, match="owner 4242"):
        KeyFile(keys.path)
    keys.path.chmod(0o440)
    os.chown(keys.path, 0, os.getegid() + 4242)
    with pytest.raises(TemplateKeyError, match=rf"group {os.getegid() + 4242}.*fsGroup"):
        KeyFile(keys.path)


def test_the_embedded_store_creates_its_key_file_on_first_use_only(tmp_path: Path) -> None:
    location = tmp_path / "store"
    keys = template_keys(tmp_path / "keys.json", location, create=True)
    assert isinstance(keys, KeyFile) and keys.path.exists()
    key_id = SQLiteGalleryStore(location, keys).write(draft()[0], now=BEFORE).info.key_id
    keys.path.unlink()  # the key file lost: a new key must not be made over encrypted galleries
    with pytest.raises(TemplateKeyError, match=f"sealed under keys {key_id}"):
        template_keys(tmp_path / "keys.json", location, create=True)
    assert template_keys(tmp_path / "keys.json", location, create=False) is None
    with pytest.raises(TemplateKeyError, match="every replica"):
        template_keys(tmp_path / "keys.json", "postgresql://db.example/galleries", create=True)


def test_the_environment_key_overrides_the_key_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    KeyFile.create(tmp_path / "keys.json")
    text = generate_key()
    monkeypatch.setenv("GATEMATCH_TEMPLATE_KEY", text)
    keys = template_keys(tmp_path / "keys.json", tmp_path / "store", create=True)
    assert keys.current().key_id == TemplateKey.from_base64(text).key_id


# -- retention: the store enforces its policy ---------------------------------------------------------------


def test_retention_over_the_maximum_or_a_departure_beyond_the_horizon_is_refused(
    backend: StoreBackend,
) -> None:
    store = backend.open(retention=RetentionPolicy(maximum=timedelta(hours=12), horizon=timedelta(days=14)))
    gallery_draft, _ = draft()
    with pytest.raises(RetentionError, match=r"retention 13 h .* \(0, 12 h\]"):
        store.write(gallery_draft, now=BEFORE, retention=timedelta(hours=13))
    with pytest.raises(RetentionError, match="more than 336 h ahead"):
        store.write(gallery_draft, now=DEPARTURE - timedelta(days=15))
    assert store.galleries() == []
    assert store.write(gallery_draft, now=DEPARTURE - timedelta(days=13)).info.expires_at == (
        DEPARTURE + timedelta(hours=12)
    )


def test_expired_data_is_unreadable_until_purged(backend: StoreBackend) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    departure = now - timedelta(hours=13)  # departed 13 h ago: expired an hour ago
    gallery_draft, _ = draft()
    gallery_draft = replace(gallery_draft, departure=departure)
    store = backend.open()
    gid = store.write(gallery_draft, now=departure - timedelta(hours=2)).info.gallery_id
    info = store.info(gid)
    assert info.expired() and info.failed_travelers == (), "no traveler id once expired"
    assert (info.travelers, info.templates) == (20, 40), "counts and times stay until the purge"
    for read in (store.travelers, store.failures, store.provenance, store.load):
        with pytest.raises(GalleryExpiredError, match="no longer readable"):
            read(gid)
    assert store.purge_expired() == [gid]


# -- no photo paths ------------------------------------------------------------------------------------------


def test_the_store_keeps_no_photo_paths(backend: StoreBackend) -> None:
    gallery_draft, _ = draft()  # its templates and failure name files under /photos/
    assert all(t.photo.startswith("/photos/") for t in gallery_draft.templates)
    gid = backend.open().write(gallery_draft, now=BEFORE).info.gallery_id
    assert backend.rows_naming("/photos/") == 0
    store = backend.open()
    first = store.provenance(gid)[0]
    assert first.photo == f"sha256:{gallery_draft.templates[0].photo_sha256[:16]}"
    assert store.failures(gid)[0].photo == ""


def test_a_store_made_by_an_earlier_gatematch_loses_its_photo_paths(tmp_path: Path) -> None:
    store = SQLiteGalleryStore(tmp_path)
    gid = store.write(draft()[0], now=BEFORE).info.gallery_id
    with sqlite3.connect(tmp_path / DB_NAME) as con:  # as version 1 of the schema kept them
        con.execute("UPDATE templates SET photo = '/photos/' || traveler_id || '.jpg'")
        con.execute("UPDATE failures SET photo = '/photos/noface.jpg'")
        con.execute("PRAGMA user_version = 1")
        columns = [r[1] for r in con.execute("PRAGMA table_info(galleries)")]
    assert "key_id" in columns
    with sqlite3.connect(tmp_path / DB_NAME) as con:  # and without the key id column
        con.executescript(
            "CREATE TABLE g2 AS SELECT gallery_id, version, flight_id, departure, created_at, expires_at, pack,"
            " model_hashes, embedder_name, embedder_sha256, dim, index_kind, encrypted, content_hash,"
            " index_file, index_sha256 FROM galleries; DROP TABLE galleries; ALTER TABLE g2 RENAME TO galleries;"
        )
    reopened = SQLiteGalleryStore(tmp_path)
    assert reopened.provenance(gid)[0].photo.startswith("sha256:")
    assert reopened.info(gid).key_id == "" and reopened.load(gid, now=BEFORE).info.version == 1
    assert StoreBackend(str(tmp_path)).rows_naming("/photos/") == 0
