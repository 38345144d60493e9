"""Gallery stores: the one interface the service, the gallery commands and the benchmarks use, and what its
two backends share.

A store holds one current version per departure's gallery and answers with immutable snapshots. Two backends:
- `gatematch.gallery_store_sqlite.SQLiteGalleryStore`: a folder with a SQLite file and one FAISS index file per
  gallery version; no server to install (the embedded default);
- `gatematch.gallery_store_postgres.PostgresGalleryStore`: PostgreSQL, shared by several service replicas.
`open_store` picks one from a location: a `postgresql://` URL or a folder.

Same semantics on both, and the code that decides them lives here: identical content (same content hash) is a
no-op; a new version replaces the old one in one transaction (a reader sees the old or the new, never a mix);
templates are serialised as one FAISS index, AES-GCM encrypted with the same associated data (gallery id and
version) when a TemplateKey is set, and checked against their recorded sha256 before use; a gallery encrypted
once is never rewritten in the clear; a damaged gallery (index missing, altered, undecryptable) is quarantined
with its reason, so the others keep serving; purges delete rows for real.

A gallery is for one flight number at one scheduled time, departing or arriving (`direction`): an arrival and a
departure of the same flight number are two galleries. A version can also be written as a delta of the current
one (gatematch.gallery_delta): `write(..., base=stamp)` then refuses, with GalleryConflictError, to replace any
other version than the one the delta was made from. Run-time gate assignments (gatematch.gates) live in the
same database, so replicas sharing it share them.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import faiss
import numpy as np

from gatematch.errors import GalleryConflictError, GalleryDamagedError, GalleryStoreError, TemplateKeyError
from gatematch.gallery import (
    ARRIVAL,
    DEPARTURE,
    EnrollmentFailure,
    Gallery,
    GalleryInfo,
    ModelRef,
    build_index,
)
from gatematch.template_crypto import TemplateKey, is_encrypted

if TYPE_CHECKING:
    from gatematch.gates import AssignResult, GateAssignment

DEFAULT_RETENTION = timedelta(hours=12)  # U.S. exit practice: citizens' photos discarded within 12 hours
FLIGHT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
TRAVELER_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")
MAX_PHOTOS = 10  # photos (or templates) per traveler
DATABASE_SCHEMES = ("postgresql://", "postgres://")
ARRIVAL_SUFFIX = "_arr"  # what tells an arrival's gallery id from a departure's at the same minute
GALLERY_ID = re.compile(rf"{FLIGHT_ID.pattern}_\d{{8}}T\d{{4}}Z(?:{ARRIVAL_SUFFIX})?")


def gallery_id_for(flight_id: str, departure: datetime, direction: str = DEPARTURE) -> str:
    """One gallery per flight: flight id + scheduled time (UTC, to the minute), and `_arr` for an arrival.
    Safe as a file name."""
    if not FLIGHT_ID.fullmatch(flight_id):
        raise ValueError(f"flight id {flight_id!r} must be 1-32 letters, digits, '_' or '-'")
    suffix = ARRIVAL_SUFFIX if direction == ARRIVAL else ""
    return f"{flight_id}_{departure.astimezone(UTC):%Y%m%dT%H%MZ}{suffix}"


@dataclass(frozen=True)
class TravelerRecord:
    traveler_id: str
    document_type: str | None = None


@dataclass(frozen=True)
class TemplateRecord:
    """One template and where it came from (provenance is kept; the vector goes only into the index)."""

    traveler_id: str
    photo: str
    photo_sha256: str
    quality: dict[str, object]
    embedding: np.ndarray


@dataclass(frozen=True)
class GalleryDraft:
    """A complete gallery version ready to be written: every manifest traveler, templates, failures."""

    flight_id: str
    departure: datetime
    pack: str
    model_hashes: dict[str, str]
    embedder: ModelRef
    dim: int  # the embedder's template size (kept even when no photo enrolled)
    travelers: tuple[TravelerRecord, ...]
    templates: tuple[TemplateRecord, ...]
    failures: tuple[EnrollmentFailure, ...]
    content_hash: str  # identical input (manifest, photo bytes, pack, settings) -> identical hash
    direction: str = DEPARTURE  # for an arrival, `departure` is the scheduled arrival time

    @property
    def gallery_id(self) -> str:
        return gallery_id_for(self.flight_id, self.departure, self.direction)


@dataclass(frozen=True)
class TemplateProvenance:
    row: int
    traveler_id: str
    photo: str
    photo_sha256: str
    quality: dict[str, object]
    created_at: datetime


@dataclass(frozen=True)
class WriteResult:
    info: GalleryInfo
    unchanged: bool  # the same content was already the current version: nothing was written


@dataclass(frozen=True)
class GalleryCheck:
    """What `verify` found: the gallery's index matches its sha256, decrypts and holds one template per
    recorded row, and every row can be read; otherwise `problem` says what is wrong."""

    gallery_id: str
    problem: str = ""
    note: str = ""  # what could not be checked (an encrypted index without the key: its sha256 only)

    @property
    def ok(self) -> bool:
        return not self.problem


class GalleryStore(Protocol):
    """What the service, the gallery commands and the benchmarks need from a store (both backends)."""

    location: str  # for operators' messages: a folder, or a URL without its password
    key: TemplateKey | None
    retention: timedelta  # default time a gallery is kept after its departure
    reachable: bool  # False while a database server cannot be reached (the embedded store always is)

    def write(
        self,
        draft: GalleryDraft,
        now: datetime | None = None,
        retention: timedelta | None = None,
        *,
        base: Stamp | None = None,
    ) -> WriteResult:
        """Make `draft` the gallery's current version in one transaction; a no-op if the content is unchanged.
        With `base` (a delta): only if the current version is still `base`, else GalleryConflictError."""
        ...

    def is_current(self, gallery_id: str, content_hash: str) -> bool:
        """Whether the current version already holds exactly this content (lets a rebuild skip all work)."""
        ...

    def check_replaceable(self, gallery_id: str) -> None:
        """Raise now what `write` would raise for this gallery, before an hour of enrollment work."""
        ...

    def info(self, gallery_id: str) -> GalleryInfo: ...

    def galleries(self, flight_id: str | None = None) -> list[GalleryInfo]:
        """Every gallery, or only those of one flight, by departure."""
        ...

    def failures(self, gallery_id: str) -> list[EnrollmentFailure]: ...

    def travelers(self, gallery_id: str) -> list[TravelerRecord]: ...

    def provenance(self, gallery_id: str) -> list[TemplateProvenance]: ...

    def load(self, gallery_id: str, now: datetime | None = None) -> Gallery:
        """An immutable, searchable snapshot of the current version (cached per version)."""
        ...

    def verify(self, gallery_id: str) -> GalleryCheck:
        """Read everything of the current version back (what `gallery list|inspect` report is true)."""
        ...

    def purge(self, gallery_id: str) -> None:
        """Delete a gallery's rows (and files) now."""
        ...

    def purge_expired(self, now: datetime | None = None) -> list[str]:
        """Purge every gallery whose retention is over; returns their ids."""
        ...

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
        """Assign the gate to the flight for [starts_at, ends_at); `replace` first releases the gate's other
        run-time assignments overlapping that window (a reassignment), in the same transaction."""
        ...

    def release_gate(self, assignment_id: int, by: str, now: datetime | None = None) -> GateAssignment:
        """End a run-time assignment now (AssignmentNotFoundError when there is none with that id)."""
        ...

    def gate_assignments(
        self, now: datetime | None = None, gate_id: str | None = None
    ) -> list[GateAssignment]:
        """Run-time assignments not released and not over (in force now, or later), by gate and start."""
        ...

    def close(self) -> None: ...


def open_store(
    location: str | Path,
    key: TemplateKey | None = None,
    retention: timedelta = DEFAULT_RETENTION,
    *,
    follow: bool = False,
    on_reachable: Callable[[bool, str], None] | None = None,
) -> GalleryStore:
    """The store at `location`: a PostgreSQL URL, or a folder for the embedded SQLite store (created if missing).

    `follow` (PostgreSQL, for service replicas): keep every gallery searchable in memory and follow other
    replicas' writes and purges; `on_reachable(reachable, detail)` is told when the database goes away or
    comes back. The embedded store is one process's folder: always current, never unreachable.
    """
    if is_database_url(location):
        from gatematch.gallery_store_postgres import PostgresGalleryStore

        return PostgresGalleryStore(str(location), key, retention, follow=follow, on_reachable=on_reachable)
    from gatematch.gallery_store_sqlite import SQLiteGalleryStore

    return SQLiteGalleryStore(Path(location), key, retention)


def is_database_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(DATABASE_SCHEMES)


# -- what both backends share: one index encoding, one encryption rule, one snapshot check -----------------


def associated_data(gallery_id: str, version: int) -> bytes:
    """Binds a ciphertext to its gallery and version: a blob copied elsewhere or replayed fails to decrypt."""
    return f"gatematch-gallery:{gallery_id}:v{version}".encode()


def seal_index(
    vectors: np.ndarray, kind: str, key: TemplateKey | None, gallery_id: str, version: int
) -> bytes:
    """The templates as a serialised FAISS index, encrypted when there is a key (no plaintext is ever stored)."""
    data = faiss.serialize_index(build_index(vectors, kind)).tobytes()
    return key.encrypt(data, associated_data(gallery_id, version)) if key is not None else data


def check_base(gallery_id: str, current: Stamp | None, base: Stamp | None) -> None:
    """A delta replaces only the version it was made from: another writer got there first otherwise."""
    if base is not None and current != base:
        now = f"version {current[0]}" if current else "no version (purged)"
        raise GalleryConflictError(
            f"gallery {gallery_id} changed while the delta was prepared on version {base[0]} (it now holds "
            f"{now}); nothing was written"
        )


def refuse_plaintext_over_encrypted(gallery_id: str, encrypted: bool | None, key: TemplateKey | None) -> None:
    """A rebuild without the key (a forgotten environment variable) must not silently store in the clear
    templates that were encrypted: the operator sets the key, or purges the gallery first."""
    if encrypted and key is None:
        raise TemplateKeyError(
            f"gallery {gallery_id} is encrypted; set GATEMATCH_TEMPLATE_KEY to replace it (or purge it first)"
        )


def open_snapshot(
    info: GalleryInfo, data: bytes, index_sha256: str, owners: list[str], key: TemplateKey | None
) -> Gallery:
    """A searchable snapshot from a stored index: checked against its sha256, decrypted, and matched with the
    template rows; GalleryDamagedError or TemplateKeyError (a wrong or missing key) when it cannot be."""
    gid = info.gallery_id
    if hashlib.sha256(data).hexdigest() != index_sha256:
        raise GalleryDamagedError(f"gallery {gid}: its index does not match its recorded sha256")
    if info.encrypted:
        if key is None:
            raise TemplateKeyError(f"gallery {gid} is encrypted; set GATEMATCH_TEMPLATE_KEY to its key")
        data = key.decrypt(data, associated_data(gid, info.version))
    elif is_encrypted(data):
        raise GalleryDamagedError(f"gallery {gid}: its index is encrypted but recorded as plain")
    try:
        index = faiss.deserialize_index(np.frombuffer(data, dtype=np.uint8))
    except RuntimeError:
        raise GalleryDamagedError(f"gallery {gid}: its index cannot be read as a FAISS index") from None
    if index.ntotal != len(owners):
        raise GalleryDamagedError(
            f"gallery {gid}: index holds {index.ntotal} templates, metadata {len(owners)}"
        )
    position: dict[str, int] = {}
    for traveler in owners:
        position.setdefault(traveler, len(position))
    mapping = np.fromiter((position[t] for t in owners), dtype=np.int32, count=len(owners))
    most = int(np.bincount(mapping).max()) if len(mapping) else 0
    return Gallery(info, index, tuple(position), mapping, most)


def check_index(
    info: GalleryInfo, data: bytes, index_sha256: str, owners: list[str], key: TemplateKey | None
) -> GalleryCheck:
    """`verify`'s verdict on one stored index: as `open_snapshot` would take it; an encrypted index without
    the key is checked against its sha256 only (and says so)."""
    try:
        if info.encrypted and key is None:
            if hashlib.sha256(data).hexdigest() != index_sha256:
                raise GalleryDamagedError(
                    f"gallery {info.gallery_id}: its index does not match its recorded sha256"
                )
            return GalleryCheck(
                info.gallery_id, note="sha256 checked; not decrypted (no GATEMATCH_TEMPLATE_KEY)"
            )
        open_snapshot(info, data, index_sha256, owners, key)
    except (GalleryStoreError, TemplateKeyError) as exc:
        return GalleryCheck(info.gallery_id, str(exc))
    return GalleryCheck(info.gallery_id)


Stamp = tuple[int, str]  # (version, content hash): what identifies one stored version


class Quarantine:
    """Galleries whose current version could not be loaded, with why: asked again, they fail at once with the
    same error instead of re-reading a damaged index for every camera frame; a new version clears it."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Stamp, GalleryStoreError | TemplateKeyError]] = {}
        self._lock = threading.Lock()

    def check(self, gallery_id: str, stamp: Stamp) -> None:
        with self._lock:
            entry = self._entries.get(gallery_id)
        if entry is not None and entry[0] == stamp:
            raise entry[1]

    def holds(self, gallery_id: str, stamp: Stamp) -> bool:
        with self._lock:
            entry = self._entries.get(gallery_id)
        return entry is not None and entry[0] == stamp

    def hold(self, gallery_id: str, stamp: Stamp, error: GalleryStoreError | TemplateKeyError) -> None:
        with self._lock:
            self._entries[gallery_id] = (stamp, error)

    def release(self, gallery_id: str) -> None:
        with self._lock:
            self._entries.pop(gallery_id, None)

    def reasons(self) -> dict[str, str]:
        with self._lock:
            return {gid: str(error) for gid, (_, error) in self._entries.items()}
