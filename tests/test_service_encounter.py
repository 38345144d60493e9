"""Encounter tracking and decisions against a real exhaustive search of synthetic templates (no models).

The gallery's templates and the calibration table are independent random unit vectors, so the thresholds the
tracker asks for are the true ones for these strangers.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gatematch.gallery import OperatingPoint, SearchResult
from gatematch.service.config import EncounterConfig
from gatematch.service.encounter import (
    LIVENESS_FAILED,
    MATCH,
    NO_MATCH,
    EncounterTracker,
    Sighting,
    centre_shift,
    iou,
)
from support.synthetic import EMBEDDER, at_cosine, calibration, gallery, strangers

TARGET = 0.003
TABLE = calibration()
CENTRES = strangers(40, seed=1)
GALLERY = gallery(CENTRES)
SAME_PERSON = float(TABLE.threshold_for_fmr(0.01))


class Recorder:
    """The search function a tracker is given, remembering the FPIR target of every call."""

    def __init__(self) -> None:
        self.targets: list[float] = []

    def __call__(self, template: np.ndarray, target_fpir: float, frames: int) -> SearchResult:
        self.targets.append(target_fpir)
        return GALLERY.search(template, EMBEDDER, TABLE, k=3, point=OperatingPoint(target_fpir))


def box(x: float, size: float = 100.0) -> tuple[float, float, float, float]:
    return (x, 100.0, x + size, 100.0 + size)


def face(
    template: np.ndarray | None, x: float = 0.0, quality: float = 0.8, live: bool | None = None
) -> Sighting:
    return Sighting(box(x), quality, template, live)


ONCE_AT_3 = EncounterConfig(fuse_best=3, decision_frames=(3,), fpir_shares=(1.0,), lost_after_ms=500)


def tracker(config: EncounterConfig = ONCE_AT_3, encounter_s: float = 2.0) -> EncounterTracker:
    return EncounterTracker(config, TARGET, encounter_s, SAME_PERSON)


def frames_of(traveler: int, count: int, cosine: float = 0.7, seed: int = 0) -> list[np.ndarray]:
    return [at_cosine(CENTRES[traveler], cosine, seed=seed + i) for i in range(count)]


def test_geometry() -> None:
    assert iou(box(0), box(0)) == pytest.approx(1.0)
    assert iou(box(0), box(50)) == pytest.approx(1 / 3)
    assert iou(box(0), box(300)) == 0.0
    assert centre_shift(box(0), box(40)) == pytest.approx(0.4)


def test_a_traveler_is_decided_once_at_the_checkpoint_and_stays_one_encounter() -> None:
    t, search = tracker(), Recorder()
    decisions, ids = [], set()
    for i, template in enumerate(frames_of(7, 6)):
        frame_ids, outcomes = t.observe(0.1 * i, i + 1, [face(template, x=5 * i)], search)
        ids.update(frame_ids)
        decisions += outcomes
    assert ids == {1}  # the same person moving a little is one encounter
    assert [d.decision for d in decisions] == [MATCH]
    decided = decisions[0]
    assert decided.frames_used == 3 and decided.frames_seen == 3 and decided.last_sequence == 3
    assert decided.result.match.traveler_id == "T007"
    assert search.targets == [TARGET]  # one search, at the whole target
    assert 0 < decided.false_match_probability <= TARGET
    assert t.close(1.0, search) == []  # decided encounters are not decided again


def test_a_stranger_gets_no_match_at_the_last_checkpoint_not_after_the_budget() -> None:
    t, search = tracker(), Recorder()
    stranger = strangers(1, seed=500)[0]
    outcomes = []
    for i in range(3):
        outcomes += t.observe(0.1 * i, i + 1, [face(at_cosine(stranger, 0.8, seed=i))], search)[1]
    assert [o.decision for o in outcomes] == [NO_MATCH]
    assert outcomes[0].result is not None and outcomes[0].result.match is None
    assert outcomes[0].false_match_probability is None


def test_a_tailgater_in_the_same_place_gets_an_encounter_and_a_decision_of_their_own() -> None:
    t, search = tracker(), Recorder()
    outcomes, ids = [], []
    for i, template in enumerate(frames_of(3, 3) + frames_of(9, 3, seed=50)):  # back to back, no gap
        frame_ids, decided = t.observe(0.1 * i, i + 1, [face(template)], search)
        ids += frame_ids
        outcomes += decided
    assert ids == [1, 1, 1, 2, 2, 2]
    assert [(o.encounter_id, o.decision, o.result.match.traveler_id) for o in outcomes] == [
        (1, MATCH, "T003"),
        (2, MATCH, "T009"),
    ]


def test_two_people_in_one_place_are_never_averaged() -> None:
    t, search = tracker(), Recorder()
    first, second = frames_of(3, 1)[0], frames_of(9, 1, seed=50)[0]
    assert float(first @ second) < SAME_PERSON
    ids_a, _ = t.observe(0.0, 1, [face(first)], search)  # one frame of traveler 3: undecided
    ids_b, _ = t.observe(0.1, 2, [face(second)], search)  # traveler 9 where 3 stood
    assert ids_a != ids_b
    outcomes = t.close(0.2, search)
    assert sorted(o.result.candidates[0].traveler_id for o in outcomes) == ["T003", "T009"]
    assert all(o.frames_used == 1 for o in outcomes)


def test_two_gate_sized_faces_at_once_are_each_decided_and_flagged() -> None:
    t, search = tracker(), Recorder()
    outcomes = []
    for i in range(3):
        pair = [face(frames_of(3, 3)[i], x=0), face(frames_of(9, 3, seed=50)[i], x=400)]
        ids, decided = t.observe(0.1 * i, i + 1, pair, search)
        assert ids == [1, 2]
        outcomes += decided
    assert sorted((o.result.match.traveler_id, o.tailgating) for o in outcomes) == [
        ("T003", True),
        ("T009", True),
    ]


def test_a_lone_traveler_is_not_flagged() -> None:
    t = tracker()
    outcomes = [
        o for i in range(3) for o in t.observe(0.1 * i, i + 1, [face(frames_of(3, 3)[i])], Recorder())[1]
    ]
    assert [o.tailgating for o in outcomes] == [False]


def test_quality_failed_faces_link_by_position_and_are_never_fused() -> None:
    t, search = tracker(), Recorder()
    ids, _ = t.observe(0.0, 1, [face(None)], search)
    ids2, _ = t.observe(0.1, 2, [face(frames_of(5, 1)[0], x=10)], search)
    assert ids == ids2
    outcome = t.close(0.3, search)[0]
    assert outcome.frames_used == 1 and outcome.frames_seen == 2


def test_frames_failing_liveness_are_never_fused_and_an_attack_ends_liveness_failed() -> None:
    t, search = tracker(), Recorder()
    for i, template in enumerate(frames_of(4, 4)):
        assert t.observe(0.1 * i, i + 1, [face(template, live=False)], search)[1] == []
    outcome = t.close(0.5, search)[0]
    assert outcome.decision == LIVENESS_FAILED and outcome.frames_used == 0
    assert search.targets == []  # nothing was searched: attack frames never reach the gallery


def test_a_lone_liveness_false_alarm_does_not_block_a_live_traveler() -> None:
    t, search = tracker(), Recorder()
    lives = [True, False, True, True]
    outcomes = [
        o
        for i, (tmpl, live) in enumerate(zip(frames_of(4, 4), lives, strict=True))
        for o in t.observe(0.1 * i, i + 1, [face(tmpl, live=live)], search)[1]
    ]
    assert [(o.decision, o.frames_used) for o in outcomes] == [(MATCH, 3)]


def test_mostly_failing_liveness_turns_a_match_into_liveness_failed() -> None:
    t, search = tracker(replace(ONCE_AT_3, decision_frames=(1,))), Recorder()
    t.observe(0.0, 1, [face(frames_of(4, 1)[0], live=False)], search)
    _, outcomes = t.observe(0.1, 2, [face(frames_of(4, 1, seed=9)[0], live=True)], search)
    assert [o.decision for o in outcomes] == [LIVENESS_FAILED]


def test_split_spending_searches_at_each_checkpoint_and_never_exceeds_the_target() -> None:
    config = replace(ONCE_AT_3, decision_frames=(1, 3), fpir_shares=(0.2, 0.8))
    t, search = tracker(config), Recorder()
    # the same weak view three times: below the threshold of a fifth of the target, above the one of 4/5
    weak = at_cosine(CENTRES[11], 0.345, seed=5)
    low, high = (
        GALLERY.search(weak, EMBEDDER, TABLE, point=OperatingPoint(s * TARGET)).threshold for s in (0.2, 0.8)
    )
    assert high < 0.345 < low
    outcomes = [o for i in range(3) for o in t.observe(0.1 * i, i + 1, [face(weak)], search)[1]]
    assert search.targets == pytest.approx([0.2 * TARGET, 0.8 * TARGET])
    assert [(o.decision, o.searches, o.result.match.traveler_id) for o in outcomes] == [(MATCH, 2, "T011")]
    assert 0.2 * TARGET < outcomes[0].false_match_probability <= TARGET


def test_an_encounter_ending_early_spends_what_is_left_in_one_final_search() -> None:
    config = replace(ONCE_AT_3, decision_frames=(1, 3), fpir_shares=(0.2, 0.8), lost_after_ms=300)
    t, search = tracker(config), Recorder()
    stranger = strangers(1, seed=77)[0]
    t.observe(0.0, 1, [face(at_cosine(stranger, 0.9))], search)
    t.observe(0.1, 2, [face(at_cosine(stranger, 0.9, seed=1))], search)
    outcomes = t.tick(0.6, search)  # the face left before the second checkpoint
    assert [o.decision for o in outcomes] == [NO_MATCH]
    assert search.targets == pytest.approx([0.2 * TARGET, 0.8 * TARGET])
    assert t.open_tracks == 0


def test_the_encounter_budget_decides_a_person_who_stays_without_enough_usable_frames() -> None:
    t, search = tracker(encounter_s=1.0), Recorder()
    t.observe(0.0, 1, [face(frames_of(2, 1)[0])], search)
    for i in range(1, 12):
        _, outcomes = t.observe(0.1 * i, i + 1, [face(None)], search)  # still there, never usable again
        if outcomes:
            break
    assert [o.decision for o in outcomes] == [MATCH] and i == 10
    assert outcomes[0].elapsed_s == pytest.approx(1.0)


def test_close_decides_every_open_encounter_and_forgets_them() -> None:
    t, search = tracker(), Recorder()
    t.observe(0.0, 1, [face(frames_of(1, 1)[0], x=0), face(frames_of(2, 1)[0], x=400)], search)
    outcomes = t.close(0.1, search)
    assert sorted(o.encounter_id for o in outcomes) == [1, 2] and t.open_tracks == 0


def test_encounter_fpir_meets_the_target_over_many_strangers() -> None:
    """The union bound in practice: 1,000 stranger encounters of 3 frames each, spending split in two."""
    config = replace(ONCE_AT_3, decision_frames=(1, 3), fpir_shares=(0.5, 0.5))
    search = Recorder()
    false_matches = 0
    people = strangers(1000, seed=1234)
    for n, person in enumerate(people):
        t = tracker(config)
        outcomes = [
            o
            for i in range(3)
            for o in t.observe(0.1 * i, i + 1, [face(at_cosine(person, 0.9, seed=n * 7 + i))], search)[1]
        ]
        false_matches += sum(o.decision == MATCH for o in outcomes)
    # target 0.003 -> 3 expected at most; 11 or more has probability 0.0003 under Poisson(3)
    assert false_matches <= 10
