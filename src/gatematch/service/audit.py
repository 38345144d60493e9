"""Append-only audit log of decisions and gallery administration: one JSON object per line in a file, fsynced,
or (with the galleries in PostgreSQL, `[audit] sink = "store"`) rows of an append-only table in that database.

Records who, when, which gallery, which decision and score. A record holds only short strings and numbers
(no field can take bytes, arrays, or a string longer than MAX_TEXT), so an image or a template cannot reach
the log even by mistake: a 128-d float32 template alone is 512 bytes, its base64 684 characters.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Protocol

import psycopg

from gatematch.errors import GalleryStoreError
from gatematch.gallery_store_postgres import connect, problem

log = logging.getLogger(__name__)
MAX_TEXT = 200
# Exact types only: bool, numpy scalars, bytes and arrays are refused rather than converted.
_ALLOWED: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (float, int)}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class AuditRecord:
    event: str  # match | encounter | gallery.load | gallery.delete | denied
    client: str
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


class AuditLog:
    """Appends records with O_APPEND and fsync, so concurrent writers never interleave and a crash loses none."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = threading.Lock()

    def record(self, record: AuditRecord) -> None:
        line = json.dumps(asdict(record), separators=(",", ":"), ensure_ascii=True) + "\n"
        with self._lock:
            os.write(self._fd, line.encode())
            os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


class AuditSink(Protocol):
    """Where audit records go: a file (AuditLog) or the gallery store's PostgreSQL database (DatabaseAuditLog)."""

    def record(self, record: AuditRecord) -> None: ...

    def close(self) -> None: ...


AUDIT_TABLE = """
CREATE TABLE IF NOT EXISTS gatematch_audit (
    id bigserial PRIMARY KEY, at timestamptz NOT NULL, event text NOT NULL, client text NOT NULL,
    flight_id text NOT NULL, gallery_version text NOT NULL, camera_id text NOT NULL, gate_id text NOT NULL,
    decision text NOT NULL, traveler_id text NOT NULL, score double precision, confidence double precision,
    sequence bigint, encounter_id bigint, detail text NOT NULL);
CREATE OR REPLACE FUNCTION gatematch_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'gatematch_audit is append-only';
END $$;
DROP TRIGGER IF EXISTS gatematch_audit_append_only ON gatematch_audit;
CREATE TRIGGER gatematch_audit_append_only BEFORE UPDATE OR DELETE OR TRUNCATE ON gatematch_audit
    FOR EACH STATEMENT EXECUTE FUNCTION gatematch_audit_append_only();
"""
_COLUMNS = tuple(f.name for f in fields(AuditRecord))
AUDIT_SCHEMA_LOCK = 0x6761_7465_6D61_7403  # advisory lock key (see gatematch.gallery_store_postgres)


class DatabaseAuditLog:
    """Appends records to the table gatematch_audit of the gallery store's PostgreSQL database.

    The table refuses UPDATE, DELETE and TRUNCATE (a trigger), so the service's own database role cannot
    rewrite history. One connection, one committed INSERT per record; while the database is unreachable the
    records go to `fallback` (the audit file) instead, so none is lost.
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
            raise GalleryStoreError(f"the audit table cannot be created: {problem(exc)}") from None

    def _connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._url, autocommit=True)
        return self._conn

    def record(self, record: AuditRecord) -> None:
        values = asdict(record)
        with self._lock:
            try:
                self._connection().execute(
                    f"INSERT INTO gatematch_audit ({', '.join(_COLUMNS)}) VALUES ({', '.join(['%s'] * len(_COLUMNS))})",
                    [values[name] for name in _COLUMNS],
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
