"""The audit trail: append-only, hash-chained records of decisions, refusals, gallery reads and administration.

Where records go: one JSON object per line in a file (fsynced, rotated past a size), or (with the galleries in
PostgreSQL, `[audit] sink = "store"`) rows of an append-only table in that database, with the file as fallback.
The service, the stream scheduler and every `gatematch` admin command append through `AuditSink.record`.

Tamper evidence: every record carries `chain_seq` (1, 2, 3, ... over the whole trail), `chain_prev` (the hash of
the record before it; 64 zeros for the first) and `chain_hash` = sha256 of the record's canonical JSON (sorted
keys, no spaces, `chain_prev` included, `chain_hash` left out). `verify_log` (`gatematch audit verify`)
recomputes the chain and names every record that was altered, removed, inserted or moved. A rotated file keeps
the chain: the first record of the new file follows the last record of the previous one, and verification reads
the rotated files (`audit.jsonl.000001`, `.000002`, ...) before the current one. The file writers of several
processes (the service and the command line) take turns under an exclusive lock on `<file>.lock`, so their
records form one chain. What a hash chain cannot show alone: the newest records cut off the end (compare the
head hash `verify` prints with one kept elsewhere, or use the database sink, whose table refuses deletes).

A record holds only short strings and numbers (no field can take bytes, arrays, or a string longer than
MAX_TEXT), so an image or a template cannot reach the trail even by mistake: a 128-d float32 template alone is
512 bytes, its base64 684 characters.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol

import psycopg

from gatematch.atomicfile import fsync_dir
from gatematch.errors import AuditLogError, GalleryStoreError
from gatematch.gallery_store_postgres import connect, problem, redact

log = logging.getLogger(__name__)
MAX_TEXT = 200
GENESIS = "0" * 64  # chain_prev of the first record
CHAIN_FIELDS = ("chain_seq", "chain_prev", "chain_hash")
DEFAULT_ROTATE_BYTES = 64 * 1024 * 1024
ROTATED = re.compile(r"\.(\d{6})")  # audit.jsonl.000001: the rotated files, oldest first
TAIL_BYTES = 16 * 1024  # several times the longest record: where the last record of a file is looked for
# Exact types only: bool, numpy scalars, bytes and arrays are refused rather than converted.
_ALLOWED: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (float, int)}

# What a record can be about (AuditRecord.event). Service: decisions, refusals, gallery reads and changes;
# the retention timer's purges; the command line's administration.
EVENTS = (
    "match",  # a unary decision
    "verify",  # a 1:1 verification's decision and score (nothing of the reference)
    "encounter",  # a stream encounter's decision (camera and gate always set)
    "denied",  # a refused call: authentication or authorization (detail says which and why)
    "policy.reload",  # the authorization policy reloaded on SIGHUP (or refused, with why)
    "gallery.read",  # one gallery's information (Get, `gatematch gallery inspect`)
    "gallery.list",
    "gallery.load",
    "gallery.delete",
    "gallery.purge",  # retention purges (client "retention-timer") and `gatematch gallery purge`
    "gallery.build",
    "gallery.export",
    "gallery.add",  # a delta (GalleryService.Update, `gatematch gallery add`): travelers added
    "gallery.remove",  # a delta: travelers removed
    "gate.assign",  # a run-time gate assignment (GateService, `gatematch gate`)
    "gate.release",
    "gate.list",
    "keys.create",
    "keys.rotate",
    "keys.retire",
)


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _canonical_time(text: str) -> str:
    """`at` in the one form records keep (UTC, milliseconds), so a database round trip gives the same text."""
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"audit field at must be an ISO 8601 time, got {text!r}") from None
    if moment.tzinfo is None:
        raise ValueError(f"audit field at must carry a UTC offset, got {text!r}")
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class AuditRecord:
    event: str  # one of EVENTS
    client: str  # who: a certificate CN or policy client name, "cli:<user>", or "retention-timer"
    flight_id: str = ""
    gallery_version: str = ""
    camera_id: str = ""
    gate_id: str = ""
    decision: str = ""
    traveler_id: str = ""
    score: float | None = None
    confidence: float | None = None
    sequence: int | None = None
    encounter_id: int | None = None
    detail: str = ""
    at: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.default is None:
                continue
            allowed = _ALLOWED[str(f.type).split(" |")[0]]
            if type(value) not in allowed:
                raise TypeError(
                    f"audit field {f.name} must be {'/'.join(t.__name__ for t in allowed)}, "
                    f"got {type(value).__name__}"
                )
            if isinstance(value, str) and len(value) > MAX_TEXT:
                raise ValueError(f"audit field {f.name} is {len(value)} characters, over {MAX_TEXT}")
        if self.event not in EVENTS:
            raise ValueError(f"audit event {self.event!r} is not one of {', '.join(EVENTS)}")
        object.__setattr__(self, "at", _canonical_time(self.at))


# -- the chain -------------------------------------------------------------------------------------------


def record_hash(entry: Mapping[str, Any]) -> str:
    """sha256 of a chained record's canonical JSON (every field but chain_hash; chain_prev included)."""
    body = {k: v for k, v in entry.items() if k != "chain_hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def chained(record: AuditRecord, seq: int, prev: str) -> dict[str, Any]:
    """The record as it is stored: its fields, its place in the chain and its hash."""
    entry: dict[str, Any] = {**asdict(record), "chain_seq": seq, "chain_prev": prev}
    entry["chain_hash"] = record_hash(entry)
    return entry


@dataclass(frozen=True)
class ChainProblem:
    where: str  # "audit.jsonl line 7", or "row id 7"
    seq: int | None  # the record's chain_seq, when it has one
    what: str

    def __str__(self) -> str:
        return f"{self.where}{f' (seq {self.seq})' if self.seq is not None else ''}: {self.what}"


@dataclass(frozen=True)
class ChainReport:
    """What `verify_log` found: how many records, where, the last hash, and every problem."""

    source: str
    records: int
    parts: tuple[str, ...]  # the files read, oldest first (or the table)
    head_seq: int
    head_hash: str
    problems: tuple[ChainProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def check_chain(source: str, parts: tuple[str, ...], entries: Iterator[tuple[str, Any]]) -> ChainReport:
    """Walk (where, parsed record or None) pairs in stored order and name what breaks the chain."""
    items = list(entries)
    seqs = {e["chain_seq"] for _, e in items if isinstance(e, dict) and isinstance(e.get("chain_seq"), int)}
    problems: list[ChainProblem] = []
    last_seq, last_hash, last_where, count = 0, GENESIS, "", 0
    for where, entry in items:
        if not isinstance(entry, dict):
            problems.append(ChainProblem(where, None, "not a JSON audit record (altered or cut)"))
            continue
        seq, prev, digest = (entry.get(name) for name in CHAIN_FIELDS)
        if not (isinstance(seq, int) and isinstance(prev, str) and isinstance(digest, str)):
            problems.append(ChainProblem(where, None, "not a chained audit record (inserted?)"))
            continue
        count += 1
        if record_hash(entry) != digest:
            problems.append(ChainProblem(where, seq, "altered: its content does not match its hash"))
        if seq <= last_seq:  # the chain goes on from the highest record seen, so what follows it is judged
            problems.append(
                ChainProblem(where, seq, f"out of order: seq {seq} comes after seq {last_seq} ({last_where})")
            )
            continue
        if seq > last_seq + 1:
            gap = range(last_seq + 1, seq)
            if all(s in seqs for s in gap):
                what = f"out of order: seq {seq} comes before seq {gap[0]}, stored later"
            else:
                span = f"seq {gap[0]}" if len(gap) == 1 else f"seq {gap[0]}..{gap[-1]}"
                what = f"{len(gap)} record(s) missing before it ({span})"
            problems.append(ChainProblem(where, seq, what))
        elif prev != last_hash:
            before = f"seq {last_seq} ({last_where})" if last_where else "the start of the chain"
            problems.append(
                ChainProblem(where, seq, f"does not follow {before}: that record was altered or replaced")
            )
        last_seq, last_hash, last_where = seq, digest, where
    return ChainReport(source, count, parts, last_seq, last_hash, tuple(problems))


# -- the file sink ---------------------------------------------------------------------------------------


def rotated_files(path: Path) -> list[Path]:
    """The rotated files of an audit file, oldest first."""
    found = []
    for candidate in path.parent.glob(f"{path.name}.*"):
        suffix = candidate.name[len(path.name) :]
        if ROTATED.fullmatch(suffix):
            found.append((int(suffix[1:]), candidate))
    return [p for _, p in sorted(found)]


def _last_line(path: Path) -> bytes:
    with open(path, "rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - TAIL_BYTES))
        lines = [line for line in handle.read().splitlines() if line.strip()]
    return lines[-1] if lines else b""


def _link_of(line: bytes) -> tuple[int, str]:
    """(chain_seq, chain_hash) of a stored line; an unreadable line is chained onto by its own sha256 (verify
    then names it)."""
    try:
        entry = json.loads(line)
        return int(entry["chain_seq"]), str(entry["chain_hash"])
    except (ValueError, KeyError, TypeError):
        return 0, hashlib.sha256(line).hexdigest()


class AuditLog:
    """Appends chained records with O_APPEND and fsync under an exclusive file lock, so concurrent writers
    (threads, or the service and a command) never interleave and a crash loses none; past `max_bytes` the file
    is renamed to the next `<name>.NNNNNN` and continued in a new one."""

    def __init__(self, path: Path | str, max_bytes: int = DEFAULT_ROTATE_BYTES):
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600)
        self._fd = self._open()
        self._lock = threading.Lock()
        # (inode, size) of the file after our last write, and the head we wrote: still the head while the
        # file is unchanged, so a record costs no read unless another process wrote in between.
        self._written: tuple[int, int, int, str] | None = None

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[None]:
        with self._lock:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _head(self) -> tuple[int, str]:
        """The last record's (chain_seq, chain_hash): in this file, else in the newest rotated one."""
        for candidate in (self.path, *reversed(rotated_files(self.path))):
            line = _last_line(candidate)
            if line:
                return _link_of(line)
        return 0, GENESIS

    def _rotate(self) -> None:
        older = rotated_files(self.path)
        number = int(older[-1].name.rsplit(".", 1)[1]) + 1 if older else 1
        os.rename(self.path, self.path.with_name(f"{self.path.name}.{number:06d}"))
        os.close(self._fd)
        self._fd = self._open()
        fsync_dir(self.path.parent)

    def record(self, record: AuditRecord) -> None:
        with self._exclusive():
            if self._fd < 0:
                raise AuditLogError("the audit log is closed")
            try:
                same = os.fstat(self._fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # another process rotated (or someone moved) the file: write where the path is now
                os.close(self._fd)
                self._fd = self._open()
            state = os.fstat(self._fd)
            written = self._written
            if written is not None and written[:2] == (state.st_ino, state.st_size):
                seq, prev = written[2:]
            else:
                seq, prev = self._head()
            if state.st_size >= self.max_bytes:
                self._rotate()
            entry = chained(record, seq + 1, prev)
            line = json.dumps(entry, separators=(",", ":"), ensure_ascii=True) + "\n"
            os.write(self._fd, line.encode())
            os.fsync(self._fd)
            state = os.fstat(self._fd)
            self._written = (state.st_ino, state.st_size, seq + 1, entry["chain_hash"])

    def close(self) -> None:
        with self._lock:
            for fd in (self._fd, self._lock_fd):
                if fd >= 0:
                    os.close(fd)
            self._fd = self._lock_fd = -1


def verify_file(path: Path | str) -> ChainReport:
    """Check the chain of an audit file and its rotated predecessors (AuditLogError when there is none)."""
    path = Path(path)
    parts = [*rotated_files(path), *([path] if path.exists() else [])]
    if not parts:
        raise AuditLogError(f"no audit log at {path}")

    def entries() -> Iterator[tuple[str, Any]]:
        for part in parts:
            try:
                data = part.read_bytes()
            except OSError as exc:
                raise AuditLogError(f"cannot read audit log {part}: {exc.strerror or exc}") from None
            for number, line in enumerate(data.split(b"\n"), 1):
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except (ValueError, UnicodeDecodeError):
                    entry = None
                yield f"{part.name} line {number}", entry

    return check_chain(str(path), tuple(p.name for p in parts), entries())


# -- the database sink -----------------------------------------------------------------------------------


class AuditSink(Protocol):
    """Where audit records go: a file (AuditLog) or the gallery store's PostgreSQL database (DatabaseAuditLog)."""

    def record(self, record: AuditRecord) -> None: ...

    def close(self) -> None: ...


AUDIT_TABLE = """
CREATE TABLE IF NOT EXISTS gatematch_audit (
    id bigserial PRIMARY KEY, at timestamptz NOT NULL, event text NOT NULL, client text NOT NULL,
    flight_id text NOT NULL, gallery_version text NOT NULL, camera_id text NOT NULL, gate_id text NOT NULL,
    decision text NOT NULL, traveler_id text NOT NULL, score double precision, confidence double precision,
    sequence bigint, encounter_id bigint, detail text NOT NULL, chain_seq bigint UNIQUE, chain_prev text,
    chain_hash text);
ALTER TABLE gatematch_audit ADD COLUMN IF NOT EXISTS chain_seq bigint UNIQUE;
ALTER TABLE gatematch_audit ADD COLUMN IF NOT EXISTS chain_prev text;
ALTER TABLE gatematch_audit ADD COLUMN IF NOT EXISTS chain_hash text;
CREATE OR REPLACE FUNCTION gatematch_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'gatematch_audit is append-only';
END $$;
DROP TRIGGER IF EXISTS gatematch_audit_append_only ON gatematch_audit;
CREATE TRIGGER gatematch_audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON gatematch_audit
    FOR EACH STATEMENT EXECUTE FUNCTION gatematch_audit_append_only();
"""
_RECORD_COLUMNS = tuple(f.name for f in fields(AuditRecord))
_COLUMNS = (*_RECORD_COLUMNS, *CHAIN_FIELDS)
AUDIT_SCHEMA_LOCK = 0x6761_7465_6D61_7403  # advisory lock keys (see gatematch.gallery_store_postgres)
AUDIT_CHAIN_LOCK = 0x6761_7465_6D61_7404


class DatabaseAuditLog:
    """Appends chained records to the table gatematch_audit of the gallery store's PostgreSQL database.

    The table refuses UPDATE, DELETE and TRUNCATE (a trigger), so the service's own database role cannot
    rewrite history. One connection, one committed INSERT per record, chained under a transaction-scoped
    advisory lock (replicas take turns); while the database is unreachable the records go to `fallback` (the
    audit file, with its own chain) instead, so none is lost.
    """

    def __init__(self, url: str, fallback: AuditLog):
        self._url = url
        self.fallback = fallback
        self._lock = threading.Lock()
        self._conn: psycopg.Connection | None = None
        try:
            with self._lock:
                conn = self._connection()
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_SCHEMA_LOCK,))
                    conn.execute(AUDIT_TABLE)
        except psycopg.Error as exc:
            raise GalleryStoreError("the audit table cannot be created", problem(exc)) from None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._url, autocommit=True)
        return self._conn

    def record(self, record: AuditRecord) -> None:
        with self._lock:
            try:
                conn = self._connection()
                with conn.transaction():
                    conn.execute("SELECT pg_advisory_xact_lock(%s)", (AUDIT_CHAIN_LOCK,))
                    head = conn.execute(
                        "SELECT chain_seq, chain_hash FROM gatematch_audit WHERE chain_seq IS NOT NULL"
                        " ORDER BY chain_seq DESC LIMIT 1"
                    ).fetchone()
                    entry = chained(record, head[0] + 1 if head else 1, head[1] if head else GENESIS)
                    conn.execute(
                        f"INSERT INTO gatematch_audit ({', '.join(_COLUMNS)})"
                        f" VALUES ({', '.join(['%s'] * len(_COLUMNS))})",
                        [entry[name] for name in _COLUMNS],
                    )
                return
            except psycopg.Error as exc:
                reason = problem(exc)
                if self._conn is not None:
                    self._conn.close()
                self._conn = None
        log.warning("audit database unreachable; record written to the audit file", extra={"reason": reason})
        self.fallback.record(record)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
        self.fallback.close()


def verify_database(url: str) -> ChainReport:
    """Check the chain of the gatematch_audit table (rows in chain order; rows outside the chain are named)."""
    try:
        with connect(url) as conn:
            rows = conn.execute(
                f"SELECT id, {', '.join(_COLUMNS)} FROM gatematch_audit ORDER BY chain_seq NULLS FIRST, id"
            ).fetchall()
    except psycopg.Error as exc:
        raise AuditLogError("the audit table cannot be read", problem(exc)) from None

    def entries() -> Iterator[tuple[str, Any]]:
        for row in rows:
            entry = dict(zip(_COLUMNS, row[1:], strict=True))
            entry["at"] = entry["at"].astimezone(dt.UTC).isoformat(timespec="milliseconds")
            yield f"row id {row[0]}", entry

    return check_chain(redact(url), ("gatematch_audit",), entries())


def verify_log(location: str | Path) -> ChainReport:
    """`gatematch audit verify`: an audit file (with its rotated files) or a PostgreSQL URL (the table)."""
    text = str(location)
    if text.startswith(("postgresql://", "postgres://")):
        return verify_database(text)
    return verify_file(Path(location))
