"""The embedded gallery store: one SQLite file for metadata plus one FAISS index file per gallery version.

Why this shape: a gate needs no database server, and a departure's gallery is small, written once and read many
times. Atomicity comes from ordering, not from locking readers out:
  1. the new index file is written beside the old one (temp file, fsync, rename, directory fsync);
  2. one SQLite transaction inserts the new version's rows and points the gallery at the new file;
  3. only then are the old version's rows and file removed.
A crash before step 2 leaves the old version fully intact plus an orphan file, which the next writer or
`SQLiteGalleryStore()` removes (under the write lock, so never a file another writer is about to commit).
Readers take one read transaction for the metadata and then load the file it names, checked against the
sha256 recorded with it; if a writer removed or is zero-filling that file in between, they read again, so they
only ever see a complete version (and a tampered or rotted file is quarantined, never searched).

A camera frame asks for its flight's current gallery: while no connection (of this process or another) has
committed a write since the last read, the answer is the one read then. SQLite's own file change counter (header
bytes 24-27, bumped by every committed write in rollback-journal mode, read through a descriptor held open) says
so for a few microseconds, where reading the rows again took two connections and six queries (0.84 ms p50;
measured in DESIGN.md).

Templates (the only biometric data) live only in the index file; with keys they are encrypted there (AES-GCM,
associated data = gallery id and version) and the index is rebuilt in memory from the decrypted bytes.
Deleted rows are overwritten (`secure_delete`) and purged files are zero-filled before unlinking. A damaged
database (a corrupted page) is a GalleryStoreError naming the store, never a raw sqlite3 exception.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from gatematch.atomicfile import TMP_MARK, write_atomic
from gatematch.errors import (
    AssignmentNotFoundError,
    GalleryDamagedError,
    GalleryNotFoundError,
    GalleryStoreError,
    TemplateKeyError,
)
from gatematch.gallery import (
    EnrollmentFailure,
    Gallery,
    GalleryInfo,
    ModelRef,
    index_kind_for,
    iso,
    parse_iso,
)
from gatematch.gallery_store import (
    DEFAULT_RETENTION,
    GALLERY_ID,
    GalleryCheck,
    GalleryDraft,
    Quarantine,
    RetentionPolicy,
    Stamp,
    TemplateProvenance,
    TravelerRecord,
    WriteResult,
    check_base,
    check_index,
    expired_view,
    open_snapshot,
    photo_reference,
    plain_index,
    refuse_expired,
    refuse_plaintext_over_encrypted,
    reseal_index,
    seal_index,
    stored_reference,
)
from gatematch.gates import ASSIGNMENT_COLUMNS, KEEP_ENDED, AssignResult, GateAssignment, assignment_of
from gatematch.template_crypto import KeyProvider, Keyring, TemplateKey

LOG = logging.getLogger(__name__)
DB_NAME = "galleries.sqlite"
INDEX_SUFFIXES = (".faiss", ".faiss.enc")
# The names this store gives its index files (final or written aside); nothing else in the folder is ours.
INDEX_FILE = re.compile(rf"{GALLERY_ID.pattern}\.v\d+\.faiss(\.enc)?({re.escape(TMP_MARK)}\w+)?")

SCHEMA = """
CREATE TABLE IF NOT EXISTS galleries (
    gallery_id TEXT PRIMARY KEY, version INTEGER NOT NULL, flight_id TEXT NOT NULL, departure TEXT NOT NULL,
    created_at TEXT NOT NULL, expires_at TEXT NOT NULL, pack TEXT NOT NULL, model_hashes TEXT NOT NULL,
    embedder_name TEXT NOT NULL, embedder_sha256 TEXT NOT NULL, dim INTEGER NOT NULL, index_kind TEXT NOT NULL,
    encrypted INTEGER NOT NULL, content_hash TEXT NOT NULL, index_file TEXT NOT NULL,
    index_sha256 TEXT NOT NULL, direction TEXT NOT NULL DEFAULT 'departure', key_id TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS travelers (
    gallery_id TEXT NOT NULL, version INTEGER NOT NULL, position INTEGER NOT NULL, traveler_id TEXT NOT NULL,
    document_type TEXT, PRIMARY KEY (gallery_id, version, traveler_id));
CREATE TABLE IF NOT EXISTS templates (
    gallery_id TEXT NOT NULL, version INTEGER NOT NULL, row INTEGER NOT NULL, traveler_id TEXT NOT NULL,
    photo TEXT NOT NULL, photo_sha256 TEXT NOT NULL, quality TEXT NOT NULL, created_at TEXT NOT NULL,
    PRIMARY KEY (gallery_id, version, row));
CREATE TABLE IF NOT EXISTS failures (
    gallery_id TEXT NOT NULL, version INTEGER NOT NULL, traveler_id TEXT NOT NULL, photo TEXT NOT NULL,
    reason TEXT NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS failures_by_gallery ON failures (gallery_id, version);
CREATE TABLE IF NOT EXISTS gate_assignments (
    assignment_id INTEGER PRIMARY KEY AUTOINCREMENT, gate_id TEXT NOT NULL, flight_id TEXT NOT NULL,
    starts_at TEXT NOT NULL, ends_at TEXT NOT NULL, assigned_by TEXT NOT NULL, assigned_at TEXT NOT NULL,
    released_at TEXT, released_by TEXT NOT NULL DEFAULT '');
"""
# Columns added since a store's tables may have been created: (table, column, definition). Stores of
# different ages add them in different orders, so rows are always written with their columns named.
ADDED_COLUMNS = (
    ("galleries", "direction", "TEXT NOT NULL DEFAULT 'departure'"),
    ("galleries", "key_id", "TEXT NOT NULL DEFAULT ''"),
)
GALLERY_COLUMNS = (
    "gallery_id, version, flight_id, departure, created_at, expires_at, pack, model_hashes, embedder_name,"
    " embedder_sha256, dim, index_kind, encrypted, content_hash, index_file, index_sha256, direction, key_id"
)
CHILD_TABLES = ("travelers", "templates", "failures")
# PRAGMA user_version: 2 = photos named by content hash (version 1 kept manifest paths).
SCHEMA_VERSION = 2
MIGRATE_TO_2 = (
    "UPDATE templates SET photo = 'sha256:' || substr(photo_sha256, 1, 16)",
    "UPDATE failures SET photo = ''",
)


def _shred(path: Path) -> None:
    """Zero-fill then unlink: on simple file systems the template bytes do not linger in free blocks."""
    with contextlib.suppress(FileNotFoundError):
        size = path.stat().st_size
        with open(path, "r+b") as handle:
            handle.write(b"\0" * size)
            handle.flush()
            os.fsync(handle.fileno())
        path.unlink()


class SQLiteGalleryStore:
    """Galleries of one site in one directory. Safe for many threads and processes; every call is one
    short SQLite transaction, and loaded snapshots are cached per version."""

    def __init__(
        self,
        root: Path,
        key: KeyProvider | TemplateKey | None = None,
        retention: RetentionPolicy | timedelta = DEFAULT_RETENTION,
    ) -> None:
        self.root = Path(root)
        self.location = str(self.root)
        self.keys = Keyring.of(key)
        self.policy = RetentionPolicy.of(retention)
        self.retention = self.policy.default
        self.reachable = True  # a local file: there is no server to lose
        self._cache: dict[str, tuple[Stamp, Gallery]] = {}
        self._cache_lock = threading.Lock()
        # what was read while the database file's change counter had this value (see `_change_counter`)
        self._read_at: bytes | None = None
        self._header: int | None = None  # a read-only descriptor of the database file, for its change counter
        self._header_closer: weakref.finalize | None = None  # closes it when the store is dropped unclosed
        self._listed: dict[str | None, list[GalleryInfo]] = {}
        # each gallery's current version (stamp) as read while the change counter was _read_at: a cached
        # snapshot answers a lookup from memory only if it is that version (a slower lookup may have cached
        # an older one after a faster one read the newer)
        self._current: dict[str, Stamp] = {}
        self.quarantine = Quarantine()
        try:
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            with self._transaction(write=True) as con:
                self._create_schema(con)
                self._collect_orphans(con)
            os.chmod(self.root / DB_NAME, 0o600)  # biometric metadata: owner only
        except OSError as exc:
            raise GalleryStoreError(f"gallery store {self.root} cannot be opened: {exc}") from None
        except GalleryStoreError as exc:
            raise GalleryStoreError(
                f"gallery store {self.root} cannot be opened: {exc}", exc.detail
            ) from None

    def close(self) -> None:
        """Only the descriptor the change counter is read through stays open between calls."""
        with self._cache_lock:
            self._drop_header()

    def _drop_header(self) -> None:
        """Close the change counter's descriptor (under the cache lock)."""
        if self._header_closer is not None:
            self._header_closer()
        self._header, self._header_closer = None, None

    def _change_counter(self) -> bytes | None:
        """SQLite's file change counter: unchanged means no committed write since it was last read. None when it
        cannot say (WAL mode leaves it alone; an unreadable header): then every read goes to the database."""
        try:
            with self._cache_lock:
                if self._header is not None and os.fstat(self._header).st_nlink == 0:
                    self._drop_header()  # the file was deleted or replaced: read the one there now
                if self._header is None:
                    self._header = os.open(self.root / DB_NAME, os.O_RDONLY | os.O_CLOEXEC)
                    self._header_closer = weakref.finalize(self, os.close, self._header)
                header = os.pread(self._header, 28, 0)
        except OSError:
            return None
        if len(header) < 28 or header[18] == 2:  # file format write version 2: WAL
            return None
        return header[24:28]

    def _unchanged(self) -> bytes | None:
        """The change counter now; what was read under another value is forgotten."""
        counter = self._change_counter()
        with self._cache_lock:
            if counter is None or counter != self._read_at:
                self._read_at = counter
                self._listed, self._current = {}, {}
        return counter

    @staticmethod
    def _create_schema(con: sqlite3.Connection) -> None:
        """Create the tables, or bring a store made by an earlier gatematch up to SCHEMA_VERSION (its photo
        paths are overwritten: secure_delete is on)."""
        (version,) = con.execute("PRAGMA user_version").fetchone()
        existing = con.execute("SELECT 1 FROM sqlite_master WHERE name = 'galleries'").fetchone()
        for statement in SCHEMA.split(";"):
            con.execute(statement)
        for table, column, definition in ADDED_COLUMNS:
            if column not in {row[1] for row in con.execute(f"PRAGMA table_info({table})")}:
                con.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
        if existing and version < SCHEMA_VERSION:
            for statement in MIGRATE_TO_2:
                con.execute(statement)
        con.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- connections -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """One transaction; a damaged database file is a GalleryStoreError, never a raw sqlite3 error."""
        try:
            con = sqlite3.connect(self.root / DB_NAME, timeout=30.0, isolation_level=None)
            try:
                con.execute(
                    "PRAGMA secure_delete = ON"
                )  # deleted rows are overwritten, not left in free pages
                con.execute("BEGIN IMMEDIATE" if write else "BEGIN")
                try:
                    yield con
                except BaseException:
                    con.execute("ROLLBACK")
                    raise
                con.execute("COMMIT")
            finally:
                con.close()
        except sqlite3.DatabaseError as exc:
            raise GalleryStoreError("the gallery database is damaged or unreadable", str(exc)) from None

    def _collect_orphans(self, con: sqlite3.Connection) -> None:
        """Remove index files no gallery points at (left by a crash). Caller holds the write lock."""
        live = {row[0] for row in con.execute("SELECT index_file FROM galleries")}
        for path in self.root.iterdir():
            if INDEX_FILE.fullmatch(path.name) and path.name not in live:
                _shred(path)

    # -- writing -------------------------------------------------------------------------------------------

    def write(
        self,
        draft: GalleryDraft,
        now: datetime | None = None,
        retention: timedelta | None = None,
        *,
        base: Stamp | None = None,
    ) -> WriteResult:
        """Make `draft` the gallery's current version, atomically; a no-op if the content is unchanged.
        With `base`, only if the current version is still that one (GalleryConflictError otherwise)."""
        now = (now or datetime.now(UTC)).astimezone(UTC)
        expires = self.policy.expiry(draft.departure, retention, now)
        gid = draft.gallery_id
        dim = draft.dim
        vectors = np.asarray([t.embedding for t in draft.templates], dtype=np.float32).reshape(-1, dim)
        encrypted = self.keys is not None
        old_file: str | None = None
        with self._transaction(write=True) as con:
            if self._is_current(con, gid, draft.content_hash):
                return WriteResult(self._info(con, gid), unchanged=True)
            current = con.execute(
                "SELECT version, index_file, encrypted, content_hash FROM galleries WHERE gallery_id = ?",
                (gid,),
            ).fetchone()
            check_base(gid, (current[0], current[3]) if current else None, base)
            refuse_plaintext_over_encrypted(gid, current and bool(current[2]), self.keys)
            self._collect_orphans(con)
            version = current[0] + 1 if current else 1
            kind = index_kind_for(len(vectors))
            sealed = seal_index(vectors, kind, self.keys, gid, version)
            index_file = self._index_name(gid, version, encrypted)
            write_atomic(self.root / index_file, sealed.data)
            if current:
                old_file = current[1]
                for table in CHILD_TABLES:
                    con.execute(f"DELETE FROM {table} WHERE gallery_id = ?", (gid,))
            con.execute(
                f"INSERT OR REPLACE INTO galleries ({GALLERY_COLUMNS})"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    gid,
                    version,
                    draft.flight_id,
                    iso(draft.departure),
                    iso(now),
                    iso(expires),
                    draft.pack,
                    json.dumps(draft.model_hashes, sort_keys=True),
                    draft.embedder.name,
                    draft.embedder.sha256,
                    dim,
                    kind,
                    int(encrypted),
                    draft.content_hash,
                    index_file,
                    hashlib.sha256(sealed.data).hexdigest(),
                    draft.direction,
                    sealed.key_id,
                ),
            )
            con.executemany(
                "INSERT INTO travelers VALUES (?,?,?,?,?)",
                [(gid, version, i, t.traveler_id, t.document_type) for i, t in enumerate(draft.travelers)],
            )
            con.executemany(
                "INSERT INTO templates VALUES (?,?,?,?,?,?,?,?)",
                [
                    (
                        gid,
                        version,
                        row,
                        t.traveler_id,
                        photo_reference(t.photo_sha256),
                        t.photo_sha256,
                        json.dumps(t.quality, default=float),
                        iso(now),
                    )
                    for row, t in enumerate(draft.templates)
                ],
            )
            con.executemany(
                "INSERT INTO failures VALUES (?,?,?,?,?,?)",
                [
                    (gid, version, f.traveler_id, stored_reference(f.photo), f.reason, f.detail)
                    for f in draft.failures
                ],
            )
            info = self._info(con, gid)
        if old_file and old_file != index_file:
            _shred(self.root / old_file)
        return WriteResult(info, unchanged=False)

    @staticmethod
    def _index_name(gallery_id: str, version: int, encrypted: bool) -> str:
        return f"{gallery_id}.v{version}{INDEX_SUFFIXES[1] if encrypted else INDEX_SUFFIXES[0]}"

    def reseal(self, gallery_id: str) -> bool:
        """Re-encrypt the current version under the newest key as version + 1 (same rows, same content hash),
        switched in one transaction like any write; the old file is shredded. False when already sealed so."""
        if self.keys is None:
            raise TemplateKeyError("resealing galleries needs the template keys")
        with self._transaction(write=True) as con:
            info = self._info(con, gallery_id)
            index_file, index_sha256, key_id = con.execute(
                "SELECT index_file, index_sha256, key_id FROM galleries WHERE gallery_id = ?", (gallery_id,)
            ).fetchone()
            if info.encrypted and key_id == self.keys.current().key_id:
                return False
            try:
                data = (self.root / index_file).read_bytes()
            except OSError:
                raise GalleryDamagedError(f"gallery {gallery_id}: its index file cannot be read") from None
            plain = plain_index(info, data, index_sha256, None if not info.encrypted else self.keys)
            version = info.version + 1
            sealed = reseal_index(plain, self.keys, gallery_id, version)
            new_file = self._index_name(gallery_id, version, encrypted=True)
            write_atomic(self.root / new_file, sealed.data)
            for table in CHILD_TABLES:
                con.execute(f"UPDATE {table} SET version = ? WHERE gallery_id = ?", (version, gallery_id))
            con.execute(
                "UPDATE galleries SET version = ?, encrypted = 1, index_file = ?, index_sha256 = ?, key_id = ?"
                " WHERE gallery_id = ?",
                (version, new_file, hashlib.sha256(sealed.data).hexdigest(), sealed.key_id, gallery_id),
            )
        _shred(self.root / index_file)
        return True

    def _is_current(self, con: sqlite3.Connection, gallery_id: str, content_hash: str) -> bool:
        """The stored version holds this content, encrypted as this store would, and is intact (a damaged or
        quarantined version is replaced by a reload of the same content, not kept as "unchanged")."""
        row = con.execute(
            "SELECT version, content_hash, encrypted, index_file, index_sha256 FROM galleries WHERE gallery_id = ?",
            (gallery_id,),
        ).fetchone()
        if row is None or row[1] != content_hash or bool(row[2]) != (self.keys is not None):
            return False
        if self.quarantine.holds(gallery_id, (row[0], row[1])):
            return False
        try:
            return hashlib.sha256((self.root / row[3]).read_bytes()).hexdigest() == row[4]
        except OSError:
            return False

    def check_replaceable(self, gallery_id: str) -> None:
        with self._transaction() as con:
            row = con.execute(
                "SELECT encrypted FROM galleries WHERE gallery_id = ?", (gallery_id,)
            ).fetchone()
        refuse_plaintext_over_encrypted(gallery_id, row is not None and bool(row[0]), self.keys)

    def is_current(self, gallery_id: str, content_hash: str) -> bool:
        with self._transaction() as con:
            return self._is_current(con, gallery_id, content_hash)

    # -- reading -------------------------------------------------------------------------------------------

    def _info(self, con: sqlite3.Connection, gallery_id: str) -> GalleryInfo:
        row = con.execute(
            "SELECT version, flight_id, departure, created_at, expires_at, pack, model_hashes, embedder_name,"
            " embedder_sha256, dim, index_kind, encrypted, content_hash, direction, key_id FROM galleries"
            " WHERE gallery_id = ?",
            (gallery_id,),
        ).fetchone()
        if row is None:
            raise GalleryNotFoundError(f"no gallery '{gallery_id}' in the store")
        version = row[0]
        travelers = con.execute(
            "SELECT COUNT(DISTINCT traveler_id), COUNT(*) FROM templates WHERE gallery_id = ? AND version = ?",
            (gallery_id, version),
        ).fetchone()
        failed = con.execute(
            "SELECT traveler_id FROM travelers WHERE gallery_id = ? AND version = ? AND traveler_id NOT IN"
            " (SELECT traveler_id FROM templates WHERE gallery_id = ? AND version = ?) ORDER BY position",
            (gallery_id, version, gallery_id, version),
        ).fetchall()
        (failures,) = con.execute(
            "SELECT COUNT(*) FROM failures WHERE gallery_id = ? AND version = ?", (gallery_id, version)
        ).fetchone()
        info = GalleryInfo(
            gallery_id=gallery_id,
            version=version,
            flight_id=row[1],
            departure=parse_iso(row[2]),
            created_at=parse_iso(row[3]),
            expires_at=parse_iso(row[4]),
            pack=row[5],
            model_hashes=json.loads(row[6]),
            embedder=ModelRef(row[7], row[8]),
            dim=row[9],
            travelers=travelers[0],
            templates=travelers[1],
            failed_travelers=tuple(r[0] for r in failed),
            failures=failures,
            index_kind=row[10],
            encrypted=bool(row[11]),
            content_hash=row[12],
            direction=row[13],
            key_id=row[14],
        )
        return expired_view(info)

    def info(self, gallery_id: str) -> GalleryInfo:
        with self._transaction() as con:
            return self._info(con, gallery_id)

    def galleries(self, flight_id: str | None = None) -> list[GalleryInfo]:
        """Every gallery, or only those of one flight (the service resolves a camera's flight per frame)."""
        counter = self._unchanged()
        with self._cache_lock:
            listed = self._listed.get(flight_id) if counter is not None else None
        if listed is not None:
            return list(listed)
        where, args = ("WHERE flight_id = ? ", (flight_id,)) if flight_id is not None else ("", ())
        with self._transaction() as con:
            ids = [
                r[0]
                for r in con.execute(
                    f"SELECT gallery_id FROM galleries {where}ORDER BY departure, gallery_id", args
                )
            ]
            infos = [self._info(con, gid) for gid in ids]
        with self._cache_lock:
            if counter is not None and counter == self._read_at:
                self._listed[flight_id] = infos
        return list(infos)

    def _readable_version(self, con: sqlite3.Connection, gallery_id: str) -> int:
        info = self._info(con, gallery_id)
        refuse_expired(info)
        return info.version

    def failures(self, gallery_id: str) -> list[EnrollmentFailure]:
        with self._transaction() as con:
            version = self._readable_version(con, gallery_id)
            rows = con.execute(
                "SELECT traveler_id, photo, reason, detail FROM failures WHERE gallery_id = ? AND version = ?"
                " ORDER BY rowid",
                (gallery_id, version),
            ).fetchall()
        return [EnrollmentFailure(*row) for row in rows]

    def travelers(self, gallery_id: str) -> list[TravelerRecord]:
        """Every traveler of the manifest, in manifest order (including those that failed to enroll)."""
        with self._transaction() as con:
            version = self._readable_version(con, gallery_id)
            rows = con.execute(
                "SELECT traveler_id, document_type FROM travelers WHERE gallery_id = ? AND version = ?"
                " ORDER BY position",
                (gallery_id, version),
            ).fetchall()
        return [TravelerRecord(*row) for row in rows]

    def provenance(self, gallery_id: str) -> list[TemplateProvenance]:
        with self._transaction() as con:
            version = self._readable_version(con, gallery_id)
            rows = con.execute(
                "SELECT row, traveler_id, photo, photo_sha256, quality, created_at FROM templates"
                " WHERE gallery_id = ? AND version = ? ORDER BY row",
                (gallery_id, version),
            ).fetchall()
        return [TemplateProvenance(r[0], r[1], r[2], r[3], json.loads(r[4]), parse_iso(r[5])) for r in rows]

    def load(self, gallery_id: str, now: datetime | None = None) -> Gallery:
        """An immutable snapshot of the current version (cached until a new version is written).

        Called for every frame a camera sends: with no write since the last read a cache hit costs the change
        counter's read, else one indexed row read; the traveler rows and the index file are only read when the
        version changed. A damaged version is quarantined: asked again, it fails at once with the same error
        until a new version replaces it.
        """
        counter = self._unchanged()
        with self._cache_lock:
            cached = self._cache.get(gallery_id)
            current = self._current.get(gallery_id)
        if cached is not None and counter is not None and cached[0] == current:
            refuse_expired(cached[1].info, now)
            return cached[1]
        stamp, gallery = self._load(gallery_id, now)
        with self._cache_lock:
            if counter is not None and counter == self._read_at:
                self._current[gallery_id] = stamp
        return gallery

    def _load(self, gallery_id: str, now: datetime | None) -> tuple[Stamp, Gallery]:
        """The current version's stamp and snapshot, from the cache when it holds that version."""
        for _attempt in range(3):
            with self._transaction() as con:
                row = con.execute(
                    "SELECT version, content_hash, index_file, index_sha256 FROM galleries WHERE gallery_id = ?",
                    (gallery_id,),
                ).fetchone()
                if row is None:
                    raise GalleryNotFoundError(f"no gallery '{gallery_id}' in the store")
                stamp, index_file, index_sha256 = (row[0], row[1]), row[2], row[3]
                with self._cache_lock:
                    cached = self._cache.get(gallery_id)
                if cached and cached[0] == stamp:
                    info, owners = cached[1].info, None
                else:
                    info = self._info(con, gallery_id)
                    owners = self._owners(con, gallery_id, info.version)
            refuse_expired(info, now)
            if owners is None:
                return stamp, cached[1]
            self.quarantine.check(gallery_id, stamp, self.keys)
            try:
                data = (self.root / index_file).read_bytes()
            except FileNotFoundError:
                continue  # replaced by a newer version between our read and the file open: read again
            if hashlib.sha256(data).hexdigest() != index_sha256:
                continue  # being shredded by a writer (or altered): read the current version again
            try:
                gallery = open_snapshot(info, data, index_sha256, owners, self.keys)
            except (GalleryStoreError, TemplateKeyError) as exc:
                self.quarantine.hold(gallery_id, stamp, exc)
                raise
            self.quarantine.release(gallery_id)
            with self._cache_lock:
                self._cache[gallery_id] = (stamp, gallery)
            return stamp, gallery
        error = GalleryDamagedError(
            f"gallery {gallery_id}: its index file is missing or does not match its recorded sha256"
        )
        self.quarantine.hold(gallery_id, stamp, error)
        raise error

    @staticmethod
    def _owners(con: sqlite3.Connection, gallery_id: str, version: int) -> list[str]:
        return [
            r[0]
            for r in con.execute(
                "SELECT traveler_id FROM templates WHERE gallery_id = ? AND version = ? ORDER BY row",
                (gallery_id, version),
            )
        ]

    def verify(self, gallery_id: str) -> GalleryCheck:
        """Read the current version back: every row, and the index file against its sha256 (decrypted with
        the key when there is one). Does not use or fill the snapshot cache."""
        try:
            with self._transaction() as con:
                info = self._info(con, gallery_id)
                index_file, index_sha256 = con.execute(
                    "SELECT index_file, index_sha256 FROM galleries WHERE gallery_id = ?", (gallery_id,)
                ).fetchone()
                owners = self._owners(con, gallery_id, info.version)
                for table in CHILD_TABLES:
                    con.execute(f"SELECT * FROM {table} WHERE gallery_id = ?", (gallery_id,)).fetchall()
            try:
                data = (self.root / index_file).read_bytes()
            except OSError as exc:
                raise GalleryDamagedError(
                    f"gallery {gallery_id}: index file {index_file}: {exc.strerror}"
                ) from None
            return check_index(info, data, index_sha256, owners, self.keys)
        except GalleryNotFoundError:
            raise
        except (GalleryStoreError, TemplateKeyError) as exc:
            return GalleryCheck(gallery_id, str(exc))

    # -- retention -----------------------------------------------------------------------------------------

    def purge(self, gallery_id: str) -> None:
        """Delete a gallery's rows and files now (rows overwritten by secure_delete, file zero-filled)."""
        with self._transaction(write=True) as con:
            row = con.execute(
                "SELECT index_file FROM galleries WHERE gallery_id = ?", (gallery_id,)
            ).fetchone()
            if row is None:
                raise GalleryNotFoundError(f"no gallery '{gallery_id}' in the store")
            for table in (*CHILD_TABLES, "galleries"):
                con.execute(f"DELETE FROM {table} WHERE gallery_id = ?", (gallery_id,))
            # Its index file, and any earlier version's file a crashed writer left behind, are orphans now.
            self._collect_orphans(con)
        with self._cache_lock:
            self._cache.pop(gallery_id, None)
        self.quarantine.release(gallery_id)

    def purge_expired(self, now: datetime | None = None) -> list[str]:
        """Purge every gallery whose retention is over; returns their ids. Run by the CLI and the service timer."""
        moment = iso(now or datetime.now(UTC))
        with self._transaction() as con:
            due = [
                r[0] for r in con.execute("SELECT gallery_id FROM galleries WHERE expires_at <= ?", (moment,))
            ]
        purged = []
        for gid in due:
            with contextlib.suppress(GalleryNotFoundError):  # another process purged it first
                self.purge(gid)
                purged.append(gid)
        return purged

    # -- run-time gate assignments -------------------------------------------------------------------------

    def assign_gate(
        self,
        gate_id: str,
        flight_id: str,
        starts_at: datetime,
        ends_at: datetime,
        by: str,
        *,
        replace: bool = False,
        now: datetime | None = None,
    ) -> AssignResult:
        now = now or datetime.now(UTC)
        released: list[GateAssignment] = []
        with self._transaction(write=True) as con:
            con.execute("DELETE FROM gate_assignments WHERE ends_at < ?", (iso(now - KEEP_ENDED),))
            if replace:
                for other in self._assignments(con, now, gate_id):
                    if other.overlaps(starts_at, ends_at):
                        released.append(self._release(con, other.assignment_id, by, now))
            cursor = con.execute(
                "INSERT INTO gate_assignments (gate_id, flight_id, starts_at, ends_at, assigned_by, assigned_at)"
                " VALUES (?,?,?,?,?,?)",
                (gate_id, flight_id, iso(starts_at), iso(ends_at), by, iso(now)),
            )
            made = self._assignment(con, cursor.lastrowid)
        return AssignResult(made, tuple(released))

    def release_gate(self, assignment_id: int, by: str, now: datetime | None = None) -> GateAssignment:
        with self._transaction(write=True) as con:
            return self._release(con, assignment_id, by, now or datetime.now(UTC))

    def gate_assignments(
        self, now: datetime | None = None, gate_id: str | None = None
    ) -> list[GateAssignment]:
        with self._transaction() as con:
            return self._assignments(con, now or datetime.now(UTC), gate_id)

    def _release(self, con: sqlite3.Connection, assignment_id: int, by: str, now: datetime) -> GateAssignment:
        current = self._assignment(con, assignment_id)
        if current.released_at is None:
            con.execute(
                "UPDATE gate_assignments SET released_at = ?, released_by = ? WHERE assignment_id = ?",
                (iso(now), by, assignment_id),
            )
        return self._assignment(con, assignment_id)

    @staticmethod
    def _assignment(con: sqlite3.Connection, assignment_id: int) -> GateAssignment:
        row = con.execute(
            f"SELECT {ASSIGNMENT_COLUMNS} FROM gate_assignments WHERE assignment_id = ?", (assignment_id,)
        ).fetchone()
        if row is None:
            raise AssignmentNotFoundError(f"no gate assignment {assignment_id}")
        return assignment_of(row, parse_iso)

    @staticmethod
    def _assignments(con: sqlite3.Connection, now: datetime, gate_id: str | None) -> list[GateAssignment]:
        where, args = ("AND gate_id = ? ", (gate_id,)) if gate_id is not None else ("", ())
        rows = con.execute(
            f"SELECT {ASSIGNMENT_COLUMNS} FROM gate_assignments WHERE released_at IS NULL AND ends_at > ? "
            f"{where}ORDER BY gate_id, starts_at, assignment_id",
            (iso(now), *args),
        ).fetchall()
        return [assignment_of(row, parse_iso) for row in rows]
