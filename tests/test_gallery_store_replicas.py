"""Replicas sharing one PostgreSQL gallery store (a real throwaway cluster): each keeps the galleries in memory
and follows the others' writes and purges within a second, the retention purge runs on one replica at a time,
and a replica keeps serving from memory while the database restarts, then catches up."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

import psycopg
import pytest

from gatematch.errors import GalleryNotFoundError, GalleryStoreError
from gatematch.gallery_store_postgres import PURGE_LOCK, PostgresGalleryStore
from support.drafts import BEFORE, DEPARTURE, EMBEDDER, RAW, draft, probe_of
from support.postgres import PostgresCluster

WITHIN_S = 1.0  # how soon a replica must know


def wait_for(condition: Callable[[], bool], timeout: float) -> float:
    """Seconds until `condition()` held; fails after `timeout`."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"condition not met within {timeout} s")
        time.sleep(0.01)
    return time.monotonic() - start


@pytest.fixture
def replicas(postgres: PostgresCluster) -> Iterator[tuple[PostgresGalleryStore, PostgresGalleryStore, list]]:
    """Two following stores (two service replicas) on one new database; B records what it is told about
    the database's reachability."""
    url = postgres.database()
    told: list[tuple[bool, str]] = []
    a = PostgresGalleryStore(url, follow=True)
    b = PostgresGalleryStore(url, follow=True, on_reachable=lambda up, why: told.append((up, why)))
    yield a, b, told
    a.close()
    b.close()


def finds(store: PostgresGalleryStore, gallery_id: str, centres, traveler: str) -> bool:
    try:
        gallery = store.load(gallery_id, now=BEFORE)
    except GalleryNotFoundError:
        return False
    found = gallery.search(probe_of(centres, int(traveler[-4:])), EMBEDDER, None, point=RAW, now=BEFORE)
    return found.match is not None and found.match.traveler_id == traveler


def test_a_version_written_through_one_replica_is_searchable_on_the_other_within_a_second(replicas) -> None:
    a, b, _ = replicas
    first, centres = draft()
    gid = a.write(first, now=BEFORE).info.gallery_id
    assert finds(a, gid, centres, "T0003"), "the writer reads its own write at once"
    waited = wait_for(lambda: finds(b, gid, centres, "T0003"), WITHIN_S)
    assert [g.gallery_id for g in b.galleries("GM101")] == [gid]

    second, centres2 = draft(travelers=6, seed=3, tag="V")
    a.write(second, now=BEFORE)
    waited = max(waited, wait_for(lambda: finds(b, gid, centres2, "V0004"), WITHIN_S))
    assert b.load(gid, now=BEFORE).info.version == 2
    print(f"replica B followed within {waited * 1000:.0f} ms")


def test_a_purge_through_one_replica_is_refused_by_the_other_within_a_second(replicas) -> None:
    a, b, _ = replicas
    gallery_draft, centres = draft()
    gid = a.write(gallery_draft, now=BEFORE).info.gallery_id
    wait_for(lambda: finds(b, gid, centres, "T0001"), WITHIN_S)
    a.purge(gid)
    wait_for(lambda: not b.galleries("GM101"), WITHIN_S)
    with pytest.raises(GalleryNotFoundError):
        b.load(gid, now=BEFORE)


def test_the_retention_purge_runs_on_one_replica_at_a_time(replicas, postgres: PostgresCluster) -> None:
    a, b, _ = replicas
    gid = a.write(draft()[0], now=BEFORE).info.gallery_id
    after = DEPARTURE + timedelta(hours=13)
    with psycopg.connect(a._url) as other, other.transaction():  # a third replica is purging right now
        other.execute("SELECT pg_advisory_xact_lock(%s)", (PURGE_LOCK,))
        assert a.purge_expired(now=after) == [] and b.purge_expired(now=after) == []
        assert a.info(gid).gallery_id == gid, "skipped, not half-done"
    done = []
    threads = [threading.Thread(target=lambda s=s: done.append(s.purge_expired(now=after))) for s in (a, b)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(done) == [[], [gid]], "exactly one replica purged it"
    wait_for(lambda: not a.galleries() and not b.galleries(), WITHIN_S)


def test_a_replica_serves_from_memory_while_the_database_restarts_and_catches_up(
    replicas, postgres: PostgresCluster
) -> None:
    a, b, told = replicas
    gallery_draft, centres = draft()
    gid = a.write(gallery_draft, now=BEFORE).info.gallery_id
    wait_for(lambda: finds(b, gid, centres, "T0005"), WITHIN_S)
    postgres.stop("fast")
    try:
        wait_for(lambda: not b.reachable, 10)
        assert told[-1][0] is False and told[-1][1], "told, with the reason"
        for _ in range(20):  # matching goes on from memory
            assert finds(b, gid, centres, "T0005")
        assert [g.gallery_id for g in b.galleries("GM101")] == [gid]
        with pytest.raises(GalleryStoreError, match="unreachable"):
            a.write(draft(seed=9)[0], now=BEFORE)
    finally:
        postgres.start()
    wait_for(lambda: b.reachable, 10)
    assert told[-1] == (True, "")
    newer, centres2 = draft(travelers=4, seed=11, tag="W")
    a.write(newer, now=BEFORE)
    wait_for(lambda: finds(b, gid, centres2, "W0002"), WITHIN_S)
