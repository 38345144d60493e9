"""The shared gallery store: PostgreSQL (psycopg 3), for sites that run several service replicas.

Same semantics as the embedded store (gatematch.gallery_store says which): a version is written in ONE
transaction (index bytes, metadata and every row; the previous version's rows go in the same transaction), so
a writer killed at any point leaves the previous version whole; identical content is a no-op; the templates
are the same serialised FAISS index, encrypted under the newest template key with the same associated data,
kept in a bytea column with its sha256 (and the key's id); purges DELETE the rows. Writers of one gallery are
serialised by a transaction-scoped advisory lock; the retention purge takes another one with try-lock, so with
several replicas it runs on one at a time and the others skip that round.

A service replica opens the store with `follow=True`: it keeps every gallery's metadata and a searchable
snapshot (the FAISS index deserialised at load) in memory, so a camera frame never waits on the database, and a
follower thread keeps that mirror current. Every write and purge sends NOTIFY on CHANNEL in its transaction;
the follower LISTENs and, on a notification or every `poll_interval_s` as a fallback, compares each gallery's
(version, content hash) with its mirror and loads what changed. While the database is unreachable the mirror
keeps serving what it has, `on_reachable(False, why)` is called, and the follower reconnects and catches up.

PostgreSQL does not overwrite deleted tuples in place (they stay in table files and the WAL until vacuum and
checkpoints reuse the space), unlike the embedded store's `secure_delete`: templates therefore reach the
database only encrypted (the service always holds keys; every replica needs the same key file).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import numpy as np
import psycopg
from psycopg.conninfo import conninfo_to_dict

from gatematch.errors import (
    AssignmentNotFoundError,
    GalleryExpiredError,
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
CHANNEL = "gatematch_galleries"
POLL_INTERVAL_S = 1.0  # the follower's fallback: compare versions this often even without a notification
RETRY_S = 0.5  # wait between reconnection attempts while the database is unreachable
# libpq settings: a dead server or network is noticed in seconds, not at the kernel's TCP timeout.
CONNECTION = {
    "connect_timeout": 3,
    "application_name": "gatematch",
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    "tcp_user_timeout": 5000,
}
SCHEMA_LOCK = 0x6761_7465_6D61_7401  # advisory lock keys ("gatemat" + n): schema creation, retention purge
PURGE_LOCK = 0x6761_7465_6D61_7402

SCHEMA = """
CREATE TABLE IF NOT EXISTS gatematch_galleries (
    gallery_id text PRIMARY KEY, version integer NOT NULL, flight_id text NOT NULL,
    departure timestamptz NOT NULL, created_at timestamptz NOT NULL, expires_at timestamptz NOT NULL,
    pack text NOT NULL, model_hashes jsonb NOT NULL, embedder_name text NOT NULL, embedder_sha256 text NOT NULL,
    dim integer NOT NULL, index_kind text NOT NULL, encrypted boolean NOT NULL, content_hash text NOT NULL,
    index_sha256 text NOT NULL, index_data bytea NOT NULL, direction text NOT NULL DEFAULT 'departure',
    key_id text NOT NULL DEFAULT '');
ALTER TABLE gatematch_galleries ADD COLUMN IF NOT EXISTS direction text NOT NULL DEFAULT 'departure';
ALTER TABLE gatematch_galleries ADD COLUMN IF NOT EXISTS key_id text NOT NULL DEFAULT '';
CREATE INDEX IF NOT EXISTS gatematch_galleries_by_flight ON gatematch_galleries (flight_id, departure);
CREATE TABLE IF NOT EXISTS gatematch_travelers (
    gallery_id text NOT NULL REFERENCES gatematch_galleries ON DELETE CASCADE, version integer NOT NULL,
    position integer NOT NULL, traveler_id text NOT NULL, document_type text,
    PRIMARY KEY (gallery_id, version, traveler_id));
CREATE TABLE IF NOT EXISTS gatematch_templates (
    gallery_id text NOT NULL REFERENCES gatematch_galleries ON DELETE CASCADE, version integer NOT NULL,
    row integer NOT NULL, traveler_id text NOT NULL, photo text NOT NULL, photo_sha256 text NOT NULL,
    quality jsonb NOT NULL, created_at timestamptz NOT NULL, PRIMARY KEY (gallery_id, version, row));
CREATE TABLE IF NOT EXISTS gatematch_failures (
    gallery_id text NOT NULL REFERENCES gatematch_galleries ON DELETE CASCADE, version integer NOT NULL,
    position integer NOT NULL, traveler_id text NOT NULL, photo text NOT NULL, reason text NOT NULL,
    detail text NOT NULL, PRIMARY KEY (gallery_id, version, position));
CREATE TABLE IF NOT EXISTS gatematch_gate_assignments (
    assignment_id bigserial PRIMARY KEY, gate_id text NOT NULL, flight_id text NOT NULL,
    starts_at timestamptz NOT NULL, ends_at timestamptz NOT NULL, assigned_by text NOT NULL,
    assigned_at timestamptz NOT NULL, released_at timestamptz, released_by text NOT NULL DEFAULT '');
UPDATE gatematch_templates SET photo = 'sha256:' || left(photo_sha256, 16) WHERE photo NOT LIKE 'sha256:%';
UPDATE gatematch_failures SET photo = '' WHERE photo <> '' AND photo NOT LIKE 'sha256:%';
"""
GATES = "gates"  # the NOTIFY payload of a gate assignment change (gallery ids never take this form)
CHILD_TABLES = ("gatematch_travelers", "gatematch_templates", "gatematch_failures")
INFO_COLUMNS = (
    "version, flight_id, departure, created_at, expires_at, pack, model_hashes, embedder_name, embedder_sha256,"
    " dim, index_kind, encrypted, content_hash, direction, key_id"
)


def redact(url: str) -> str:
    """The URL without its password (or anything else but user, host, port and database), for messages."""
    try:
        params = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise GalleryStoreError("the gallery store URL is malformed") from None
    user = f"{params['user']}@" if params.get("user") else ""
    port = f":{params['port']}" if params.get("port") else ""
    return f"postgresql://{user}{params.get('host', '')}{port}/{params.get('dbname', '')}"


def problem(exc: psycopg.Error) -> str:
    """psycopg's message on one line (libpq's can span several)."""
    return " ".join(str(exc).split()) or type(exc).__name__


def lock_key(gallery_id: str) -> int:
    """A signed 64-bit advisory-lock key for one gallery."""
    return int.from_bytes(hashlib.sha256(gallery_id.encode()).digest()[:8], "big", signed=True)


def connect(url: str, **options: object) -> psycopg.Connection:
    """A connection with gatematch's libpq settings; times in UTC."""
    conn = psycopg.connect(url, **CONNECTION, **options)
    conn.execute("SET TIME ZONE 'UTC'")
    if not conn.autocommit:
        conn.commit()
    return conn


class PostgresGalleryStore:
    """Galleries of one site in one PostgreSQL database; see the module docstring. Thread-safe."""

    def __init__(
        self,
        url: str,
        key: KeyProvider | TemplateKey | None = None,
        retention: RetentionPolicy | timedelta = DEFAULT_RETENTION,
        *,
        follow: bool = False,
        on_reachable: Callable[[bool, str], None] | None = None,
        poll_interval_s: float = POLL_INTERVAL_S,
    ) -> None:
        self.location = redact(url)
        self._url = url
        self.keys = Keyring.of(key)
        self.policy = RetentionPolicy.of(retention)
        self.retention = self.policy.default
        self.quarantine = Quarantine()
        self._cache: dict[str, tuple[Stamp, Gallery]] = {}
        self._state = threading.Lock()  # guards the dicts; never held while talking to the database
        self._sync_lock = (
            threading.Lock()
        )  # one mirror update at a time (the follower, or this replica's writes)
        self._catalogue: dict[str, tuple[Stamp, GalleryInfo]] | None = None  # None: not following
        self._gates: list[GateAssignment] = []  # a replica's mirror of the run-time gate assignments
        self._on_reachable = on_reachable
        self.reachable = True
        self._poll_interval_s = poll_interval_s
        self._stopping = threading.Event()
        self._follower: threading.Thread | None = None
        try:
            with self._transaction(write=True) as conn:
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                conn.execute(SCHEMA)
        except GalleryStoreError as exc:
            raise GalleryStoreError(
                f"gallery store {self.location} cannot be opened: {exc}", exc.detail
            ) from None
        if follow:
            self._catalogue = {}
            with self._sync_lock, self._session() as conn:
                self._sync(conn)
            self._follower = threading.Thread(
                target=self._follow, name="gatematch-store-follower", daemon=True
            )
            self._follower.start()

    def close(self) -> None:
        """Stop following (the follower's connection closes within a poll interval)."""
        self._stopping.set()
        if self._follower is not None:
            self._follower.join(self._poll_interval_s + 5)

    # -- connections -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _session(self) -> Iterator[psycopg.Connection]:
        """An autocommit connection; a database that cannot be reached is a GalleryStoreError."""
        try:
            with connect(self._url, autocommit=True) as conn:
                yield conn
        except psycopg.Error as exc:
            raise GalleryStoreError("the gallery database is unreachable or failed", problem(exc)) from None

    @contextlib.contextmanager
    def _transaction(self, write: bool = False) -> Iterator[psycopg.Connection]:
        """One transaction (committed at the end, rolled back on any error); reads see one snapshot."""
        try:
            with connect(self._url) as conn:
                if not write:
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield conn
        except psycopg.Error as exc:
            raise GalleryStoreError("the gallery database is unreachable or failed", problem(exc)) from None

    # -- writing -------------------------------------------------------------------------------------------

    def write(
        self,
        draft: GalleryDraft,
        now: datetime | None = None,
        retention: timedelta | None = None,
        *,
        base: Stamp | None = None,
    ) -> WriteResult:
        """Make `draft` the gallery's current version in one transaction; a no-op if the content is unchanged.
        With `base`, only if the current version is still that one (GalleryConflictError otherwise)."""
        now = parse_iso(iso(now or datetime.now(UTC)))  # stored to the second, as the embedded store does
        expires = self.policy.expiry(draft.departure, retention, now)
        gid = draft.gallery_id
        vectors = np.asarray([t.embedding for t in draft.templates], dtype=np.float32).reshape(-1, draft.dim)
        with self._transaction(write=True) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(gid),))
            current = conn.execute(
                "SELECT version, content_hash, encrypted FROM gatematch_galleries WHERE gallery_id = %s",
                (gid,),
            ).fetchone()
            if self._is_current(conn, gid, draft.content_hash):
                return WriteResult(self._info(conn, gid), unchanged=True)
            check_base(gid, (current[0], current[1]) if current else None, base)
            refuse_plaintext_over_encrypted(gid, current and current[2], self.keys)
            version = current[0] + 1 if current else 1
            kind = index_kind_for(len(vectors))
            sealed = seal_index(vectors, kind, self.keys, gid, version)
            for table in CHILD_TABLES:
                conn.execute(f"DELETE FROM {table} WHERE gallery_id = %s", (gid,))
            conn.execute(
                "INSERT INTO gatematch_galleries (gallery_id, version, flight_id, departure, created_at,"
                " expires_at, pack, model_hashes, embedder_name, embedder_sha256, dim, index_kind, encrypted,"
                " content_hash, index_sha256, index_data, direction, key_id)"
                " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)"
                " ON CONFLICT (gallery_id) DO UPDATE SET version = EXCLUDED.version,"
                " flight_id = EXCLUDED.flight_id, departure = EXCLUDED.departure,"
                " created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at, pack = EXCLUDED.pack,"
                " model_hashes = EXCLUDED.model_hashes, embedder_name = EXCLUDED.embedder_name,"
                " embedder_sha256 = EXCLUDED.embedder_sha256, dim = EXCLUDED.dim,"
                " index_kind = EXCLUDED.index_kind, encrypted = EXCLUDED.encrypted,"
                " content_hash = EXCLUDED.content_hash, index_sha256 = EXCLUDED.index_sha256,"
                " index_data = EXCLUDED.index_data, direction = EXCLUDED.direction, key_id = EXCLUDED.key_id",
                (
                    gid,
                    version,
                    draft.flight_id,
                    parse_iso(iso(draft.departure)),
                    now,
                    parse_iso(iso(expires)),
                    draft.pack,
                    json.dumps(draft.model_hashes, sort_keys=True),
                    draft.embedder.name,
                    draft.embedder.sha256,
                    draft.dim,
                    kind,
                    self.keys is not None,
                    draft.content_hash,
                    hashlib.sha256(sealed.data).hexdigest(),
                    sealed.data,
                    draft.direction,
                    sealed.key_id,
                ),
            )
            self._insert_rows(conn, gid, version, draft, now)
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, gid))
            info = self._info(conn, gid)
        self._refresh(gid)
        return WriteResult(info, unchanged=False)

    @staticmethod
    def _insert_rows(
        conn: psycopg.Connection, gid: str, version: int, draft: GalleryDraft, now: datetime
    ) -> None:
        with conn.cursor() as cur:
            with cur.copy(
                "COPY gatematch_travelers (gallery_id, version, position, traveler_id, document_type) FROM STDIN"
            ) as copy:
                for position, t in enumerate(draft.travelers):
                    copy.write_row((gid, version, position, t.traveler_id, t.document_type))
            with cur.copy(
                "COPY gatematch_templates (gallery_id, version, row, traveler_id, photo, photo_sha256, quality,"
                " created_at) FROM STDIN"
            ) as copy:
                for row, t in enumerate(draft.templates):
                    quality = json.dumps(t.quality, default=float)
                    photo = photo_reference(t.photo_sha256)
                    copy.write_row((gid, version, row, t.traveler_id, photo, t.photo_sha256, quality, now))
            with cur.copy(
                "COPY gatematch_failures (gallery_id, version, position, traveler_id, photo, reason, detail)"
                " FROM STDIN"
            ) as copy:
                for position, f in enumerate(draft.failures):
                    photo = stored_reference(f.photo)
                    copy.write_row((gid, version, position, f.traveler_id, photo, f.reason, f.detail))

    def _is_current(self, conn: psycopg.Connection, gallery_id: str, content_hash: str) -> bool:
        """The stored version holds this content, encrypted as this store would, and is intact (a damaged or
        quarantined version is replaced by a reload of the same content, not kept as "unchanged")."""
        row = conn.execute(
            "SELECT version, content_hash, encrypted, encode(sha256(index_data), 'hex') = index_sha256"
            " FROM gatematch_galleries WHERE gallery_id = %s",
            (gallery_id,),
        ).fetchone()
        if row is None or row[1] != content_hash or row[2] != (self.keys is not None) or not row[3]:
            return False
        return not self.quarantine.holds(gallery_id, (row[0], row[1]))

    def is_current(self, gallery_id: str, content_hash: str) -> bool:
        with self._transaction() as conn:
            return self._is_current(conn, gallery_id, content_hash)

    def check_replaceable(self, gallery_id: str) -> None:
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT encrypted FROM gatematch_galleries WHERE gallery_id = %s", (gallery_id,)
            ).fetchone()
        refuse_plaintext_over_encrypted(gallery_id, row is not None and row[0], self.keys)

    # -- reading -------------------------------------------------------------------------------------------

    @staticmethod
    def _info(conn: psycopg.Connection, gallery_id: str) -> GalleryInfo:
        row = conn.execute(
            f"SELECT {INFO_COLUMNS} FROM gatematch_galleries WHERE gallery_id = %s", (gallery_id,)
        ).fetchone()
        if row is None:
            raise GalleryNotFoundError(f"no gallery '{gallery_id}' in the store")
        key = (gallery_id, row[0])
        travelers, templates = conn.execute(
            "SELECT COUNT(DISTINCT traveler_id), COUNT(*) FROM gatematch_templates"
            " WHERE gallery_id = %s AND version = %s",
            key,
        ).fetchone()
        failed = conn.execute(
            "SELECT traveler_id FROM gatematch_travelers WHERE gallery_id = %s AND version = %s AND traveler_id"
            " NOT IN (SELECT traveler_id FROM gatematch_templates WHERE gallery_id = %s AND version = %s)"
            " ORDER BY position",
            key * 2,
        ).fetchall()
        (failures,) = conn.execute(
            "SELECT COUNT(*) FROM gatematch_failures WHERE gallery_id = %s AND version = %s", key
        ).fetchone()
        info = GalleryInfo(
            gallery_id=gallery_id,
            version=row[0],
            flight_id=row[1],
            departure=row[2].astimezone(UTC),
            created_at=row[3].astimezone(UTC),
            expires_at=row[4].astimezone(UTC),
            pack=row[5],
            model_hashes=dict(row[6]),
            embedder=ModelRef(row[7], row[8]),
            dim=row[9],
            travelers=travelers,
            templates=templates,
            failed_travelers=tuple(r[0] for r in failed),
            failures=failures,
            index_kind=row[10],
            encrypted=row[11],
            content_hash=row[12],
            direction=row[13],
            key_id=row[14],
        )
        return expired_view(info)

    def info(self, gallery_id: str) -> GalleryInfo:
        with self._transaction() as conn:
            return self._info(conn, gallery_id)

    def galleries(self, flight_id: str | None = None) -> list[GalleryInfo]:
        """Every gallery, or only those of one flight, by departure. A replica answers from its mirror."""
        with self._state:
            catalogue = self._catalogue
            if catalogue is not None:
                infos = [info for _, info in catalogue.values() if flight_id in (None, info.flight_id)]
                return sorted(infos, key=lambda info: (info.departure, info.gallery_id))
        where, args = ("WHERE flight_id = %s ", (flight_id,)) if flight_id is not None else ("", ())
        with self._transaction() as conn:
            ids = conn.execute(
                f"SELECT gallery_id FROM gatematch_galleries {where}ORDER BY departure, gallery_id", args
            ).fetchall()
            return [self._info(conn, gid) for (gid,) in ids]

    def _readable_version(self, conn: psycopg.Connection, gallery_id: str) -> int:
        info = self._info(conn, gallery_id)
        refuse_expired(info)
        return info.version

    def failures(self, gallery_id: str) -> list[EnrollmentFailure]:
        with self._transaction() as conn:
            version = self._readable_version(conn, gallery_id)
            rows = conn.execute(
                "SELECT traveler_id, photo, reason, detail FROM gatematch_failures"
                " WHERE gallery_id = %s AND version = %s ORDER BY position",
                (gallery_id, version),
            ).fetchall()
        return [EnrollmentFailure(*row) for row in rows]

    def travelers(self, gallery_id: str) -> list[TravelerRecord]:
        """Every traveler of the manifest, in manifest order (including those that failed to enroll)."""
        with self._transaction() as conn:
            version = self._readable_version(conn, gallery_id)
            rows = conn.execute(
                "SELECT traveler_id, document_type FROM gatematch_travelers"
                " WHERE gallery_id = %s AND version = %s ORDER BY position",
                (gallery_id, version),
            ).fetchall()
        return [TravelerRecord(*row) for row in rows]

    def provenance(self, gallery_id: str) -> list[TemplateProvenance]:
        with self._transaction() as conn:
            version = self._readable_version(conn, gallery_id)
            rows = conn.execute(
                "SELECT row, traveler_id, photo, photo_sha256, quality, created_at FROM gatematch_templates"
                " WHERE gallery_id = %s AND version = %s ORDER BY row",
                (gallery_id, version),
            ).fetchall()
        return [TemplateProvenance(r[0], r[1], r[2], r[3], dict(r[4]), r[5].astimezone(UTC)) for r in rows]

    def load(self, gallery_id: str, now: datetime | None = None) -> Gallery:
        """An immutable snapshot of the current version. A replica answers from its mirror without touching
        the database; otherwise one indexed row read tells whether the cached snapshot is still current."""
        with self._state:
            catalogue = self._catalogue
            entry = catalogue.get(gallery_id) if catalogue is not None else None
            cached = self._cache.get(gallery_id)
        if catalogue is not None:
            if entry is None:
                raise GalleryNotFoundError(f"no gallery '{gallery_id}' in the store")
            stamp, info = entry
        else:
            with self._transaction() as conn:
                row = conn.execute(
                    "SELECT version, content_hash, expires_at FROM gatematch_galleries WHERE gallery_id = %s",
                    (gallery_id,),
                ).fetchone()
            if row is None:
                raise GalleryNotFoundError(f"no gallery '{gallery_id}' in the store")
            stamp, info = (row[0], row[1]), None
            if row[2] <= (now or datetime.now(UTC)):
                raise GalleryExpiredError(
                    f"gallery {gallery_id} expired at {iso(row[2])}; its travelers and templates are no "
                    "longer readable and it is due for purging"
                )
        if info is not None:
            refuse_expired(info, now)
        if cached and cached[0] == stamp:
            return cached[1]
        self.quarantine.check(gallery_id, stamp, self.keys)
        with self._transaction() as conn:
            fetched = self._fetch(conn, gallery_id)
        if isinstance(fetched[1], Exception):
            raise fetched[1]
        return fetched[1]

    def _fetch(self, conn: psycopg.Connection, gallery_id: str) -> tuple[GalleryInfo, Gallery | Exception]:
        """The current version's info and snapshot (or why it cannot be used: quarantined), cached."""
        info = self._info(conn, gallery_id)
        stamp = (info.version, info.content_hash)
        data, index_sha256 = conn.execute(
            "SELECT index_data, index_sha256 FROM gatematch_galleries WHERE gallery_id = %s", (gallery_id,)
        ).fetchone()
        owners = self._owners(conn, gallery_id, info.version)
        try:
            gallery = open_snapshot(info, bytes(data), index_sha256, owners, self.keys)
        except (GalleryStoreError, TemplateKeyError) as exc:
            self.quarantine.hold(gallery_id, stamp, exc)
            with self._state:
                self._cache.pop(gallery_id, None)
            return info, exc
        self.quarantine.release(gallery_id)
        with self._state:
            self._cache[gallery_id] = (stamp, gallery)
        return info, gallery

    @staticmethod
    def _owners(conn: psycopg.Connection, gallery_id: str, version: int) -> list[str]:
        return [
            r[0]
            for r in conn.execute(
                "SELECT traveler_id FROM gatematch_templates WHERE gallery_id = %s AND version = %s ORDER BY row",
                (gallery_id, version),
            )
        ]

    def verify(self, gallery_id: str) -> GalleryCheck:
        """Read the current version back: every row, and the index against its sha256 (decrypted with the
        key when there is one). Does not use or fill the snapshot cache."""
        with self._transaction() as conn:
            info = self._info(conn, gallery_id)
            data, index_sha256 = conn.execute(
                "SELECT index_data, index_sha256 FROM gatematch_galleries WHERE gallery_id = %s",
                (gallery_id,),
            ).fetchone()
            owners = self._owners(conn, gallery_id, info.version)
            for table in CHILD_TABLES:
                conn.execute(f"SELECT * FROM {table} WHERE gallery_id = %s", (gallery_id,)).fetchall()
        return check_index(info, bytes(data), index_sha256, owners, self.keys)

    def reseal(self, gallery_id: str) -> bool:
        """Re-encrypt the current version under the newest key as version + 1 (same rows, same content hash)
        in one transaction, and tell the replicas. False when it is already sealed so."""
        if self.keys is None:
            raise TemplateKeyError("resealing galleries needs the template keys")
        with self._transaction(write=True) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(gallery_id),))
            info = self._info(conn, gallery_id)
            data, index_sha256, key_id = conn.execute(
                "SELECT index_data, index_sha256, key_id FROM gatematch_galleries WHERE gallery_id = %s",
                (gallery_id,),
            ).fetchone()
            if info.encrypted and key_id == self.keys.current().key_id:
                return False
            plain = plain_index(info, bytes(data), index_sha256, self.keys if info.encrypted else None)
            version = info.version + 1
            sealed = reseal_index(plain, self.keys, gallery_id, version)
            for table in CHILD_TABLES:
                conn.execute(f"UPDATE {table} SET version = %s WHERE gallery_id = %s", (version, gallery_id))
            conn.execute(
                "UPDATE gatematch_galleries SET version = %s, encrypted = true, index_data = %s,"
                " index_sha256 = %s, key_id = %s WHERE gallery_id = %s",
                (version, sealed.data, hashlib.sha256(sealed.data).hexdigest(), sealed.key_id, gallery_id),
            )
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, gallery_id))
        self._refresh(gallery_id)
        return True

    # -- retention -----------------------------------------------------------------------------------------

    def purge(self, gallery_id: str) -> None:
        """Delete a gallery's rows now (its child rows go with it), and tell the other replicas."""
        with self._transaction(write=True) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(gallery_id),))
            deleted = conn.execute(
                "DELETE FROM gatematch_galleries WHERE gallery_id = %s RETURNING gallery_id", (gallery_id,)
            ).fetchone()
            if deleted is None:
                raise GalleryNotFoundError(f"no gallery '{gallery_id}' in the store")
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, gallery_id))
        self._refresh(gallery_id)

    def purge_expired(self, now: datetime | None = None) -> list[str]:
        """Purge every gallery whose retention is over, in one transaction; returns their ids. With several
        replicas, one at a time: a replica that finds another purging skips this round (returns [])."""
        moment = now or datetime.now(UTC)
        with self._transaction(write=True) as conn:
            (mine,) = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (PURGE_LOCK,)).fetchone()
            if not mine:
                return []
            purged = [
                gid
                for (gid,) in conn.execute(
                    "DELETE FROM gatematch_galleries WHERE expires_at <= %s RETURNING gallery_id", (moment,)
                ).fetchall()
            ]
            for gid in purged:
                conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, gid))
        for gid in purged:
            self._refresh(gid)
        return sorted(purged)

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
        with self._transaction(write=True) as conn:
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key(f"gate:{gate_id}"),))
            conn.execute("DELETE FROM gatematch_gate_assignments WHERE ends_at < %s", (now - KEEP_ENDED,))
            if replace:
                for other in self._assignments(conn, now, gate_id):
                    if other.overlaps(starts_at, ends_at):
                        released.append(self._release(conn, other.assignment_id, by, now))
            (made,) = conn.execute(
                "INSERT INTO gatematch_gate_assignments (gate_id, flight_id, starts_at, ends_at, assigned_by,"
                " assigned_at) VALUES (%s,%s,%s,%s,%s,%s) RETURNING assignment_id",
                (gate_id, flight_id, starts_at, ends_at, by, parse_iso(iso(now))),
            ).fetchone()
            assignment = self._assignment(conn, made)
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, GATES))
        self._refresh_gates()
        return AssignResult(assignment, tuple(released))

    def release_gate(self, assignment_id: int, by: str, now: datetime | None = None) -> GateAssignment:
        with self._transaction(write=True) as conn:
            released = self._release(conn, assignment_id, by, now or datetime.now(UTC))
            conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, GATES))
        self._refresh_gates()
        return released

    def gate_assignments(
        self, now: datetime | None = None, gate_id: str | None = None
    ) -> list[GateAssignment]:
        """A replica answers from its mirror (a camera frame never waits on the database)."""
        now = now or datetime.now(UTC)
        with self._state:
            if self._catalogue is not None:
                return [a for a in self._gates if a.ends_at > now and gate_id in (None, a.gate_id)]
        with self._transaction() as conn:
            return self._assignments(conn, now, gate_id)

    def _refresh_gates(self) -> None:
        """Read your own writes: a replica's mirror takes its own assignment changes at once."""
        with self._state:
            following = self._catalogue is not None
        if following:
            with contextlib.suppress(GalleryStoreError), self._session() as conn:
                gates = self._assignments(conn, datetime.now(UTC), None)
                with self._state:
                    self._gates = gates

    def _release(
        self, conn: psycopg.Connection, assignment_id: int, by: str, now: datetime
    ) -> GateAssignment:
        current = self._assignment(conn, assignment_id)
        if current.released_at is None:
            conn.execute(
                "UPDATE gatematch_gate_assignments SET released_at = %s, released_by = %s"
                " WHERE assignment_id = %s",
                (parse_iso(iso(now)), by, assignment_id),
            )
        return self._assignment(conn, assignment_id)

    @staticmethod
    def _assignment(conn: psycopg.Connection, assignment_id: int) -> GateAssignment:
        row = conn.execute(
            f"SELECT {ASSIGNMENT_COLUMNS} FROM gatematch_gate_assignments WHERE assignment_id = %s",
            (assignment_id,),
        ).fetchone()
        if row is None:
            raise AssignmentNotFoundError(f"no gate assignment {assignment_id}")
        return assignment_of(row, _utc)

    @staticmethod
    def _assignments(conn: psycopg.Connection, now: datetime, gate_id: str | None) -> list[GateAssignment]:
        where, args = ("AND gate_id = %s ", (gate_id,)) if gate_id is not None else ("", ())
        rows = conn.execute(
            f"SELECT {ASSIGNMENT_COLUMNS} FROM gatematch_gate_assignments WHERE released_at IS NULL"
            f" AND ends_at > %s {where}ORDER BY gate_id, starts_at, assignment_id",
            (now, *args),
        ).fetchall()
        return [assignment_of(row, _utc) for row in rows]

    # -- the replica's mirror ------------------------------------------------------------------------------

    def _refresh(self, gallery_id: str) -> None:
        """After this process wrote or purged `gallery_id`: bring the mirror up to date at once (read your
        own writes) instead of waiting for the follower, which catches up anyway if this fails."""
        with self._state:
            following = self._catalogue is not None
            if not following:
                self._cache.pop(gallery_id, None)
        if following:
            with contextlib.suppress(GalleryStoreError), self._sync_lock, self._session() as conn:
                self._sync(conn)

    def _sync(self, conn: psycopg.Connection) -> None:
        """Compare every gallery's (version, content hash) with the mirror; load what changed, drop what went.
        Caller holds _sync_lock."""
        current = {
            gid: (version, content_hash)
            for gid, version, content_hash in conn.execute(
                "SELECT gallery_id, version, content_hash FROM gatematch_galleries"
            ).fetchall()
        }
        with self._state:
            known = {gid: stamp for gid, (stamp, _) in self._catalogue.items()}
            for gid in known.keys() - current.keys():
                del self._catalogue[gid]
                self._cache.pop(gid, None)
        for gid in known.keys() - current.keys():
            self.quarantine.release(gid)
            LOG.info("gallery removed", extra={"gallery": gid})
        for gid, stamp in current.items():
            if known.get(gid) == stamp and not self.quarantine.recoverable(gid, self.keys):
                continue
            try:
                with conn.transaction():
                    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    info, outcome = self._fetch(conn, gid)
            except GalleryNotFoundError:
                continue  # purged between the two reads: the next sync drops it
            with self._state:
                self._catalogue[gid] = ((info.version, info.content_hash), info)
            if isinstance(outcome, Exception):
                LOG.warning("gallery quarantined", extra={"gallery": gid, "reason": str(outcome)})
            else:
                LOG.info("gallery loaded", extra={"gallery": gid, "version": info.version})
        gates = self._assignments(conn, datetime.now(UTC), None)
        with self._state:
            self._gates = gates

    def _follow(self) -> None:
        """The follower thread: LISTEN, and sync on every notification or poll interval; reconnect on failure."""
        conn: psycopg.Connection | None = None
        while not self._stopping.is_set():
            try:
                if conn is None:
                    conn = connect(self._url, autocommit=True)
                    conn.execute(f"LISTEN {CHANNEL}")
                    with self._sync_lock:
                        self._sync(conn)  # catch up on whatever happened while we were away
                    self._set_reachable(True, "")
                for _ in conn.notifies(timeout=self._poll_interval_s, stop_after=1):
                    pass
                with self._sync_lock:
                    self._sync(conn)
            except (psycopg.Error, GalleryStoreError) as exc:
                detail = problem(exc) if isinstance(exc, psycopg.Error) else str(exc)
                self._set_reachable(False, detail)
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()
                    conn = None
                self._stopping.wait(RETRY_S)
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()

    def _set_reachable(self, reachable: bool, detail: str) -> None:
        if reachable == self.reachable:
            return
        self.reachable = reachable
        if reachable:
            LOG.info("gallery database reachable again; mirror caught up", extra={"store": self.location})
        else:
            LOG.warning(
                "gallery database unreachable; serving the galleries in memory",
                extra={"store": self.location, "reason": detail},
            )
        if self._on_reachable is not None:
            self._on_reachable(reachable, detail)


def _utc(moment: object) -> datetime:
    return moment.astimezone(UTC)  # type: ignore[attr-defined]
