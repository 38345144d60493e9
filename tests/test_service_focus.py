"""A camera stream's focus (service/focus.py) with a scripted pipeline on a simulated 5 fps clock (no models).

The scripted pipeline honours detection windows (a face whose centre lies outside the window asked for is not
found) and the per-face work the focus asks for, and counts what it embedded; the tracker, the search and the
calibration are the real ones over synthetic templates.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from gatematch.benchmarks.encounters import FRAME_BUDGET_S, Feed, replay
from gatematch.facepipeline import Skip
from gatematch.gallery import OperatingPoint, SearchResult
from gatematch.service.config import EncounterConfig, FocusConfig
from gatematch.service.dataplane import judge_frame, sightings
from gatematch.service.encounter import MATCH, NO_MATCH, EncounterOutcome, EncounterTracker, Sighting
from gatematch.service.focus import Focus, FocusedFrame, appearance, fills_frame, grown_window
from support.fakes import FakeFace, FakePipeline, crop_of
from support.synthetic import EMBEDDER, at_cosine, calibration, gallery, strangers

FPS = 5.0
CENTRES = strangers(30, seed=7)
GALLERY = gallery(CENTRES)
TABLE = calibration()
SAME_PERSON = float(TABLE.threshold_for_fmr(0.01))
WHOLE = (0, 0, 640, 480)
# Most tests here are about windows and re-embedding frame by frame: with no frame passed over, a frame's index
# is its window's. Passing over (the default, PASSING) has its own tests below.
FOCUS, PASSING, RULE = FocusConfig(pass_over=0), FocusConfig(), EncounterConfig()


def search(template: np.ndarray, target_fpir: float, frames: int) -> SearchResult:
    return GALLERY.search(template, EMBEDDER, TABLE, k=3, point=OperatingPoint(target_fpir))


def traveler(who: int, x: float = 280.0, *, look: int | None = None, seed: int = 0, **fields) -> FakeFace:
    """Traveler T<who>'s face, 80 px wide, at `x`: clearly them (cosine 0.8 to their enrolled template)."""
    return FakeFace(
        (x, 200.0, x + 80.0, 280.0),
        at_cosine(CENTRES[who], 0.8, seed=seed),
        look=who if look is None else look,
        **fields,
    )


class Camera:
    """A focus, its tracker and a scripted pipeline: scenes in, encounters and decisions out."""

    def __init__(
        self,
        scenes: dict[int, list[FakeFace]],
        focus: FocusConfig | None = FOCUS,
        rule: EncounterConfig = RULE,
        fps: float = FPS,
        delay_s: float = 0.0,
    ):
        self.fps, self.delay_s = fps, delay_s  # frames reach the tracker delay_s after they arrive
        self.pipeline = FakePipeline(scenes)
        self.tracker = EncounterTracker(rule, 0.003, 2.0, SAME_PERSON)
        self.focus = Focus(focus, rule, self.tracker, FRAME_BUDGET_S) if focus is not None else None
        self.encounters: list[list[int]] = []  # per frame: the encounter of each gate-sized face
        self.skipped: list[list[Skip]] = []  # per frame: what each detected face did not get
        self.decided: list[EncounterOutcome] = []
        self.fed: list[list[Sighting]] = []  # per frame: what the tracker was given
        self.passed: list[int] = []  # frames passed over (not analysed)

    def show(self, script: list[int], abandoned: set[int] = frozenset()) -> Camera:
        """Each scene of `script` as a frame; frames in `abandoned` are analysed but given up at their budget
        (as a stream does: the tracker never gets them)."""
        for index, scene in enumerate(script):
            now = index / self.fps
            if self.focus is not None and self.focus.pass_over(now):  # as the stream: nothing analysed
                self.passed.append(index)
                self.encounters.append([])
                self.skipped.append([])
                self.fed.append([])
                continue
            image = np.full((480, 640, 3), scene, np.uint8)
            focused = FocusedFrame(now)
            if self.focus is not None:
                analysis = self.focus.analyze(self.pipeline, image, focused)
            else:
                analysis = self.pipeline.analyze_batch([image])[0]
            if index in abandoned:
                self.encounters.append([])
                self.skipped.append([face.skipped for face in analysis.faces])
                continue
            assessment = judge_frame(analysis)
            self.fed.append(sightings(assessment))
            ids, outcomes = self.tracker.observe(now + self.delay_s, index + 1, self.fed[-1], search)
            if self.focus is not None:
                self.focus.follow(focused, assessment.gate_faces, self.fed[-1], ids)
            self.encounters.append(ids)
            self.skipped.append([face.skipped for face in analysis.faces])
            self.decided += outcomes
        self.decided += self.tracker.close(len(script) / self.fps, search)
        return self

    def decisions(self) -> list[tuple[str, str]]:
        return [
            (o.decision, o.result.match.traveler_id if o.result and o.result.match else "")
            for o in self.decided
        ]


def test_with_no_face_followed_every_frame_is_searched_whole() -> None:
    camera = Camera({0: []}).show([0] * 6)
    assert camera.pipeline.windows == [WHOLE] * 6


def test_a_followed_face_is_looked_for_in_a_window_and_the_whole_frame_is_scanned_every_second() -> None:
    camera = Camera({1: [traveler(4)]}).show([1] * 12)
    windows = camera.pipeline.windows
    assert [i for i, w in enumerate(windows) if w == WHOLE] == [0, 5, 10]  # scan_ms 1000 at 5 fps
    x1, y1, x2, y2 = windows[1]  # the face's box grown by one width on each side
    assert (x1, y1, x2, y2) == (200, 120, 440, 360)
    assert all(set(ids) == {1} for ids in camera.encounters), "one traveler, one encounter throughout"


@pytest.mark.parametrize("scale, grown", [(1.0, 96), (0.5, 120)])
def test_a_big_face_is_followed_in_a_window_grown_by_at_most_96_px_of_the_detectors_input(
    scale: float, grown: int
) -> None:
    big = replace(traveler(4), box=(260.0, 180.0, 380.0, 300.0))  # 120 px wide
    camera = Camera({1: [big]})
    camera.pipeline.scale = scale  # 96 input px: 96 frame px at full scale, 192 at half scale
    windows = camera.show([1] * 3).pipeline.windows
    assert windows[1] == (260 - grown, 180 - grown, 380 + grown, 300 + grown)


@pytest.mark.parametrize("focus", [FOCUS, PASSING], ids=["every frame", "passing over"])
@pytest.mark.parametrize("enters", range(1, 10))
def test_a_new_face_outside_the_window_is_found_within_the_bound(enters: int, focus: FocusConfig) -> None:
    """Bound: found by the first frame processed scan_ms after the last whole-frame search, i.e. less than
    scan_ms + one frame interval (1.2 s: 6 frames at 5 fps) after the face appeared. A frame on which a search
    is due is never passed over, so passing over keeps the bound."""
    a, b = traveler(4), traveler(9, x=20.0)
    script = [1] * enters + [2] * 12
    camera = Camera({1: [a], 2: [a, b]}, focus).show(script)
    found = next(i for i, ids in enumerate(camera.encounters) if len(ids) == 2)
    delay_ms = (found - enters) * 1000 / FPS
    assert delay_ms < FocusConfig().scan_ms + 1000 / FPS
    assert camera.pipeline.windows[found - sum(i < found for i in camera.passed)] == WHOLE
    assert ("MATCH", "T009") in camera.decisions(), "the newcomer gets a decision of their own"


def test_a_whole_frame_search_of_an_abandoned_frame_does_not_count_and_the_next_frame_searches_again() -> (
    None
):
    """A frame given up at its budget after its whole-frame search: what that search found never reached the
    tracker, so the bound holds only if the next frame searches the whole frame again."""
    a, b = traveler(4), traveler(9, x=20.0)
    camera = Camera({1: [a], 2: [a, b]}).show([1] * 3 + [2] * 9, abandoned={5})
    windows = camera.pipeline.windows
    assert windows[5] == WHOLE, "the scan due at 1 s ran in the abandoned frame"
    assert windows[6] == WHOLE, "and again in the next frame, which reaches the tracker"
    assert len(camera.encounters[6]) == 2, "the newcomer is found there, within the bound"


def test_a_new_face_inside_the_window_is_found_at_once() -> None:
    a, b = traveler(4), traveler(9, x=380.0)  # within one face width of the first: inside its window
    camera = Camera({1: [a], 2: [a, b]}).show([1, 1, 2, 2])
    assert camera.pipeline.windows[2] != WHOLE and len(camera.encounters[2]) == 2


def test_when_the_window_loses_the_face_the_whole_frame_is_searched_in_the_same_frame() -> None:
    camera = Camera({1: [traveler(4)], 2: [traveler(4, x=540.0)]}).show([1, 1, 2, 2])
    assert camera.pipeline.windows[:4] == [WHOLE, (200, 120, 440, 360), (200, 120, 440, 360), WHOLE]
    assert len(camera.encounters[2]) == 1, "found in the frame where the window lost it"


def test_a_decided_face_is_followed_by_position_and_embedded_again_every_n_frames() -> None:
    camera = Camera({1: [traveler(4)]}).show([1] * 12)
    assert camera.decisions() == [(MATCH, "T004")]
    assert camera.pipeline.embedded == 3  # frames 0, 5 and 10: recheck_frames = 5
    assert [s[0] for s in camera.skipped][:6] == [Skip.NOTHING, *[Skip.ASSESSMENT] * 4, Skip.NOTHING]


def test_a_decided_face_is_embedded_again_when_its_look_changes() -> None:
    same, other_light = traveler(4), traveler(4, look=400)
    camera = Camera({1: [same], 2: [other_light]}).show([1, 1, 1, 2, 2])
    assert [s[0] for s in camera.skipped] == [
        Skip.NOTHING,
        Skip.ASSESSMENT,
        Skip.ASSESSMENT,
        Skip.NOTHING,  # looks different: embedded, and still the same person to the tracker
        Skip.ASSESSMENT,  # its new look is the reference now
    ]
    assert all(set(ids) == {1} for ids in camera.encounters)


@pytest.mark.parametrize("look", ["different", "identical"])
def test_a_tailgater_in_the_same_place_gets_an_encounter_and_a_decision_of_their_own(look: str) -> None:
    """A look that differs is caught on the newcomer's first frame; a newcomer the cheap check cannot tell apart
    (same look: the worst case) is caught by the identity check of the next embedding, within recheck_frames."""
    first = traveler(4)
    second = traveler(9, x=283.0, look=4 if look == "identical" else 9)
    camera = Camera({1: [first], 2: [second]}).show([1] * 3 + [2] * 8)
    assert camera.decisions() == [(MATCH, "T004"), (MATCH, "T009")]
    own = next(i for i, ids in enumerate(camera.encounters) if ids != [1])
    assert own - 3 == (0 if look == "different" else 2)  # embedded 5 frames after frame 0: frame 5
    assert own - 3 < FocusConfig().recheck_frames


# -- passing over ------------------------------------------------------------------------------------------


def test_a_decided_face_standing_still_lets_every_other_frame_pass_unanalysed() -> None:
    """Frames 0 (decided), 1 and 2 (the face still for two intervals) are analysed; from then on every other
    frame is passed over, except those a whole-frame search is due on (5 and 10, each a second after the last)
    or the re-embedding is (every 5 frames: 5 and 10 too), so the rechecks stay where they were."""
    camera = Camera({1: [traveler(4)]}, PASSING).show([1] * 12)
    assert camera.passed == [3, 6, 8, 11]
    assert camera.decisions() == [(MATCH, "T004")]
    assert camera.pipeline.embedded == 3  # frames 0, 5 and 10, as when every frame is analysed
    assert all(ids == [1] for i, ids in enumerate(camera.encounters) if i not in camera.passed)


def test_a_moving_face_is_analysed_in_every_frame() -> None:
    walking = {i: [traveler(4, x=200.0 + 10 * i)] for i in range(12)}  # an eighth of its width a frame
    camera = Camera(walking, PASSING).show(list(range(12)))
    assert camera.passed == [] and camera.decisions() == [(MATCH, "T004")]


def test_a_face_not_yet_decided_is_analysed_in_every_frame() -> None:
    """A stranger is decided NO_MATCH at the second checkpoint (5 usable frames): nothing is passed over
    before that."""
    stranger = FakeFace((280.0, 200.0, 360.0, 280.0), strangers(1, seed=77)[0], look=77)
    camera = Camera({1: [stranger]}, PASSING).show([1] * 12)
    assert camera.decisions() == [(NO_MATCH, "")]
    assert camera.passed and min(camera.passed) > 4, camera.passed


def test_a_new_face_inside_the_window_is_found_by_the_next_analysed_frame() -> None:
    """Passed over when it enters (frame 3), found in frame 4: at most `pass_over` frames late."""
    a, b = traveler(4), traveler(9, x=380.0)
    camera = Camera({1: [a], 2: [a, b]}, PASSING).show([1] * 3 + [2] * 5)
    assert 3 in camera.passed
    found = next(i for i, ids in enumerate(camera.encounters) if len(ids) == 2)
    assert found - 3 <= PASSING.pass_over
    assert ("MATCH", "T009") in camera.decisions()


@pytest.mark.parametrize(("fps", "delay_s"), [(1.5, 0.0), (3.5, 0.0), (1.85, 0.3)])
def test_no_frame_is_passed_over_when_the_tracker_would_lose_the_face_before_the_next(
    fps: float, delay_s: float
) -> None:
    """Below 4 fps, the next frame's arrival two intervals on plus its whole budget (500 ms) is more than
    lost_after_ms (1 s): passing one over could end the decided traveler's track, and their next frame would
    open a second encounter for them (without this rule, three MATCH decisions for one traveler at 1.5 fps).
    Times are arrival times: frames that reach the tracker 300 ms after they arrive (queue and decode) must not
    make the interval look shorter (a review found four MATCH decisions at 1.85 fps that way)."""
    camera = Camera({1: [traveler(4)]}, PASSING, fps=fps, delay_s=delay_s).show([1] * 12)
    assert camera.passed == []
    assert camera.decisions() == [(MATCH, "T004")], "one traveler, one decision"


def test_a_face_whose_new_look_was_not_embedded_is_not_passed_over_next() -> None:
    """Frame 7 shows the decided traveler with another look, and that face fails quality, so it is not
    embedded: nothing verified it, so frame 8 is analysed (it would have been passed over otherwise)."""
    same, unverified = traveler(4), traveler(4, look=400, quality_passed=False)
    camera = Camera({1: [same], 2: [unverified]}, PASSING).show([1] * 7 + [2] + [1] * 4)
    assert 6 in camera.passed and 8 not in camera.passed
    steady = Camera({1: [same]}, PASSING).show([1] * 12)
    assert 8 in steady.passed, "the same frames of a steady look are passed over"


def test_nothing_is_passed_over_while_an_encounter_is_undecided_even_one_missed_in_the_last_frame() -> None:
    """B (nobody enrolled: NO_MATCH at its fifth usable frame) enters beside A, decided and still, on a frame
    that is passed over (3), is found on the next (4), then missed on one (5): the frame after that (6) is
    analysed although every face of frame 5 was decided, and so is every frame until B is decided."""
    a, b = traveler(4), FakeFace((380.0, 200.0, 460.0, 280.0), strangers(1, seed=77)[0], look=77)
    script = [1] * 3 + [2, 2, 1] + [2] * 8
    camera = Camera({1: [a], 2: [a, b]}, PASSING).show(script)
    assert camera.passed[0] == 3 and camera.encounters[4] == [1, 2] and camera.encounters[5] == [1]
    (b_decision,) = [o for o in camera.decided if o.decision == NO_MATCH]
    assert not [i for i in camera.passed if 4 <= i < b_decision.last_sequence], camera.passed


def test_faces_that_cannot_be_fused_or_decided_get_no_embedding() -> None:
    blurred = traveler(4, quality_passed=False)
    spoof = traveler(5, liveness=0.1)
    background = FakeFace((10.0, 10.0, 30.0, 30.0), at_cosine(CENTRES[6], 0.8), look=6)  # too small to matter
    camera = Camera({1: [traveler(7, x=300.0), background], 2: [blurred], 3: [spoof]}).show([1, 2, 3])
    assert camera.skipped == [[Skip.NOTHING, Skip.ASSESSMENT], [Skip.EMBEDDING], [Skip.EMBEDDING]]
    assert camera.pipeline.embedded == 1


def test_surplus_frames_count_without_embedding_and_decide_as_the_full_path_does() -> None:
    """A rule with a checkpoint beyond the fused set: frames that rank below all fused ones are not embedded,
    yet the checkpoints come at the same frames and search the same fused template."""
    rule = EncounterConfig(fuse_best=3, decision_frames=(3, 7), fpir_shares=(0.3, 0.7))
    scores = [0.95, 0.9, 0.93, 0.7, 0.72, 0.97, 0.71, 0.75]  # ranks follow the detector score
    unsure = at_cosine(CENTRES[11], 0.33, seed=1)  # a traveler the gallery's photo barely resembles
    hard = {
        i: [replace(traveler(11), template=at_cosine(unsure, 0.9, seed=i), score=s)]
        for i, s in enumerate(scores)
    }
    focused = Camera(hard, rule=rule).show(list(range(8)))
    full = Camera(hard, focus=None, rule=rule).show(list(range(8)))
    assert focused.decisions() == full.decisions() and focused.decisions()[0][0] in (MATCH, NO_MATCH)
    one, other = focused.decided[0], full.decided[0]
    assert (one.frames_used, one.searches, one.last_sequence) == (
        other.frames_used,
        other.searches,
        other.last_sequence,
    )
    assert one.result.candidates[0].score == pytest.approx(other.result.candidates[0].score)
    assert focused.pipeline.embedded < full.pipeline.embedded
    assert Skip.EMBEDDING in {s[0] for s in focused.skipped}


def test_a_different_face_in_the_place_of_an_undecided_track_is_embedded_not_taken_as_surplus() -> None:
    """With a rule whose checkpoint lies beyond the fused set, a frame ranked below every fused one is skipped
    only if it still looks like the track: a different person in the same place is embedded and meets the
    tracker's identity check (an encounter of their own), instead of being linked to the track by position."""
    rule = EncounterConfig(fuse_best=3, decision_frames=(3, 7), fpir_shares=(0.3, 0.7))
    unsure = at_cosine(CENTRES[11], 0.33, seed=1)
    first = [replace(traveler(11), template=at_cosine(unsure, 0.9, seed=i), score=0.95) for i in range(3)]
    newcomer = replace(traveler(12, x=283.0), score=0.7)  # ranks below the fused frames, looks different
    scenes = {i: [face] for i, face in enumerate(first)} | {3: [newcomer], 4: [newcomer]}
    camera = Camera(scenes, rule=rule).show([0, 1, 2, 3, 4])
    assert camera.encounters[:3] == [[1], [1], [1]]
    assert camera.encounters[3] != [1], "the newcomer is not the first traveler's track"
    assert camera.skipped[3] == [Skip.NOTHING], "embedded, not skipped as surplus"


def test_the_look_compares_faces_not_positions() -> None:
    a, b = appearance(crop_of(1)), appearance(crop_of(2))
    assert float(a @ appearance(crop_of(1))) == pytest.approx(1.0)
    assert float(a @ b) < FocusConfig().recheck_below
    assert a.shape == (432,) and a.dtype == np.float32


def test_a_scan_looks_coarsely_then_again_at_full_scale_where_it_found_faces() -> None:
    """With a detector that runs any size (YuNet), the whole frame is searched at half scale and what it finds
    is detected again at full scale in a window: the landmarks a template is made from are full-scale ones.
    Only faces too small to be seen at half scale are given up (the fake detector misses faces under 10 px)."""
    camera = Camera({1: [traveler(4), FakeFace((10.0, 10.0, 25.0, 25.0), None, look=6)]})
    camera.pipeline.any_size = True
    camera.show([1, 1])
    assert camera.pipeline.windows[0] == ("coarse", WHOLE)
    assert camera.pipeline.windows[1] == (200, 120, 440, 360), "the refinement: a full-scale window"
    assert camera.pipeline.windows[2] == (200, 120, 440, 360), "then the followed face's window"
    assert all(len(ids) == 1 for ids in camera.encounters), "the 15 px face was not seen at half scale"
    assert camera.decisions() == [(MATCH, "T004")]


def test_faces_too_big_for_a_window_are_searched_in_one_full_scale_run_not_a_coarse_look_first() -> None:
    """A followed face whose window would cover most of the frame (a traveler close to the camera): the frame
    is searched whole at full scale, which is also the periodic scan; a coarse look first would only find the
    same face again and then run the same whole frame (found on the 1080x1920 video: 92 of 100 frames did both)."""
    close = FakeFace((170.0, 90.0, 470.0, 390.0), at_cosine(CENTRES[4], 0.8, seed=0), look=4)
    camera = Camera({1: [close]})
    camera.pipeline.any_size = True
    camera.show([1] * 8)
    windows = camera.pipeline.windows
    assert windows[:2] == [("coarse", WHOLE), WHOLE], "nothing followed yet: a coarse look, then refined"
    assert windows[2:] == [WHOLE] * 7, "then one full-scale run per frame"
    assert camera.focus.counts["scan"] == 8 and camera.focus.counts["close"] == 7
    assert camera.decisions() == [(MATCH, "T004")]


def assert_the_replay_plans_as_the_stream(
    scenes: dict[int, list[FakeFace]],
    script: list[int],
    rule: EncounterConfig = RULE,
    focus: FocusConfig = FOCUS,
) -> Camera:
    """`Focus.plan` (how `bench encounters` replays photos analysed once, in full) gives the tracker what the
    stream's per-frame work gives it: the same templates, surplus flags, encounters and decisions. Returns
    the stream's camera."""
    live = Camera(scenes, focus, rule).show(script)
    full = FakePipeline(scenes)
    frames, looks = [], []
    for scene in script:
        assessment = judge_frame(full.analyze_batch([np.full((480, 640, 3), scene, np.uint8)])[0])
        fakes = {fake.box: fake for fake in scenes[scene]}
        frames.append(sightings(assessment))
        looks.append([appearance(crop_of(fakes[s.box].look)) for s in frames[-1]])
    tracker = EncounterTracker(rule, 0.003, 2.0, SAME_PERSON)
    times = [i / FPS for i in range(len(script))]
    replayed = replay(
        tracker, Feed(frames, looks, Focus(focus, rule, tracker, FRAME_BUDGET_S)), times, search
    )

    def planned(fed: list[list[Sighting]]) -> list[list[tuple[bool, bool]]]:
        return [[(s.template is not None, s.surplus) for s in seen] for seen in fed]

    assert planned(replayed.fed) == planned(live.fed)
    assert replayed.frame_encounters == live.encounters
    decisions = [
        (o.decision, o.result.match.traveler_id if o.result and o.result.match else "")
        for o in replayed.outcomes
    ]
    assert decisions == live.decisions()
    return live


@pytest.mark.parametrize("focus", [FOCUS, PASSING], ids=["every frame", "passing over"])
def test_the_benchmark_replay_plans_followed_and_unfusable_faces_as_the_stream_does(
    focus: FocusConfig,
) -> None:
    scenes = {
        1: [traveler(4)],
        2: [traveler(4), traveler(9, x=380.0)],  # inside the first one's window: found at once, as in photos
        3: [traveler(4), traveler(9, x=380.0, liveness=0.05)],  # the newcomer first fails liveness
        4: [traveler(4, look=7), traveler(9, x=380.0)],  # a different look in the first one's place
        5: [traveler(12, quality_passed=False)],
    }
    script = [5] * 2 + [1] * 7 + [3] * 2 + [2] * 6 + [4] * 4 + [2] * 3
    live = assert_the_replay_plans_as_the_stream(scenes, script, focus=focus)
    if focus.pass_over:
        # decided and still: the first traveler alone (3-8), then both (13-22); never two frames in a row
        assert live.passed == [3, 6, 8, 13, 18, 22]
        return
    templates = [[s.template is not None for s in seen] for seen in live.fed]
    assert templates[9] == templates[10] == [False, False], "followed, and failed liveness: no template"
    assert templates[11] == [False, True], "the newcomer's first live frame is embedded"
    assert templates[0] == [False], "failed quality: no template"


def test_the_benchmark_replay_plans_surplus_faces_as_the_stream_does() -> None:
    rule = EncounterConfig(fuse_best=3, decision_frames=(3, 7), fpir_shares=(0.3, 0.7))
    unsure = at_cosine(CENTRES[11], 0.33, seed=1)
    scores = [0.95, 0.9, 0.93, 0.7, 0.72, 0.97, 0.71, 0.75]
    hard = {
        i: [replace(traveler(11), template=at_cosine(unsure, 0.9, seed=i), score=s)]
        for i, s in enumerate(scores)
    }
    live = assert_the_replay_plans_as_the_stream(hard, list(range(8)), rule)
    assert any(s.surplus for seen in live.fed for s in seen), "the rule makes surplus frames"


def test_a_window_is_the_frame_part_of_the_grown_faces_and_fills_the_frame_only_past_the_share() -> None:
    focus = Focus(FOCUS, RULE, EncounterTracker(RULE, 0.003, 2.0, SAME_PERSON), FRAME_BUDGET_S)
    off = grown_window(focus.config, [(900.0, 700.0, 980.0, 780.0)], 640, 480, 1.0)
    assert off is None, "off the frame: nothing to look in"
    near = grown_window(focus.config, [(280.0, 200.0, 360.0, 280.0)], 640, 480, 1.0)
    assert near == (200, 120, 440, 360) and not fills_frame(focus.config, near, 640, 480)
    close = grown_window(focus.config, [(170.0, 90.0, 470.0, 390.0)], 640, 480, 1.0)
    assert close == (74, 0, 566, 480) and fills_frame(focus.config, close, 640, 480)


def test_a_big_face_is_grown_by_at_most_max_margin_px_of_the_detectors_input() -> None:
    focus = Focus(FOCUS, RULE, EncounterTracker(RULE, 0.003, 2.0, SAME_PERSON), FRAME_BUDGET_S)
    big = [(400.0, 300.0, 700.0, 600.0)]  # 300 px wide: one width would be 300 px each side
    assert FOCUS.max_margin_px == 96
    assert grown_window(focus.config, big, 1280, 960, 1.0) == (304, 204, 796, 696), (
        "96 input px = 96 frame px"
    )
    assert grown_window(focus.config, big, 1280, 960, 0.5) == (208, 108, 892, 792), (
        "at half scale, 192 frame px"
    )
    small = grown_window(focus.config, [(400.0, 300.0, 460.0, 360.0)], 1280, 960, 1.0)
    assert small == (340, 240, 520, 420), "a face smaller than the cap: one width"
