"""The resumable embedding store: chunks written as results come, read back memory-mapped in any order,
merged when a run ends, one writer at a time, and nothing half-written ever read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from gatematch.benchmarks import embedding_store
from gatematch.benchmarks.embedding_store import EmbeddedBatch, EmbeddingStore, StoredTemplates
from gatematch.errors import ConfigError, DatasetError

DIM = 8


def batch(first: int, count: int) -> EmbeddedBatch:
    """Rows first..first+count-1: digest k, template filled with k, row 3 of every ten failed to acquire."""
    keys = np.arange(first, first + count)
    templates = np.repeat(keys[:, None], DIM, axis=1).astype(np.float32)
    acquired = keys % 10 != 3
    templates[~acquired] = 0
    return EmbeddedBatch(np.array([f"{k:064x}" for k in keys]), templates, acquired, keys % 2 == 0)


def digests(keys) -> list[str]:
    return [f"{k:064x}" for k in keys]


def chunks(store: EmbeddingStore) -> list[str]:
    return [p.name for p in store.chunk_paths()]


def test_chunks_are_written_as_results_come_and_merged_at_the_end(tmp_path: Path):
    store = EmbeddingStore(tmp_path / "pack-key", DIM)
    with store.writer(chunk_size=4) as writer:
        for first in range(0, 12, 3):  # a chunk each time 4 or more rows are waiting: after 6 and 12 rows
            writer.add(batch(first, 3))
            assert len(chunks(store)) == (first + 3) // 6
        writer.add(batch(12, 1))
        assert len(chunks(store)) == 2
    assert writer.chunks_written == 3  # the last, partial one written on the way out
    assert len(chunks(store)) == 1  # then merged: every chunk was small
    assert (store.digests() == np.array(digests(range(13)), dtype="S64")).all()
    assert not [p for p in store.folder.iterdir() if ".tmp-" in p.name]


def test_rows_come_back_in_the_order_asked_with_repeats(tmp_path: Path):
    store = EmbeddingStore(tmp_path, DIM)
    with store.writer(chunk_size=100) as writer:
        writer.add(batch(0, 20))
    store.write_chunk(batch(20, 5).records(DIM))  # a second chunk, not merged
    wanted = [24, 3, 0, 3, 21, 7]
    rows = store.rows(digests(wanted))
    templates = rows.templates
    assert isinstance(templates, StoredTemplates) and templates.shape == (6, DIM)
    expected = np.array([[k] * DIM if k % 10 != 3 else [0] * DIM for k in wanted], np.float32)
    assert np.array_equal(templates[np.arange(6)], expected)
    assert np.array_equal(templates[2:5], expected[2:5])
    mask = np.array([True, False, True, False, False, True])
    assert np.array_equal(templates[mask], expected[mask])
    assert np.array_equal(templates[4], expected[4])
    assert np.array_equal(templates.select(np.array([5, 0]))[np.arange(2)], expected[[5, 0]])
    assert rows.acquired.tolist() == [k % 10 != 3 for k in wanted]
    assert rows.quality_passed.tolist() == [k % 2 == 0 for k in wanted]
    with pytest.raises(DatasetError, match="lacks"):
        store.rows(digests([1, 99]))


def test_duplicates_left_by_a_crash_between_merge_and_delete_are_read_once_and_dropped(tmp_path: Path):
    store = EmbeddingStore(tmp_path, DIM)
    for first in (0, 0, 4):  # the rows 0-3 twice, as a crash after writing a merged chunk would leave them
        store.write_chunk(batch(first, 4).records(DIM))
    assert len(store.digests()) == 8
    assert np.array_equal(store.rows(digests([2])).templates[0], np.full(DIM, 2, np.float32))
    with store.writer(chunk_size=10):
        pass
    (merged,) = store.chunk_paths()
    assert len(np.load(merged)) == 8


def test_merged_chunks_stay_near_the_size_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    store = EmbeddingStore(tmp_path, DIM)
    record = store.dtype.itemsize
    monkeypatch.setattr(embedding_store, "COMPACT_BYTES", 25 * record)
    with store.writer(chunk_size=5) as writer:
        writer.add(batch(0, 60))
        for first in range(60, 100, 5):
            writer.add(batch(first, 5))
    sizes = sorted(len(np.load(p)) for p in store.chunk_paths())
    assert sum(sizes) == 100 and len(sizes) > 1
    assert 60 in sizes  # a chunk already over the limit is left alone


def test_one_writer_at_a_time_and_leftovers_of_a_killed_write_are_removed(tmp_path: Path):
    store = EmbeddingStore(tmp_path, DIM)
    tmp_path.mkdir(exist_ok=True)
    leftover = tmp_path / "chunk-1-ab.npy.tmp-xyz"
    leftover.write_bytes(b"half a chunk")
    with store.writer(chunk_size=4) as writer:
        assert not leftover.exists()
        with pytest.raises(ConfigError, match="in use"), store.writer(chunk_size=4):
            pass
        writer.add(batch(0, 2))
    assert len(store.digests()) == 2


def test_an_interrupted_run_keeps_what_it_had_buffered(tmp_path: Path):
    store = EmbeddingStore(tmp_path, DIM)
    with pytest.raises(KeyboardInterrupt), store.writer(chunk_size=100) as writer:
        writer.add(batch(0, 7))
        raise KeyboardInterrupt
    assert len(store.digests()) == 7


def test_a_foreign_or_damaged_chunk_is_named(tmp_path: Path):
    store = EmbeddingStore(tmp_path, DIM)
    EmbeddingStore(tmp_path, DIM + 1).write_chunk(np.zeros(3, embedding_store.record_dtype(DIM + 1)))
    with pytest.raises(DatasetError, match=r"does not hold 8-d records"):
        store.digests()
    for path in store.chunk_paths():
        path.write_bytes(b"not numpy")
    with pytest.raises(DatasetError, match="cannot be read"):
        store.rows(digests([0]))
