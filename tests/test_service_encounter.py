"""Encounter tracking and fusion against a real exhaustive cosine search over unit templates."""

from __future__ import annotations

import numpy as np
import pytest

from gatematch.gallery import Candidate, SearchResult
from gatematch.service.config import EncounterConfig
from gatematch.service.encounter import MATCH, NO_MATCH, EncounterTracker, Sighting, centre_shift, iou

DIM, THRESHOLD = 128, 0.5
RNG = np.random.default_rng(7)


def _unit(v: np.ndarray) -> np.ndarray:
    return (v / np.linalg.norm(v, axis=-1, keepdims=True)).astype(np.float32)


GALLERY = _unit(RNG.standard_normal((40, DIM)))


def search(probe: np.ndarray) -> SearchResult:
    scores = GALLERY @ probe
    order = np.argsort(-scores)[:5]
    candidates = tuple(Candidate(f"t{i}", float(scores[i]), int(i), None, None) for i in order)
    top = candidates[0] if candidates[0].score >= THRESHOLD else None
    return SearchResult("BA117", 1, len(GALLERY), candidates, THRESHOLD, None, None, top)


def noisy(traveler: int, noise: float) -> np.ndarray:
    """A probe of `traveler` whose cosine to the enrolled template is exactly 1/sqrt(1 + noise^2)."""
    enrolled = GALLERY[traveler]
    direction = RNG.standard_normal(DIM)
    direction -= (direction @ enrolled) * enrolled  # orthogonal, so the cosine does not depend on the draw
    return _unit(enrolled + noise * _unit(direction))


def box(x: float, size: float = 100.0) -> tuple[float, float, float, float]:
    return (x, 100.0, x + size, 100.0 + size)


def tracker(encounter_s: float = 2.0) -> EncounterTracker:
    return EncounterTracker(
        EncounterConfig(min_frames=2, strong_margin=0.15, lost_after_ms=500), encounter_s, search
    )


def test_geometry() -> None:
    assert iou(box(0), box(0)) == pytest.approx(1.0)
    assert iou(box(0), box(50)) == pytest.approx(1 / 3)
    assert iou(box(0), box(300)) == 0.0
    assert centre_shift(box(0), box(40)) == pytest.approx(0.4)


def test_moderate_evidence_matches_on_the_second_frame_once() -> None:
    t = tracker()
    ids, outcomes = t.observe(0.0, 1, [Sighting(box(0), 0.8, noisy(7, 1.2))])  # cosine ~0.64: not strong
    assert outcomes == []
    ids2, outcomes = t.observe(0.1, 2, [Sighting(box(20), 0.9, noisy(7, 1.2))])
    assert ids2 == ids
    assert [(o.decision, o.result.match.traveler_id, o.frames_used) for o in outcomes] == [(MATCH, "t7", 2)]
    assert (outcomes[0].first_sequence, outcomes[0].last_sequence) == (1, 2)
    _, later = t.observe(0.2, 3, [Sighting(box(40), 0.9, noisy(7, 1.2))])
    assert later == [] and t.tick(5.0) == []  # one decision per encounter


def test_strong_evidence_matches_at_once() -> None:
    _, outcomes = tracker().observe(0.0, 1, [Sighting(box(0), 0.9, noisy(3, 0.3))])
    assert [(o.decision, o.result.match.traveler_id) for o in outcomes] == [(MATCH, "t3")]


def test_fusion_lifts_frames_that_are_each_below_threshold() -> None:
    frames = [noisy(11, 2.0) for _ in range(3)]  # each ~0.45, below the threshold
    assert all(search(f).match is None for f in frames)
    t = tracker()
    outcomes = []
    for i, frame in enumerate(frames):
        outcomes += t.observe(i * 0.1, i, [Sighting(box(i * 10), 0.5, frame)])[1]
    assert [(o.decision, o.result.match.traveler_id) for o in outcomes] == [(MATCH, "t11")]


def test_unknown_face_gets_no_match_when_the_budget_runs_out() -> None:
    t = tracker(encounter_s=1.0)
    stranger = _unit(RNG.standard_normal(DIM))
    decisions = []
    for i in range(15):
        decisions += t.observe(i * 0.1, i, [Sighting(box(i), 0.9, stranger)])[1]
    assert [(o.decision, o.frames_used) for o in decisions] == [(NO_MATCH, 3)]
    assert decisions[0].elapsed_s == pytest.approx(1.0)
    assert decisions[0].result is not None and decisions[0].result.match is None


def test_a_face_that_leaves_undecided_ends_with_no_match() -> None:
    t = tracker()
    t.observe(0.0, 1, [Sighting(box(0), 0.2, None)])  # quality failed: nothing to search
    outcomes = t.tick(0.7)
    assert [(o.decision, o.frames_used, o.result) for o in outcomes] == [(NO_MATCH, 0, None)]


def test_two_faces_are_two_encounters() -> None:
    t = tracker()
    ids, outcomes = t.observe(
        0.0, 1, [Sighting(box(0), 0.9, noisy(1, 1.2)), Sighting(box(600), 0.9, noisy(2, 1.2))]
    )
    assert outcomes == []
    ids2, outcomes = t.observe(
        0.1, 2, [Sighting(box(610), 0.9, noisy(2, 1.2)), Sighting(box(10), 0.9, noisy(1, 1.2))]
    )
    assert len(set(ids)) == 2 and ids2 == ids[::-1]
    assert sorted((o.encounter_id, o.result.match.traveler_id) for o in outcomes) == sorted(
        [(ids[0], "t1"), (ids[1], "t2")]
    )
