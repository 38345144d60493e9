"""What the gate day needs from a gallery store, on both backends: arrival and departure galleries of one flight
number side by side, deltas written only over the version they were made from (gatematch.gallery_delta), and
run-time gate assignments (assigned, reassigned, released, followed by replicas). Synthetic templates."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from gatematch.enrollment import Enrollment
from gatematch.errors import (
    AssignmentNotFoundError,
    GalleryConflictError,
    ManifestError,
    TravelerNotFoundError,
    WrongPackError,
)
from gatematch.gallery import ARRIVAL, DEPARTURE
from gatematch.gallery_delta import apply_delta, start_delta
from gatematch.gallery_store import gallery_id_for, is_database_url, open_store
from gatematch.gallery_store_postgres import PostgresGalleryStore
from gatematch.gallery_store_sqlite import DB_NAME
from gatematch.gates import flights_in_force
from gatematch.template_crypto import MAGIC, Keyring, TemplateKey, generate_key, sealed_key_id
from support.drafts import BEFORE, DIM, EMBEDDER, RAW, draft, probe_of, unit
from support.drafts import DEPARTURE as SCHEDULED
from support.stores import StoreBackend

ASSIGNED = BEFORE  # when assignments are made in these tests


@pytest.fixture
def backend(store_location: str, postgres_cluster) -> StoreBackend:
    cluster = postgres_cluster if is_database_url(store_location) else None
    return StoreBackend(store_location, cluster)


def matches(store, gallery_id: str, probe: np.ndarray) -> str | None:
    found = store.load(gallery_id, now=BEFORE).search(probe, EMBEDDER, None, point=RAW, now=BEFORE)
    return found.match.traveler_id if found.match else None


# -- arrivals and departures -------------------------------------------------------------------------------


def test_an_arrival_and_a_departure_of_one_flight_number_are_two_galleries(backend) -> None:
    store = backend.open()
    outbound, out_centres = draft(travelers=5, seed=1, tag="D")
    inbound, in_centres = draft(travelers=5, seed=2, tag="A")
    inbound = replace(inbound, direction=ARRIVAL, departure=SCHEDULED - timedelta(hours=9))
    departure = store.write(outbound, now=BEFORE).info
    arrival = store.write(inbound, now=BEFORE).info
    assert departure.gallery_id == gallery_id_for("GM101", SCHEDULED) == "GM101_20300501T1830Z"
    assert arrival.gallery_id == "GM101_20300501T0930Z_arr"
    assert (departure.direction, arrival.direction) == (DEPARTURE, ARRIVAL)
    assert {(i.gallery_id, i.direction) for i in store.galleries("GM101")} == {
        (departure.gallery_id, DEPARTURE),
        (arrival.gallery_id, ARRIVAL),
    }
    assert matches(store, departure.gallery_id, probe_of(out_centres, 3)) == "D0003"
    assert matches(store, arrival.gallery_id, probe_of(in_centres, 3)) == "A0003"
    assert matches(store, arrival.gallery_id, probe_of(out_centres, 3)) is None
    # the same minute in both directions still gives two galleries
    same_time = store.write(replace(inbound, departure=SCHEDULED), now=BEFORE).info
    assert same_time.gallery_id == "GM101_20300501T1830Z_arr" != departure.gallery_id


def test_a_store_made_before_directions_existed_opens_with_its_galleries_as_departures(
    tmp_path: Path,
) -> None:
    root = tmp_path / "old"
    store = open_store(root)
    gallery_draft, centres = draft(travelers=4)
    gid = store.write(gallery_draft, now=BEFORE).info.gallery_id
    with sqlite3.connect(root / DB_NAME) as con:  # the table as it was created before this column existed
        con.execute("ALTER TABLE galleries DROP COLUMN direction")
    reopened = open_store(root)
    assert reopened.info(gid).direction == DEPARTURE
    assert matches(reopened, gid, probe_of(centres, 2)) == "T0002"
    # the column came back after key_id, not where a new store has it: rows are written by column name
    inbound, in_centres = draft(travelers=3, seed=6, tag="A")
    arrival = reopened.write(replace(inbound, direction=ARRIVAL), now=BEFORE).info
    assert (arrival.direction, arrival.key_id) == (ARRIVAL, "") and arrival.gallery_id.endswith("_arr")
    assert matches(reopened, arrival.gallery_id, probe_of(in_centres, 1)) == "A0001"


# -- deltas --------------------------------------------------------------------------------------------------


def enroller() -> SimpleNamespace:
    """What an Enrollment needs of a pipeline to take precomputed templates (no model involved)."""
    return SimpleNamespace(pack=SimpleNamespace(name="default", embedder=EMBEDDER), embedding_size=DIM)


def additions(store, gallery_id: str, templates: dict[str, np.ndarray]) -> Enrollment:
    enrollment = start_delta(store, gallery_id, enroller(), batch_size=8)  # type: ignore[arg-type]
    enrollment.add_templates([(t, v.tolist()) for t, v in templates.items()], EMBEDDER)
    return enrollment


@pytest.fixture
def flight(backend):
    store = backend.open(key=TemplateKey.from_base64(generate_key()))
    gallery_draft, centres = draft(travelers=8)
    info = store.write(gallery_draft, now=BEFORE).info
    return store, info, centres


def test_a_delta_adds_and_removes_travelers_and_carries_the_others_over_bit_for_bit(flight) -> None:
    store, first, centres = flight
    before = store.load(first.gallery_id, now=BEFORE)
    late = unit(np.random.default_rng(7).normal(size=DIM))
    result = apply_delta(
        store, first.gallery_id, additions(store, first.gallery_id, {"LATE1": late}), ["T0005"], now=BEFORE
    )
    info = result.info
    assert not result.unchanged and result.added == ("LATE1",) and result.removed == ("T0005",)
    assert info.version == first.version + 1 and info.content_hash != first.content_hash
    assert (info.travelers, info.templates) == (8, 16 - 2 + 1)
    assert info.expires_at == first.expires_at and info.encrypted and info.direction == DEPARTURE
    assert matches(store, first.gallery_id, late) == "LATE1"
    assert matches(store, first.gallery_id, probe_of(centres, 5)) is None
    assert matches(store, first.gallery_id, probe_of(centres, 6)) == "T0006"
    after = store.load(first.gallery_id, now=BEFORE)
    kept = [row for row in range(16) if before.traveler_ids[before.template_traveler[row]] != "T0005"]
    assert np.array_equal(after.vectors()[: len(kept)], before.vectors()[kept]), (
        "the others are not re-embedded"
    )
    assert [p.traveler_id for p in store.provenance(first.gallery_id)][-1] == "LATE1"
    found = before.search(probe_of(centres, 5), EMBEDDER, None, point=RAW, now=BEFORE)
    assert found.match.traveler_id == "T0005", "the previous snapshot is immutable"
    assert "NOFACE" in [t.traveler_id for t in store.travelers(first.gallery_id)], "failed travelers stay"


def test_adding_what_is_stored_is_a_no_op_and_a_new_photo_replaces_a_travelers_templates(flight) -> None:
    store, first, _ = flight
    late = unit(np.random.default_rng(8).normal(size=DIM))
    added = apply_delta(
        store, first.gallery_id, additions(store, first.gallery_id, {"LATE1": late}), now=BEFORE
    )
    again = apply_delta(
        store, first.gallery_id, additions(store, first.gallery_id, {"LATE1": late}), now=BEFORE
    )
    assert again.unchanged and again.info.version == added.info.version
    better = unit(np.random.default_rng(9).normal(size=DIM))
    replaced = apply_delta(
        store, first.gallery_id, additions(store, first.gallery_id, {"LATE1": better}), now=BEFORE
    )
    assert replaced.info.version == added.info.version + 1 and replaced.info.templates == added.info.templates
    assert (
        matches(store, first.gallery_id, better) == "LATE1" and matches(store, first.gallery_id, late) is None
    )


def test_a_delta_refuses_unknown_travelers_empty_deltas_and_another_embedder(flight) -> None:
    store, first, _ = flight
    with pytest.raises(TravelerNotFoundError, match="NOBODY"):
        apply_delta(store, first.gallery_id, None, ["T0001", "NOBODY"], now=BEFORE)
    with pytest.raises(ManifestError, match="adds and removes nobody"):
        apply_delta(store, first.gallery_id, None, [], now=BEFORE)
    other = SimpleNamespace(
        pack=SimpleNamespace(name="x", embedder=SimpleNamespace(name="w600k", sha256="b" * 64))
    )
    with pytest.raises(WrongPackError):
        start_delta(store, first.gallery_id, other, batch_size=8)  # type: ignore[arg-type]
    assert store.info(first.gallery_id).version == first.version, "nothing was written"


def test_a_write_over_another_version_than_its_base_is_refused(flight) -> None:
    store, first, _ = flight
    store.write(draft(travelers=3, seed=4)[0], now=BEFORE)  # another writer: version 2
    stale = replace(draft(travelers=2, seed=5)[0], content_hash="delta-on-v1")
    with pytest.raises(GalleryConflictError, match="version 1"):
        store.write(stale, now=BEFORE, base=(first.version, first.content_hash))
    assert store.info(first.gallery_id).version == 2


def test_a_delta_merges_again_onto_a_version_written_meanwhile(flight, monkeypatch) -> None:
    """Another writer commits between the delta's read and its write: the delta lands on the new version."""
    store, first, centres = flight
    late = unit(np.random.default_rng(10).normal(size=DIM))
    enrollment = additions(store, first.gallery_id, {"LATE1": late})
    write = store.write
    interfered = []

    def racing_write(gallery_draft, *args, **kwargs):
        if not interfered:
            interfered.append(True)
            write(replace(draft(travelers=8)[0], content_hash="another writer"), now=BEFORE)
        return write(gallery_draft, *args, **kwargs)

    monkeypatch.setattr(store, "write", racing_write)
    result = apply_delta(store, first.gallery_id, enrollment, ["T0002"], now=BEFORE)
    assert result.info.version == first.version + 2
    assert matches(store, first.gallery_id, late) == "LATE1"
    assert matches(store, first.gallery_id, probe_of(centres, 2)) is None


def test_a_delta_across_a_key_rotation_is_sealed_under_the_newest_key(backend, monkeypatch) -> None:
    """`gatematch keys rotate` reseals between a delta's read and its write: the reseal is a version like any
    other, so the delta merges again onto it, is sealed under the newest key and expires when the gallery did."""
    old, new = TemplateKey.from_base64(generate_key()), TemplateKey.from_base64(generate_key())
    gallery_draft, centres = draft(travelers=8)
    first = backend.open(key=old).write(gallery_draft, now=BEFORE).info
    gid = first.gallery_id
    rotating = backend.open(key=Keyring([old, new]))  # type: ignore[arg-type]
    late = unit(np.random.default_rng(11).normal(size=DIM))
    enrollment = additions(rotating, gid, {"LATE1": late})
    write = rotating.write
    resealed = []

    def reseal_then_write(gallery_draft, *args, **kwargs):
        if not resealed:
            resealed.append(rotating.reseal(gid))
        return write(gallery_draft, *args, **kwargs)

    monkeypatch.setattr(rotating, "write", reseal_then_write)
    info = apply_delta(rotating, gid, enrollment, ["T0002"], now=BEFORE).info
    assert resealed == [True] and info.version == first.version + 2, "v2 the reseal, v3 the delta onto it"
    stored = backend.index_bytes(gid)
    assert stored.startswith(MAGIC) and sealed_key_id(stored) == info.key_id == new.key_id
    assert info.expires_at == first.expires_at and info.encrypted
    only_new = backend.open(key=new)  # the old key can go: the delta left nothing sealed under it
    assert matches(only_new, gid, late) == "LATE1" and matches(only_new, gid, probe_of(centres, 3)) == "T0003"
    assert matches(only_new, gid, probe_of(centres, 2)) is None


# -- run-time gate assignments -----------------------------------------------------------------------------


def test_a_gate_is_assigned_reassigned_and_released(backend) -> None:
    store = backend.open()
    starts, ends = ASSIGNED, ASSIGNED + timedelta(hours=3)
    first = store.assign_gate("A1", "GM101", starts, ends, "ops", now=ASSIGNED).assignment
    later = store.assign_gate("A1", "GM303", ends, ends + timedelta(hours=2), "ops", now=ASSIGNED).assignment
    assert first.in_force(ASSIGNED + timedelta(minutes=1)) and not later.in_force(
        ASSIGNED + timedelta(minutes=1)
    )
    assert flights_in_force(store.gate_assignments(ASSIGNED, "A1"), "A1", ASSIGNED) == {"GM101"}

    moved = store.assign_gate("A1", "GM202", starts, ends, "supervisor", replace=True, now=ASSIGNED)
    assert [r.assignment_id for r in moved.released] == [first.assignment_id], (
        "the later window is not touched"
    )
    assert moved.released[0].released_by == "supervisor" and moved.released[0].released_at == ASSIGNED
    current = store.gate_assignments(ASSIGNED)
    assert [(a.flight_id, a.assigned_by) for a in current] == [("GM202", "supervisor"), ("GM303", "ops")]
    assert flights_in_force(current, "A1", ASSIGNED) == {"GM202"}

    released = store.release_gate(moved.assignment.assignment_id, "ops", now=ASSIGNED)
    assert released.released_at == ASSIGNED and released.released_by == "ops"
    assert store.release_gate(released.assignment_id, "again", now=ASSIGNED).released_by == "ops"
    assert flights_in_force(store.gate_assignments(ASSIGNED), "A1", ASSIGNED) == frozenset()
    assert [a.flight_id for a in store.gate_assignments(ends)] == ["GM303"]
    assert store.gate_assignments(ends + timedelta(hours=2)) == [], "an assignment ends by itself"
    with pytest.raises(AssignmentNotFoundError):
        store.release_gate(999_999, "ops", now=ASSIGNED)


def test_a_replica_follows_gate_assignments_within_a_second(postgres) -> None:
    url = postgres.database()
    a, b = PostgresGalleryStore(url, follow=True), PostgresGalleryStore(url, follow=True)
    try:
        now = datetime.now(UTC)
        made = a.assign_gate("B7", "GM909", now - timedelta(minutes=1), now + timedelta(hours=1), "ops")
        assert [x.flight_id for x in a.gate_assignments(gate_id="B7")] == ["GM909"], "read your own writes"
        start = time.monotonic()
        while [x.flight_id for x in b.gate_assignments(gate_id="B7")] != ["GM909"]:
            assert time.monotonic() - start < 1.0, "replica B did not follow the assignment within a second"
            time.sleep(0.01)
        a.release_gate(made.assignment.assignment_id, "ops")
        while b.gate_assignments(gate_id="B7"):
            assert time.monotonic() - start < 2.0, "replica B did not follow the release within a second"
            time.sleep(0.01)
    finally:
        a.close()
        b.close()


def test_gate_assignments_and_galleries_are_purged_each_on_their_own(backend) -> None:
    """Assignments hold nothing biometric (kept in the clear, in a table of their own): the retention purge of a
    flight's gallery leaves its gate assignment, and the assignments' own clean-up (a day after they end) leaves
    the galleries."""
    store = backend.open(key=TemplateKey.from_base64(generate_key()))
    info = store.write(draft(travelers=4)[0], now=BEFORE).info
    expired = info.expires_at + timedelta(minutes=1)
    kept = store.assign_gate("A1", "GM101", ASSIGNED, expired + timedelta(hours=1), "ops", now=ASSIGNED)
    assert store.purge_expired(expired) == [info.gallery_id]
    assert [a.assignment_id for a in store.gate_assignments(expired)] == [kept.assignment.assignment_id]
    assert backend.rows_naming("GM101") == 1, "only the assignment row is left of flight GM101"

    later = kept.assignment.ends_at + timedelta(days=2)
    other, centres = draft(travelers=3, seed=3, flight="GM202", tag="L")
    other = replace(other, departure=later + timedelta(hours=6))
    other_id = store.write(other, now=later).info.gallery_id
    store.assign_gate("B2", "GM202", later, later + timedelta(hours=1), "ops", now=later)
    assert backend.rows_naming("GM101") == 0, "the ended assignment is deleted"
    found = store.load(other_id, now=later).search(probe_of(centres, 1), EMBEDDER, None, point=RAW, now=later)
    assert found.match is not None and found.match.traveler_id == "L0001"
