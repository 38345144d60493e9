"""Gallery stores: the one interface the service, the gallery commands and the benchmarks use, and what its
two backends share.

A store holds one current version per departure's gallery and answers with immutable snapshots. Two backends:
- `gatematch.gallery_store_sqlite.SQLiteGalleryStore`: a folder with a SQLite file and one FAISS index file per
  gallery version; no server to install (the embedded default);
- `gatematch.gallery_store_postgres.PostgresGalleryStore`: PostgreSQL, shared by several service replicas.
`open_store` picks one from a location: a `postgresql://` URL or a folder.

Same semantics on both, and the code that decides them lives here: identical content (same content hash) is a
no-op; a new version replaces the old one in one transaction (a reader sees the old or the new, never a mix);
templates are serialised as one FAISS index, AES-GCM encrypted under the newest key of a KeyProvider with the
same associated data (gallery id and version), and checked against their recorded sha256 before use; a store
with keys refuses to use a gallery stored in plaintext, and a gallery encrypted once is never rewritten in the
clear; `reseal` re-encrypts a gallery under the newest key as a new version (key rotation while serving); a
damaged gallery (index missing, altered, undecryptable, in plaintext where keys are held) is quarantined with
its reason, so the others keep serving; purges delete rows for real.

Retention is the store's to enforce (`RetentionPolicy`): no gallery is written to be kept longer than the
maximum after its departure, none for a departure further ahead than the horizon, and an expired gallery's
travelers, templates and failures are unreadable (its info keeps only counts and times until it is purged).
The store keeps no photo paths: a template or failure names its photo by `sha256:<first 16 hex digits>`.

A gallery is for one flight number at one scheduled time, departing or arriving (`direction`): an arrival and a
departure of the same flight number are two galleries. A version can also be written as a delta of the current
one (gatematch.gallery_delta): `write(..., base=stamp)` then refuses, with GalleryConflictError, to replace any
other version than the one the delta was made from; it is sealed under the newest key and kept under the same
retention rules as any other version. Run-time gate assignments (gatematch.gates) live in the same database, so
replicas sharing it share them; they hold no biometric data (stored in the clear) and are deleted on their own
schedule, a day after they end (a gallery's purge leaves them).
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import faiss
import numpy as np

from gatematch.errors import (
    GalleryConflictError,
    GalleryDamagedError,
    GalleryExpiredError,
    GalleryStoreError,
    MissingKeyError,
    PlaintextGalleryError,
    RetentionError,
    TemplateKeyError,
)
from gatematch.gallery import (
    ARRIVAL,
    DEPARTURE,
    EnrollmentFailure,
    Gallery,
    GalleryInfo,
    ModelRef,
    build_index,
    iso,
)
from gatematch.template_crypto import KeyProvider, TemplateKey, is_encrypted, unseal

if TYPE_CHECKING:
    from gatematch.gates import AssignResult, GateAssignment

DEFAULT_RETENTION = timedelta(hours=12)  # U.S. exit practice: citizens' photos discarded within 12 hours
# Galleries are built for departures at most this far ahead. A gallery exists to be matched at boarding; built
# earlier, it only holds travelers' templates longer (the horizon bounds the whole holding time to 14 days +
# retention). Two weeks covers the earliest point airlines hand over passenger lists (reservation data is sent
# from 72 hours ahead; charters and schedule changes a few days earlier), and a mistyped year is refused.
DEFAULT_HORIZON = timedelta(days=14)
PHOTO_REFERENCE = re.compile(r"sha256:[0-9a-f]{16}")
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


def flight_of(gallery_id: str) -> str:
    """The flight id in a gallery id (the inverse of `gallery_id_for`, for records that name the flight)."""
    return gallery_id.removesuffix(ARRIVAL_SUFFIX).rsplit("_", 1)[0]


def photo_reference(sha256: str) -> str:
    """How the store names a photo (or template): by a prefix of its content hash, never by its path (a path
    often carries a traveler's name, and it says where the photos of a flight are kept)."""
    return f"sha256:{sha256[:16]}" if re.fullmatch(r"[0-9a-f]{64}", sha256) else ""


def stored_reference(text: str) -> str:
    """What a store keeps of a photo reference: a `photo_reference`, or nothing."""
    return text if PHOTO_REFERENCE.fullmatch(text) else ""


@dataclass(frozen=True)
class RetentionPolicy:
    """How long galleries may be kept: `default` after departure unless a load asks for less or more (never
    more than `maximum`), and only for departures up to `horizon` ahead."""

    default: timedelta = DEFAULT_RETENTION
    maximum: timedelta = DEFAULT_RETENTION
    horizon: timedelta = DEFAULT_HORIZON

    def __post_init__(self) -> None:
        if min(self.default, self.maximum, self.horizon) <= timedelta(0):
            raise ValueError("retention, its maximum and the horizon must be positive")
        if self.default > self.maximum:
            raise ValueError(f"default retention {self.default} is over the maximum {self.maximum}")

    @classmethod
    def of(cls, retention: RetentionPolicy | timedelta) -> RetentionPolicy:
        """A policy from what a caller passed: a bare retention is both the default and the maximum."""
        if isinstance(retention, RetentionPolicy):
            return retention
        if retention <= timedelta(0):
            raise ValueError(f"retention must be positive, got {retention}")
        return cls(retention, retention)

    def expiry(self, departure: datetime, retention: timedelta | None, now: datetime) -> datetime:
        """When a gallery of this departure, kept for `retention` (None: the default), expires; RetentionError
        or GalleryExpiredError when it may not be written now."""
        retention = self.default if retention is None else retention
        if not timedelta(0) < retention <= self.maximum:
            raise RetentionError(
                f"retention {_hours(retention)} after departure is outside (0, {_hours(self.maximum)}], "
                "the configured maximum"
            )
        if departure - now > self.horizon:
            raise RetentionError(
                f"departure {iso(departure)} is more than {_hours(self.horizon)} ahead; galleries are built "
                "for departures within that horizon"
            )
        expires = departure + retention
        if expires <= now:
            raise GalleryExpiredError(
                f"gallery of departure {iso(departure)} would expire at {iso(expires)} "
                f"({_hours(retention)} after departure), before it is written"
            )
        return expires


def _hours(span: timedelta) -> str:
    return f"{span.total_seconds() / 3600:g} h"


@dataclass(frozen=True)
class TravelerRecord:
    traveler_id: str
    document_type: str | None = None


@dataclass(frozen=True)
class TemplateRecord:
    """One template and where it came from (provenance is kept; the vector goes only into the index)."""

    traveler_id: str
    photo: str  # a photo_reference (stores keep nothing else)
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
    keys: KeyProvider | None  # None: templates are written in plaintext (tests, tools; never the service)
    policy: RetentionPolicy
    retention: timedelta  # default time a gallery is kept after its departure (policy.default)
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

    def failures(self, gallery_id: str) -> list[EnrollmentFailure]:
        """GalleryExpiredError once the gallery expired (as for travelers and provenance)."""
        ...

    def travelers(self, gallery_id: str) -> list[TravelerRecord]: ...

    def provenance(self, gallery_id: str) -> list[TemplateProvenance]: ...

    def load(self, gallery_id: str, now: datetime | None = None) -> Gallery:
        """An immutable, searchable snapshot of the current version (cached per version)."""
        ...

    def verify(self, gallery_id: str) -> GalleryCheck:
        """Read everything of the current version back (what `gallery list|inspect` report is true)."""
        ...

    def reseal(self, gallery_id: str) -> bool:
        """Re-encrypt the current version under the newest key, as a new version with the same content (a
        plaintext gallery is encrypted); False when it already is. Searches go on meanwhile."""
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
    key: KeyProvider | TemplateKey | None = None,
    retention: RetentionPolicy | timedelta = DEFAULT_RETENTION,
    *,
    follow: bool = False,
    on_reachable: Callable[[bool, str], None] | None = None,
) -> GalleryStore:
    """The store at `location`: a PostgreSQL URL, or a folder for the embedded SQLite store (created if missing).

    `key`: the template keys (a KeyProvider, or one TemplateKey); None writes templates in plaintext.
    `retention`: a RetentionPolicy, or one retention that is both the default and the maximum.

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


def expired_view(info: GalleryInfo, now: datetime | None = None) -> GalleryInfo:
    """What may still be read of a gallery: once expired, counts and times only (no traveler ids)."""
    return replace(info, failed_travelers=()) if info.expired(now) else info


def refuse_expired(info: GalleryInfo, now: datetime | None = None) -> None:
    """Expired data is unreadable on every path: search, travelers, templates' provenance, failures, export."""
    if info.expired(now):
        raise GalleryExpiredError(
            f"gallery {info.gallery_id} expired at {iso(info.expires_at)}; its travelers and templates are no "
            "longer readable and it is due for purging"
        )


def associated_data(gallery_id: str, version: int) -> bytes:
    """Binds a ciphertext to its gallery and version: a blob copied elsewhere or replayed fails to decrypt."""
    return f"gatematch-gallery:{gallery_id}:v{version}".encode()


@dataclass(frozen=True)
class SealedIndex:
    data: bytes
    key_id: str  # "" in plaintext


def seal_index(
    vectors: np.ndarray, kind: str, keys: KeyProvider | None, gallery_id: str, version: int
) -> SealedIndex:
    """The templates as a serialised FAISS index, encrypted under the newest key when there are keys (no
    plaintext is ever stored then)."""
    data = faiss.serialize_index(build_index(vectors, kind)).tobytes()
    return reseal_index(data, keys, gallery_id, version)


def check_base(gallery_id: str, current: Stamp | None, base: Stamp | None) -> None:
    """A delta replaces only the version it was made from: another writer got there first otherwise."""
    if base is not None and current != base:
        now = f"version {current[0]}" if current else "no version (purged)"
        raise GalleryConflictError(
            f"gallery {gallery_id} changed while the delta was prepared on version {base[0]} (it now holds "
            f"{now}); nothing was written"
        )


def reseal_index(plain: bytes, keys: KeyProvider | None, gallery_id: str, version: int) -> SealedIndex:
    """A serialised index sealed for `version` of `gallery_id` under the newest key (as is without keys)."""
    if keys is None:
        return SealedIndex(plain, "")
    key = keys.current()
    return SealedIndex(key.encrypt(plain, associated_data(gallery_id, version)), key.key_id)


def refuse_plaintext_over_encrypted(
    gallery_id: str, encrypted: bool | None, keys: KeyProvider | None
) -> None:
    """A rebuild without keys (a forgotten key file or environment variable) must not silently store in the
    clear templates that were encrypted: the operator gives the keys, or purges the gallery first."""
    if encrypted and keys is None:
        raise TemplateKeyError(
            f"gallery {gallery_id} is encrypted; give the template keys (a key file, or "
            "GATEMATCH_TEMPLATE_KEY) to replace it, or purge it first"
        )


def plain_index(info: GalleryInfo, data: bytes, index_sha256: str, keys: KeyProvider | None) -> bytes:
    """A stored index checked against its sha256 and decrypted: the serialised FAISS index. Refuses a gallery
    stored in plaintext when there are keys (it is quarantined until resealed or loaded again)."""
    gid = info.gallery_id
    if hashlib.sha256(data).hexdigest() != index_sha256:
        raise GalleryDamagedError(f"gallery {gid}: its index does not match its recorded sha256")
    if info.encrypted:
        if keys is None:
            raise TemplateKeyError(
                f"gallery {gid} is encrypted and no template key is configured (a key file, or "
                "GATEMATCH_TEMPLATE_KEY)"
            )
        return unseal(keys, data, associated_data(gid, info.version))
    if is_encrypted(data):
        raise GalleryDamagedError(f"gallery {gid}: its index is encrypted but recorded as plain")
    if keys is not None:
        raise PlaintextGalleryError(
            f"gallery {gid} is stored in plaintext and this store keeps templates only encrypted: "
            "`gatematch keys rotate` encrypts it, or load it again"
        )
    return data


def open_snapshot(
    info: GalleryInfo, data: bytes, index_sha256: str, owners: list[str], keys: KeyProvider | None
) -> Gallery:
    """A searchable snapshot from a stored index: checked against its sha256, decrypted, and matched with the
    template rows; GalleryDamagedError or TemplateKeyError (a wrong or missing key) when it cannot be."""
    gid = info.gallery_id
    data = plain_index(info, data, index_sha256, keys)
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
    info: GalleryInfo, data: bytes, index_sha256: str, owners: list[str], keys: KeyProvider | None
) -> GalleryCheck:
    """`verify`'s verdict on one stored index: as `open_snapshot` would take it; an encrypted index without
    keys is checked against its sha256 only (and says so)."""
    try:
        if info.encrypted and keys is None:
            if hashlib.sha256(data).hexdigest() != index_sha256:
                raise GalleryDamagedError(
                    f"gallery {info.gallery_id}: its index does not match its recorded sha256"
                )
            return GalleryCheck(info.gallery_id, note="sha256 checked; not decrypted (no template key)")
        open_snapshot(info, data, index_sha256, owners, keys)
    except (GalleryStoreError, TemplateKeyError) as exc:
        return GalleryCheck(info.gallery_id, str(exc))
    return GalleryCheck(info.gallery_id)


Stamp = tuple[int, str]  # (version, content hash): what identifies one stored version


class Quarantine:
    """Galleries whose current version could not be loaded, with why: asked again, they fail at once with the
    same error instead of re-reading a damaged index for every camera frame; a new version clears it, and so
    does the missing key turning up (a key file updated by `gatematch keys` while the service runs)."""

    def __init__(self) -> None:
        self._entries: dict[str, tuple[Stamp, GalleryStoreError | TemplateKeyError]] = {}
        self._lock = threading.Lock()

    def check(self, gallery_id: str, stamp: Stamp, keys: KeyProvider | None = None) -> None:
        with self._lock:
            entry = self._entries.get(gallery_id)
        if entry is not None and entry[0] == stamp and not self._key_found(entry[1], keys):
            raise entry[1]

    def recoverable(self, gallery_id: str, keys: KeyProvider | None) -> bool:
        """Whether a gallery held for a missing key can be tried again (the key is there now)."""
        with self._lock:
            entry = self._entries.get(gallery_id)
        return entry is not None and self._key_found(entry[1], keys)

    @staticmethod
    def _key_found(error: Exception, keys: KeyProvider | None) -> bool:
        return isinstance(error, MissingKeyError) and keys is not None and keys.has(error.key_id)

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
