"""A resumable, chunked store of data-set embeddings, keyed by image sha256, read back memory-mapped.

One folder per pack and pipeline setting (the cache key). An embedding run appends its results as chunks while
it goes, each written atomically, so a run killed after five hours keeps all but its last unfinished chunk and
the next run embeds only the images no chunk holds. A chunk is a `.npy` file of fixed-size records (sha256,
template, acquired, quality passed); reading maps the files and gathers only the rows asked for, so a million
templates are never one array in memory. When a run ends, small chunks are merged into few large ones: every
chunk read back holds an open file (a memory map), and a store of thousands would exhaust the process's files.
"""

from __future__ import annotations

import contextlib
import fcntl
import secrets
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gatematch.atomicfile import TMP_MARK, fsync_dir, write_atomic
from gatematch.errors import ConfigError, DatasetError

DEFAULT_CHUNK_SIZE = (
    512  # rows per chunk a run writes: what a killed run can lose (~15 s of a 2-core machine)
)
CHUNK_PREFIX = "chunk-"
CHUNK_SUFFIX = ".npy"
COMPACT_BYTES = 64 << 20  # merged chunks grow to about this size: 1M 512-d templates in ~32 files
LOCK_FILE = ".lock"
DIGEST = "S64"  # hex sha256: hex never holds a NUL, which numpy's bytes type would strip


def record_dtype(dim: int) -> np.dtype:
    return np.dtype(
        [("sha256", DIGEST), ("embedding", "<f4", (dim,)), ("acquired", "?"), ("quality_passed", "?")]
    )


@dataclass(frozen=True)
class EmbeddedBatch:
    """Results for some images, in any order: zero templates where no face was found."""

    sha256: np.ndarray  # (B,) hex digests
    embeddings: np.ndarray  # (B, dim) float32
    acquired: np.ndarray  # (B,) bool
    quality_passed: np.ndarray  # (B,) bool

    def __len__(self) -> int:
        return len(self.sha256)

    def records(self, dim: int) -> np.ndarray:
        out = np.empty(len(self), record_dtype(dim))
        out["sha256"] = np.asarray(self.sha256, dtype=DIGEST)
        out["embedding"] = self.embeddings
        out["acquired"] = self.acquired
        out["quality_passed"] = self.quality_passed
        return out


class StoredTemplates:
    """(N, dim) float32 templates whose rows live in memory-mapped chunks; indexing gathers only those rows.

    Indexing takes what numpy's first axis takes (integers, an integer array, a boolean mask, a slice) and
    returns an ndarray, so protocols treat it like an in-memory matrix.
    """

    def __init__(self, chunks: Sequence[np.ndarray], chunk: np.ndarray, offset: np.ndarray, dim: int):
        self._chunks = chunks  # per chunk, its memory-mapped (rows, dim) template view
        self._chunk = chunk  # per row, which chunk holds it
        self._offset = offset  # per row, where in that chunk
        self.dim = dim

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self._chunk), self.dim)

    def __len__(self) -> int:
        return len(self._chunk)

    def select(self, rows: np.ndarray | slice) -> StoredTemplates:
        """A view of some rows (in that order), still on disk."""
        return StoredTemplates(self._chunks, self._chunk[rows], self._offset[rows], self.dim)

    def __getitem__(self, rows: np.ndarray | slice | int) -> np.ndarray:
        if isinstance(rows, int | np.integer):
            return self[np.array([rows])][0]
        chunk, offset = self._chunk[rows], self._offset[rows]
        if len(chunk) and (chunk == chunk[0]).all():  # the common case after compaction: one copy, not two
            return np.asarray(self._chunks[chunk[0]][offset])
        out = np.empty((len(chunk), self.dim), np.float32)
        order = np.argsort(chunk, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(chunk[order]) != 0]) if len(order) else []
        for begin, end in zip(starts, [*starts[1:], len(order)], strict=True):
            picked = order[begin:end]
            out[picked] = self._chunks[chunk[picked[0]]][offset[picked]]
        return out


@dataclass(frozen=True)
class StoredRows:
    """The stored results of a list of images, in that list's order."""

    templates: StoredTemplates
    acquired: np.ndarray
    quality_passed: np.ndarray


class EmbeddingStore:
    """The chunks of one pack and pipeline setting under `folder`; `dim` is the template size."""

    def __init__(self, folder: Path, dim: int):
        self.folder = Path(folder)
        self.dtype = record_dtype(dim)
        self.dim = dim

    def chunk_paths(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(
            p
            for p in self.folder.iterdir()
            if p.name.startswith(CHUNK_PREFIX) and p.name.endswith(CHUNK_SUFFIX)
        )

    def _open(self, path: Path) -> np.ndarray:
        try:
            records = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise DatasetError(f"embedding store chunk {path} cannot be read ({exc}); delete it") from None
        if records.dtype != self.dtype or records.ndim != 1:
            raise DatasetError(f"embedding store chunk {path} does not hold {self.dim}-d records; delete it")
        return records

    def digests(self) -> np.ndarray:
        """Every stored image's sha256, sorted, each once."""
        parts = [np.asarray(self._open(p)["sha256"]) for p in self.chunk_paths()]
        return np.unique(np.concatenate(parts)) if parts else np.empty(0, DIGEST)

    def rows(self, digests: Sequence[str]) -> StoredRows:
        """Templates and flags of `digests` (repeats allowed), gathered lazily from the chunks."""
        opened = [self._open(p) for p in self.chunk_paths()]
        stored = np.concatenate([r["sha256"] for r in opened]) if opened else np.empty(0, DIGEST)
        owner = np.repeat(np.arange(len(opened)), [len(r) for r in opened])
        offset = np.concatenate([np.arange(len(r)) for r in opened]) if opened else np.empty(0, np.int64)
        order = np.argsort(stored, kind="stable")
        wanted = np.asarray(digests, dtype=DIGEST)
        at = np.minimum(np.searchsorted(stored, wanted, sorter=order), max(len(stored) - 1, 0))
        if len(wanted) and (not len(stored) or (stored[order[at]] != wanted).any()):
            raise DatasetError(f"embedding store {self.folder} lacks some of the images asked for")
        chunk, row = owner[order[at]], offset[order[at]]
        acquired, quality_passed = np.zeros(len(wanted), bool), np.zeros(len(wanted), bool)
        for k, records in enumerate(opened):
            mine = chunk == k
            acquired[mine] = records["acquired"][row[mine]]
            quality_passed[mine] = records["quality_passed"][row[mine]]
        templates = StoredTemplates([r["embedding"] for r in opened], chunk, row, self.dim)
        return StoredRows(templates, acquired, quality_passed)

    @contextlib.contextmanager
    def writer(self, chunk_size: int) -> Iterator[ChunkWriter]:
        """The one writer of this store (an exclusive lock; a second run fails at once rather than interleave).

        Leftovers of a killed write are removed first; on the way out, buffered rows are written (also on
        Ctrl-C) and small chunks merged.
        """
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        with (self.folder / LOCK_FILE).open("a") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise ConfigError(f"embedding store {self.folder} is in use by another run") from None
            for leftover in self.folder.glob(f"{CHUNK_PREFIX}*{TMP_MARK}*"):
                leftover.unlink()
            writer = ChunkWriter(self, chunk_size)
            try:
                yield writer
            finally:
                writer.flush()
            self.compact()

    def write_chunk(self, records: np.ndarray) -> Path:
        path = self.folder / f"{CHUNK_PREFIX}{time.time_ns():020d}-{secrets.token_hex(4)}{CHUNK_SUFFIX}"
        write_atomic(path, lambda out: np.save(out, records))
        return path

    def compact(self) -> None:
        """Merge chunks smaller than COMPACT_BYTES into chunks of about that size (call under the writer lock).

        The merged chunk is written before its sources are removed: a crash in between leaves the same rows
        twice, which readers tolerate and the next merge drops.
        """
        paths = self.chunk_paths()
        small = [p for p in paths if p.stat().st_size < COMPACT_BYTES]
        if len(small) < 2:
            return
        kept = [np.asarray(self._open(p)["sha256"]) for p in paths if p not in small]
        known = np.unique(np.concatenate(kept)) if kept else np.empty(0, DIGEST)
        groups: list[list[Path]] = [[]]
        size = 0
        for path in small:
            if groups[-1] and size + path.stat().st_size > COMPACT_BYTES:
                groups.append([])
                size = 0
            groups[-1].append(path)
            size += path.stat().st_size
        for group in groups:
            if len(group) < 2:
                continue
            records = np.concatenate([np.load(p) for p in group])
            _, first = np.unique(records["sha256"], return_index=True)
            records = records[np.sort(first)]
            records = records[~np.isin(records["sha256"], known)]
            self.write_chunk(records)
            for path in group:
                path.unlink()
            fsync_dir(self.folder)


class ChunkWriter:
    """Buffers results and writes a chunk each time `chunk_size` rows have arrived."""

    def __init__(self, store: EmbeddingStore, chunk_size: int):
        self.store = store
        self.chunk_size = chunk_size
        self._pending: list[np.ndarray] = []
        self._rows = 0
        self.chunks_written = 0

    def add(self, batch: EmbeddedBatch) -> None:
        self._pending.append(batch.records(self.store.dim))
        self._rows += len(batch)
        if self._rows >= self.chunk_size:
            self.flush()

    def flush(self) -> None:
        if self._rows:
            self.store.write_chunk(np.concatenate(self._pending))
            self.chunks_written += 1
        self._pending, self._rows = [], 0
