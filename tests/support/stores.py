"""One gallery store location, whichever backend, with what tests do behind the store's back: read or replace
a gallery's stored index (to damage it, or replay an old one), count its rows, read every byte at rest."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import psycopg

from gatematch.gallery_store import DEFAULT_RETENTION, GalleryStore, is_database_url, open_store
from gatematch.gallery_store_sqlite import DB_NAME
from gatematch.template_crypto import TemplateKey
from support.postgres import PostgresCluster


@dataclass(frozen=True)
class StoreBackend:
    location: str  # a folder, or a postgresql:// URL
    cluster: PostgresCluster | None = None  # the cluster holding the database, for PostgreSQL

    @property
    def name(self) -> str:
        return "postgres" if self.is_database else "sqlite"

    @property
    def is_database(self) -> bool:
        return is_database_url(self.location)

    def open(self, key: TemplateKey | None = None, retention: timedelta = DEFAULT_RETENTION) -> GalleryStore:
        return open_store(self.location, key, retention)

    # -- behind the store's back -------------------------------------------------------------------------

    def _index_file(self, gallery_id: str) -> Path:
        import sqlite3

        with sqlite3.connect(Path(self.location) / DB_NAME) as con:
            (name,) = con.execute(
                "SELECT index_file FROM galleries WHERE gallery_id = ?", (gallery_id,)
            ).fetchone()
        return Path(self.location) / name

    def index_bytes(self, gallery_id: str) -> bytes:
        if not self.is_database:
            return self._index_file(gallery_id).read_bytes()
        with psycopg.connect(self.location) as conn:
            (data,) = conn.execute(
                "SELECT index_data FROM gatematch_galleries WHERE gallery_id = %s", (gallery_id,)
            ).fetchone()
        return bytes(data)

    def replace_index(
        self, gallery_id: str, change: Callable[[bytes], bytes], fix_sha256: bool = False
    ) -> None:
        """Replace the stored index by `change(index)`; `fix_sha256` also records the new bytes' sha256 (an
        attacker with write access to the metadata too)."""
        data = change(self.index_bytes(gallery_id))
        digest = hashlib.sha256(data).hexdigest()
        if not self.is_database:
            import sqlite3

            self._index_file(gallery_id).write_bytes(data)
            if fix_sha256:
                with sqlite3.connect(Path(self.location) / DB_NAME) as con:
                    con.execute(
                        "UPDATE galleries SET index_sha256 = ? WHERE gallery_id = ?", (digest, gallery_id)
                    )
            return
        with psycopg.connect(self.location) as conn:
            conn.execute(
                "UPDATE gatematch_galleries SET index_data = %s WHERE gallery_id = %s", (data, gallery_id)
            )
            if fix_sha256:
                conn.execute(
                    "UPDATE gatematch_galleries SET index_sha256 = %s WHERE gallery_id = %s",
                    (digest, gallery_id),
                )

    def delete_index(self, gallery_id: str) -> None:
        """The index gone (a deleted file; in PostgreSQL an emptied column)."""
        if not self.is_database:
            self._index_file(gallery_id).unlink()
        else:
            self.replace_index(gallery_id, lambda _: b"")

    def rows_naming(self, text: str) -> int:
        """Rows of the store's tables that mention `text` in any column (the audit table aside)."""
        if not self.is_database:
            import sqlite3

            with sqlite3.connect(Path(self.location) / DB_NAME) as con:
                tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
                rows = [row for t in tables for row in con.execute(f"SELECT * FROM {t}")]
        else:
            with psycopg.connect(self.location) as conn:
                tables = [
                    r[0]
                    for r in conn.execute(
                        "SELECT tablename FROM pg_tables WHERE tablename LIKE 'gatematch%%'"
                    )
                    if r[0] != "gatematch_audit"
                ]
                rows = [row for t in tables for row in conn.execute(f"SELECT * FROM {t}")]
        return sum(text in str(row) for row in rows)

    def bytes_at_rest(self) -> dict[str, bytes]:
        """Every file the backend keeps (the store folder; for PostgreSQL the whole cluster, WAL included)."""
        if not self.is_database:
            return {p.name: p.read_bytes() for p in Path(self.location).iterdir()}
        assert self.cluster is not None
        with psycopg.connect(self.location, autocommit=True) as conn:
            conn.execute("CHECKPOINT")  # table pages on disk, not only in shared buffers
        return {str(p): p.read_bytes() for p in self.cluster.files()}
