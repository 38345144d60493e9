"""`gatematch bench encounters`: the decision the gate makes, measured per person, not per photo.

The service decides once per encounter (a person followed across frames), after fusing several frames and
searching at a few checkpoints (service/encounter.py). This benchmark replays exactly that path — the frame
rules (`dataplane.judge_frame`), the tracker's sightings (`dataplane.sightings`), the `EncounterTracker` and the
gallery search at the tracker's per-search FPIR — on a simulated clock, so a run is not bound to real time:

- still photos (`ROOT/<identity>/<image>`): departures as in `bench accuracy` (a random gallery of identities
  with two or more photos, each enrolled with its first photo by file name); every enrolled traveler walks past
  the camera as k frames made of k of their other photos, every other identity as k of its photos (non-mated);
  tailgating pairs are two people back to back in the same spot with no gap. A photo stands in for a camera
  frame: its main face is placed at the gate's spot (the box is simulated, the face and its quality are the
  photo's), other faces in it are ignored.
- videos (a CSV `video,identity`, empty identity = nobody enrolled) against a gallery folder
  (`FOLDER/<traveler>/<photos>`, enrolled with the service's enrollment rules): every frame at the video's
  own positions, at `--fps`.

Per person: FPIR = share of non-mated people given any MATCH; FNIR = share of mated people not given a MATCH
to themselves; misidentification = share of mated people given a MATCH to someone else. FPIR comes with its
Wilson 95% interval: measuring a rate of 0.003 to +-30% takes about 10,000 non-mated encounters. The same run
also scores each person's first photo alone (the single-image figures of `bench accuracy`) for comparison.
"""

from __future__ import annotations

import csv
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from tqdm import tqdm

from gatematch.align import norm_crop
from gatematch.atomicfile import write_atomic
from gatematch.benchmarks import metrics
from gatematch.benchmarks.calibration import measure_calibration
from gatematch.benchmarks.dataset import Dataset
from gatematch.benchmarks.embeddings import cache_key
from gatematch.benchmarks.report import now_iso, percent, table, write_json
from gatematch.calibration import CalibrationTable
from gatematch.enrollment import EnrollmentPhoto, judge
from gatematch.errors import BadImageError, DatasetError
from gatematch.facepipeline import FacePipeline
from gatematch.gallery import (
    Calibrations,
    Gallery,
    ModelRef,
    OperatingPoint,
    SearchResult,
    in_memory_gallery,
)
from gatematch.images import load_image
from gatematch.quality import QualityThresholds
from gatematch.service.config import BudgetConfig, EncounterConfig, FocusConfig
from gatematch.service.dataplane import judge_frame, sightings
from gatematch.service.encounter import MATCH, EncounterOutcome, EncounterTracker, Sighting
from gatematch.service.focus import APPEARANCE_SIZE, Focus, FocusedFrame, appearance
from gatematch.video import read_frames

FORMAT = "gatematch-encounters-report/1"
GATE_BOX = (245.0, 135.0, 395.0, 285.0)  # a 150 px face where the gate camera sees travelers (640x480 frame)
# The service's frame budget: passing over a frame (service/focus.py) allows for the next one reaching the
# tracker this late, in the replay as in a stream.
FRAME_BUDGET_S = BudgetConfig().frame_ms / 1000
JITTER_PX = 4.0  # a traveler standing still still moves a little between frames


@dataclass(frozen=True)
class EncounterSettings:
    gallery_size: int = 200
    departures: int = 100
    frames: int = 5  # k: frames per simulated encounter
    fps: float = 5.0
    encounter_s: float = 2.0
    targets: tuple[float, ...] = (0.003, 0.01)
    tailgating_pairs: int = 20  # per departure
    seed: int = 0
    rule: EncounterConfig = field(default_factory=EncounterConfig)
    focus: FocusConfig | None = field(default_factory=FocusConfig)  # None: every stage on every frame


# -- the replayed decision path ---------------------------------------------------------------------------


def search_with(gallery: Gallery, embedder: ModelRef, calibrations: Calibrations) -> Callable:
    """The tracker's search function, as the data plane gives it (`DataPlane.search`)."""

    def search(template: np.ndarray, target_fpir: float, frames: int) -> SearchResult:
        table = calibrations.for_frames(frames)
        return gallery.search(template, embedder, table, k=1, point=OperatingPoint(target_fpir))

    return search


@dataclass(frozen=True)
class Replayed:
    outcomes: list[EncounterOutcome]
    fed: list[list[Sighting]]  # per frame: what the tracker was given
    frame_encounters: list[list[int]]  # per frame: the encounter id of each sighting
    decided_at: dict[int, float]  # encounter id -> simulated time of its decision
    decided_index: dict[
        int, int
    ]  # encounter id -> index of the frame that decided it (frame count: at the end)


class Feed:
    """A camera's frames as the tracker gets them: photos analysed once, in full, or planned by a focus as a
    camera stream's would be (service/focus.py: followed faces lose quality and template, surplus ones their
    template); the focus then hears where each face went."""

    def __init__(
        self,
        frames: Sequence[list[Sighting]],
        looks: Sequence[list[np.ndarray | None]] | None = None,
        focus: Focus | None = None,
    ):
        self.frames, self.looks, self.focus = frames, looks, focus
        self._index, self._now = 0, 0.0
        self._fed: list[Sighting] = []

    def __len__(self) -> int:
        return len(self.frames)

    def passes_over(self, now: float) -> bool:
        """Whether the frame at `now` goes unanalysed, as a camera stream's would (`Focus.pass_over`)."""
        return self.focus is not None and self.focus.pass_over(now)

    def sightings(self, index: int, now: float) -> list[Sighting]:
        seen = self.frames[index]
        if self.focus is not None and self.looks is not None:
            seen = self.focus.plan(seen, self.looks[index], now)
        self._index, self._now, self._fed = index, now, seen
        return seen

    def observed(self, encounter_ids: list[int]) -> None:
        if self.focus is not None and self.looks is not None:
            self.focus.observed(encounter_ids, self.looks[self._index], self._fed, self._now)


class VideoFeed(Feed):
    """Video frames analysed as they come, through a focus when there is one (its plan depends on the tracker,
    so a frame can only be analysed once the previous one was decided on)."""

    def __init__(self, images: Sequence[np.ndarray], pipeline: FacePipeline, focus: Focus | None):
        super().__init__([[] for _ in images], focus=focus)
        self.images, self.pipeline = images, pipeline
        self._faces: tuple = ()
        self._focused: FocusedFrame | None = None

    def sightings(self, index: int, now: float) -> list[Sighting]:
        image = self.images[index]
        if self.focus is None:
            analysis = self.pipeline.analyze_batch([image])[0]
        else:
            self._focused = FocusedFrame(now)
            analysis = self.focus.analyze(self.pipeline, image, self._focused)
        assessment = judge_frame(analysis)
        self._faces, self._fed = assessment.gate_faces, sightings(assessment)
        return self._fed

    def observed(self, encounter_ids: list[int]) -> None:
        if self.focus is not None and self._focused is not None:
            self.focus.follow(self._focused, self._faces, self._fed, encounter_ids)


def replay(tracker: EncounterTracker, feed: Feed, times: Sequence[float], search: Callable) -> Replayed:
    """Frames through the tracker on a simulated clock, then the end of the stream."""
    outcomes: list[EncounterOutcome] = []
    fed: list[list[Sighting]] = []
    ids: list[list[int]] = []
    decided_at: dict[int, float] = {}
    decided_index: dict[int, int] = {}
    for index, now in enumerate(times):
        if feed.passes_over(now):  # the tracker hears nothing of the frame
            fed.append([])
            ids.append([])
            continue
        seen = feed.sightings(index, now)
        frame_ids, decided = tracker.observe(now, index + 1, seen, search)
        feed.observed(frame_ids)
        fed.append(seen)
        ids.append(frame_ids)
        for outcome in decided:
            decided_at[outcome.encounter_id] = now
            # decided by this frame (a checkpoint) or before it (a tick): either way nothing after is fused
            decided_index[outcome.encounter_id] = index + (outcome.last_sequence == index + 1)
        outcomes += decided
    end = (times[-1] if times else 0.0) + 1.0 / 1000
    for outcome in tracker.close(end, search):
        decided_at[outcome.encounter_id] = end
        decided_index[outcome.encounter_id] = len(times)
        outcomes.append(outcome)
    return Replayed(outcomes, fed, ids, decided_at, decided_index)


def at_gate(seen: list[Sighting], rng: np.random.Generator) -> list[Sighting]:
    """A photo's main face as a gate frame: at the gate's spot, jittered; the photo's other faces left out."""
    if not seen:
        return []
    shift = rng.uniform(-JITTER_PX, JITTER_PX, 2)
    x1, y1, x2, y2 = GATE_BOX
    return [replace(seen[0], box=(x1 + shift[0], y1 + shift[1], x2 + shift[0], y2 + shift[1]))]


# -- still photos -----------------------------------------------------------------------------------------


@dataclass
class StillSet:
    """Every photo of a data set through the frame rules once: what the tracker would be handed for it (its main
    gate-sized face as a sighting) and its main face's template (the single-image protocol and enrollment).

    Only these arrays are kept, so a run can be cached (`cache_stills`) and replayed with other rules."""

    identities: np.ndarray  # (N,) str
    seen: np.ndarray  # (N,) bool: the frame rules found a gate-sized face (a sighting)
    quality: np.ndarray  # (N,) float: its sighting quality
    fusable: np.ndarray  # (N,) bool: it passed quality (and liveness): its template may be fused
    single: np.ndarray  # (N, dim) the main face's template, zeros when none
    acquired: np.ndarray  # (N,) bool: a main face with a template
    looks: (
        np.ndarray
    )  # (N, 432) the main face's look (focus.appearance), what a camera's focus compares; zeros

    def sighting(self, row: int) -> list[Sighting]:
        if not self.seen[row]:
            return []
        template = self.single[row] if self.fusable[row] else None
        return [Sighting(GATE_BOX, float(self.quality[row]), template)]


def analyze_stills(
    dataset: Dataset, pipeline: FacePipeline, batch: int = 16, progress: bool = True
) -> StillSet:
    n, dim = len(dataset.samples), pipeline.embedding_size
    stills = StillSet(
        np.array([s.identity for s in dataset.samples]),
        np.zeros(n, bool),
        np.zeros(n, np.float32),
        np.zeros(n, bool),
        np.zeros((n, dim), np.float32),
        np.zeros(n, bool),
        np.zeros((n, 3 * APPEARANCE_SIZE[0] * APPEARANCE_SIZE[1]), np.float32),
    )
    bar = tqdm(total=n, desc=f"analysing ({pipeline.pack.name})", unit="img", disable=not progress)
    for start in range(0, n, batch):
        chunk = dataset.samples[start : start + batch]
        images, rows = [], []
        for row, sample in enumerate(chunk, start=start):
            try:
                images.append(load_image(sample.path, pipeline.config.limits))
                rows.append(row)
            except BadImageError:
                pass
        for row, image, analysis in zip(rows, images, pipeline.analyze_batch(images), strict=True):
            face = analysis.primary()
            if face is not None and face.embedding is not None:
                stills.single[row], stills.acquired[row] = face.embedding, True
            if face is not None and face.detection.landmarks is not None:
                stills.looks[row] = appearance(norm_crop(image, face.detection.landmarks))
            seen = sightings(judge_frame(analysis))[:1]  # the photo's main face: the traveler at the gate
            if seen:
                stills.seen[row], stills.quality[row], stills.fusable[row] = (
                    True,
                    seen[0].quality,
                    seen[0].fusable,
                )
        bar.update(len(chunk))
    bar.close()
    return stills


def cache_stills(stills: StillSet, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda out: np.savez(out, **{f.name: getattr(stills, f.name) for f in fields(stills)}))


def cached_stills(
    dataset: Dataset, pipeline: FacePipeline, cache_dir: Path, progress: bool = True
) -> StillSet:
    """`analyze_stills`, read back when the same photos went through the same pipeline before."""
    path = cache_dir / f"stills-{pipeline.pack.name}-{cache_key(pipeline)}-{dataset.fingerprint[:16]}.npz"
    if path.is_file():
        with np.load(path) as data:
            if all(f.name in data.files for f in fields(StillSet)):  # else written before a field was added
                return StillSet(**{f.name: data[f.name] for f in fields(StillSet)})
    stills = analyze_stills(dataset, pipeline, progress=progress)
    cache_stills(stills, path)
    return stills


@dataclass
class PersonResult:
    mated: bool
    identity: str
    decisions: list[tuple[str, str]]  # (decision, matched traveler or "")
    encounters: int
    frames_to_decision: int | None  # frames of this person seen when their first decision came
    seconds_to_decision: float | None


def _person(identity: str, mated: bool, run: Replayed, times: Sequence[float]) -> PersonResult:
    decisions = [
        (
            o.decision,
            o.result.match.traveler_id if o.decision == MATCH and o.result and o.result.match else "",
        )
        for o in run.outcomes
    ]
    first = min(run.decided_at.values(), default=None)
    frames_seen = sum(1 for t in times if first is not None and t <= first) if first is not None else None
    return PersonResult(
        mated,
        identity,
        decisions,
        len(run.outcomes),
        frames_seen,
        first - times[0] if first is not None else None,
    )


def simulate_stills(
    stills: StillSet,
    embedder: ModelRef,
    calibrations: Calibrations,
    settings: EncounterSettings,
    target: float,
    progress: bool = True,
) -> dict[str, object]:
    """Every departure at one target FPIR: per-person results, single-image scores and tailgating pairs."""
    rng = np.random.default_rng(settings.seed)
    identities = np.unique(stills.identities)
    rows = {name: np.flatnonzero(stills.identities == name) for name in identities}
    eligible = np.array([name for name in identities if len(rows[name]) >= 2])
    if not 0 < settings.gallery_size < len(identities):
        raise DatasetError(f"gallery size {settings.gallery_size} must leave non-mated identities")
    if len(eligible) < settings.gallery_size:
        raise DatasetError(
            f"only {len(eligible)} identities have two or more photos; a gallery of {settings.gallery_size} "
            "needs that many (one photo to enroll, others to walk past the camera)"
        )
    people: list[PersonResult] = []
    single_mated, single_ranks, single_nonmated = [], [], []
    single_mated_failed = single_nonmated_failed = 0
    tail: dict[str, Any] = {"pairs": 0, "own_decision": 0, "no_usable_face": 0, "mixed": 0, "delays": []}
    blind: dict[str, Any] = {"pairs": 0, "own_decision": 0, "no_usable_face": 0, "mixed": 0, "delays": []}
    spacing = 1.0 / settings.fps

    same_person = float(calibrations.single.threshold_for_fmr(settings.rule.same_person_fmr))

    def tracker() -> EncounterTracker:
        return EncounterTracker(settings.rule, target, settings.encounter_s, same_person)

    def frames_of(picks: np.ndarray) -> list[list[Sighting]]:
        return [at_gate(stills.sighting(r), rng) for r in picks]

    def feed(picks: np.ndarray, frames: list[list[Sighting]], track: EncounterTracker) -> Feed:
        """The frames as the tracker gets them: in full, or planned by a camera's focus."""
        if settings.focus is None:
            return Feed(frames)
        looks = [
            [stills.looks[r] if stills.looks[r].any() else None] * len(seen)
            for r, seen in zip(picks, frames, strict=True)
        ]
        return Feed(frames, looks, Focus(settings.focus, settings.rule, track, FRAME_BUDGET_S))

    bar = tqdm(total=settings.departures, desc=f"departures (FPIR {target:g})", disable=not progress)
    for departure in range(settings.departures):
        chosen = rng.permutation(eligible)[: settings.gallery_size]
        absent = np.setdiff1d(identities, chosen)
        enroll = np.array([rows[name][0] for name in chosen])
        ok = stills.acquired[enroll]
        gallery = in_memory_gallery(
            stills.single[enroll[ok]], list(chosen[ok]), embedder, name=f"SIM{departure:04d}"
        )
        search = search_with(gallery, embedder, calibrations)
        enrolled_vectors = stills.single[enroll[ok]]
        column = dict(zip(chosen[ok], range(int(ok.sum())), strict=True))  # traveler -> gallery row
        walkers: list[tuple[str, bool, np.ndarray]] = []
        for name in chosen:
            others = rows[name][1:]
            walkers.append(
                (name, True, rng.choice(others, size=min(settings.frames, len(others)), replace=False))
            )
        for name in absent:
            mine = rows[name]
            walkers.append(
                (name, False, rng.choice(mine, size=min(settings.frames, len(mine)), replace=False))
            )
        for name, mated, picks in walkers:
            times = [i * spacing for i in range(len(picks))]
            track = tracker()
            run = replay(track, feed(picks, frames_of(picks), track), times, search)
            people.append(_person(name, mated, run, times))
            probe = picks[0]  # the single-image protocol: the first photo alone, no frame rules
            if not stills.acquired[probe] or (mated and name not in column):
                if mated:
                    single_mated_failed += 1
                else:
                    single_nonmated_failed += 1
                continue
            scores = enrolled_vectors @ stills.single[probe] if len(enrolled_vectors) else np.zeros(0)
            if mated:
                mate = scores[column[name]]
                single_mated.append(mate)
                single_ranks.append(1 + int((scores > mate).sum()))
            else:
                single_nonmated.append(float(scores.max()) if scores.size else -np.inf)
        order = rng.permutation(len(walkers))[: settings.tailgating_pairs + 1]
        for a, b in itertools.pairwise(order):
            first, second = walkers[a], walkers[b]
            frames = frames_of(first[2]) + frames_of(second[2])
            times = [i * spacing for i in range(len(frames))]
            track = tracker()
            run = replay(track, feed(np.concatenate([first[2], second[2]]), frames, track), times, search)
            _score_tailgating(tail, run, frames, len(first[2]))
            if settings.focus is not None:  # the worst case: the newcomer looks exactly like the first person
                track = tracker()
                looks_alike = np.concatenate([first[2], [first[2][0]] * len(second[2])])
                run = replay(track, feed(looks_alike, frames, track), times, search)
                _score_tailgating(blind, run, frames, len(first[2]))
        bar.update(1)
    bar.close()
    return {
        "target": target,
        "people": people,
        "single": {
            "mated_scores": np.array(single_mated, np.float64),
            "mated_ranks": np.array(single_ranks, np.float64),
            "nonmated_top": np.array(single_nonmated, np.float64),
            "mated_failed": single_mated_failed,
            "nonmated_failed": single_nonmated_failed,
        },
        "tailgating": tail,
        "tailgating_look_alike": blind if settings.focus is not None else None,
    }


def _score_tailgating(
    tail: dict[str, Any], run: Replayed, frames: Sequence[list[Sighting]], split: int
) -> None:
    """Did the second person (frames from `split` on) get a decision resting on their own face alone, and did
    any encounter fuse the templates of both people? A frame's template is fused into its encounter when it is
    fusable and the encounter is not yet decided. Also: how many of the second person's frames went by before
    one of them was given an encounter none of the first person's frames had (the delay a followed, decided
    first encounter may add). `frames` are the faces as analysed in full; the tracker was fed `run.fed`."""
    contributors: dict[int, set[int]] = {}
    for index, (seen, ids) in enumerate(zip(run.fed, run.frame_encounters, strict=True)):
        for sighting, encounter in zip(seen, ids, strict=True):
            if sighting.fusable and index < run.decided_index.get(encounter, len(frames)):
                contributors.setdefault(encounter, set()).add(int(index >= split))
    tail["pairs"] += 1
    tail["mixed"] += any(people == {0, 1} for people in contributors.values())
    if any(people == {1} for people in contributors.values()):
        tail["own_decision"] += 1
    elif not any(s.fusable for seen in frames[split:] for s in seen):
        tail["no_usable_face"] += 1
    firsts = {e for ids in run.frame_encounters[:split] for e in ids}
    own = [i - split for i, ids in enumerate(run.frame_encounters) if i >= split and set(ids) - firsts]
    if firsts and own and any(s.fusable for seen in frames[split:] for s in seen):
        tail["delays"].append(own[0])


# -- videos -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoCase:
    video: Path
    identities: frozenset[str]  # the enrolled people in it (a CSV cell "a;b"); empty = nobody enrolled


def read_video_list(path: Path) -> list[VideoCase]:
    """A CSV `video,identity` (header optional; several people in one video as `a;b`; empty = nobody
    enrolled); video paths relative to the CSV's folder."""
    try:
        rows = list(csv.reader(Path(path).read_text(encoding="utf-8").splitlines()))
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read video list {path}: {exc}") from None
    cases = []
    for line, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip() or (line == 1 and row[0].strip().lower() == "video"):
            continue
        if len(row) != 2:
            raise DatasetError(f"{path}:{line}: expected 2 columns (video,identity), got {len(row)}")
        video = (Path(path).parent / row[0].strip()).resolve()
        if not video.is_file():
            raise DatasetError(f"{path}:{line}: video {video} does not exist")
        cases.append(VideoCase(video, frozenset(filter(None, (i.strip() for i in row[1].split(";"))))))
    if not cases:
        raise DatasetError(f"{path} lists no videos")
    return cases


def enroll_folder(folder: Path, pipeline: FacePipeline, embedder: ModelRef) -> tuple[Gallery, list[str]]:
    """FOLDER/<traveler>/<photos> enrolled with the service's enrollment rules; (gallery, failed photos)."""
    enroller = pipeline.with_quality(QualityThresholds.enrollment())
    templates, owners, failed = [], [], []
    for person in sorted(p for p in Path(folder).iterdir() if p.is_dir()):
        for photo in sorted(p for p in person.iterdir() if p.is_file()):
            try:
                analysis = enroller.analyze(photo)
            except BadImageError:
                failed.append(str(photo))
                continue
            outcome = judge(analysis, EnrollmentPhoto(person.name, str(photo), ""))
            if isinstance(outcome, tuple):
                templates.append(outcome[0])
                owners.append(person.name)
            else:
                failed.append(str(photo))
    if not templates:
        raise DatasetError(f"no photo under {folder} could be enrolled")
    return in_memory_gallery(np.stack(templates), owners, embedder), failed


def simulate_videos(
    cases: Sequence[VideoCase],
    gallery: Gallery,
    pipeline: FacePipeline,
    calibrations: Calibrations,
    settings: EncounterSettings,
    target: float,
) -> list[dict[str, object]]:
    embedder = gallery.info.embedder
    search = search_with(gallery, embedder, calibrations)
    rows = []
    for case in cases:
        images = list(read_frames(case.video, settings.fps))
        times = [i / settings.fps for i in range(len(images))]
        tracker = EncounterTracker(
            settings.rule,
            target,
            settings.encounter_s,
            float(calibrations.single.threshold_for_fmr(settings.rule.same_person_fmr)),
        )
        focus = (
            Focus(settings.focus, settings.rule, tracker, FRAME_BUDGET_S)
            if settings.focus is not None
            else None
        )
        run = replay(tracker, VideoFeed(images, pipeline, focus), times, search)
        decided = [
            (
                o.decision,
                o.result.match.traveler_id if o.decision == MATCH and o.result and o.result.match else "",
            )
            for o in run.outcomes
        ]
        matched = {who for decision, who in decided if decision == MATCH}
        rows.append(
            {
                "video": case.video.name,
                "identity": ";".join(sorted(case.identities)),
                "frames": len(images),
                "decisions": [f"{d}{' ' + who if who else ''}" for d, who in decided],
                # right: someone enrolled in it was matched and nobody else was (nobody at all for a stranger)
                "correct": bool(matched & case.identities) and matched <= case.identities
                if case.identities
                else not matched,
                "seconds_to_first_decision": min(run.decided_at.values(), default=None),
                "tailgating": any(o.tailgating for o in run.outcomes),
                "focus": dict(focus.counts) if focus is not None else None,
            }
        )
    return rows


# -- figures ----------------------------------------------------------------------------------------------


def wilson(errors: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a rate measured as errors / trials."""
    if trials == 0:
        return (0.0, 1.0)
    p = errors / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return (max(centre - half, 0.0), min(centre + half, 1.0))


def encounter_summary(run: dict[str, object]) -> dict[str, object]:
    people: list[PersonResult] = run["people"]
    mated = [p for p in people if p.mated]
    nonmated = [p for p in people if not p.mated]
    false_positives = sum(any(d == MATCH for d, _ in p.decisions) for p in nonmated)
    false_encounters = sum(d == MATCH for p in nonmated for d, _ in p.decisions)
    nonmated_encounters = sum(p.encounters for p in nonmated)
    hits = sum(any(d == MATCH and who == p.identity for d, who in p.decisions) for p in mated)
    wrong = sum(any(d == MATCH and who != p.identity for d, who in p.decisions) for p in mated)
    matched = [p for p in mated if any(d == MATCH and who == p.identity for d, who in p.decisions)]
    tail = run["tailgating"]
    return {
        "target_fpir": run["target"],
        "nonmated_people": len(nonmated),
        "mated_people": len(mated),
        "nonmated_encounters": nonmated_encounters,
        # per encounter: the unit the operating point is set for
        "fpir": false_encounters / nonmated_encounters if nonmated_encounters else None,
        "fpir_ci95": wilson(false_encounters, nonmated_encounters),
        # per person: a stranger whose photos split into several encounters had several chances
        "fpir_per_person": false_positives / len(nonmated) if nonmated else None,
        "fpir_per_person_ci95": wilson(false_positives, len(nonmated)),
        "fnir": 1 - hits / len(mated) if mated else None,
        "misidentification_rate": wrong / len(mated) if mated else None,
        "decisions_per_person": float(np.mean([len(p.decisions) for p in people])) if people else None,
        "split_people": sum(p.encounters > 1 for p in people),
        "match_frames_median": float(np.median([p.frames_to_decision for p in matched])) if matched else None,
        "match_seconds_median": float(np.median([p.seconds_to_decision for p in matched]))
        if matched
        else None,
        "decision_seconds_p95": float(
            np.percentile([p.seconds_to_decision for p in people if p.seconds_to_decision is not None], 95)
        )
        if people
        else None,
        "tailgating": _tailgating_summary(tail),
        # the same pairs had every newcomer looked exactly like the person before (the focus's cheap look
        # check blind): only the periodic re-embedding separates them
        "tailgating_look_alike": _tailgating_summary(run["tailgating_look_alike"])
        if run.get("tailgating_look_alike")
        else None,
    }


def _tailgating_summary(tail: dict[str, Any]) -> dict[str, object]:
    delays = tail["delays"]
    return {
        **{k: v for k, v in tail.items() if k != "delays"},
        "own_decision_share": tail["own_decision"] / tail["pairs"] if tail["pairs"] else None,
        # frames of the second person before one got an encounter of their own (0: their first frame)
        "own_encounter_after_frames": {
            "mean": float(np.mean(delays)) if delays else None,
            "p95": float(np.percentile(delays, 95)) if delays else None,
            "max": int(max(delays)) if delays else None,
            "pairs": len(delays),
        },
    }


def single_image_summary(single: dict[str, object], targets: Sequence[float]) -> list[dict[str, object]]:
    """The same run's first photos scored alone, as `bench accuracy` scores them (rank 1, no frame rules)."""
    points = metrics.fnir_at_fpir(
        single["mated_scores"],
        single["mated_ranks"],
        single["nonmated_top"],
        targets,
        mated_failed=single["mated_failed"],
        nonmated_failed=single["nonmated_failed"],
    )
    return [{"target": p.target, "fnir": p.fnir, "fpir": p.fpir, "threshold": p.threshold} for p in points]


def markdown(report: dict) -> str:
    lines = ["# Encounter decisions", "", f"`{report['command']}`", "", report["created_at"], ""]
    for pack, body in report["packs"].items():
        lines += [f"## {pack}", ""]
        focus = body.get("focus")
        if focus is not None:
            lines += [
                f"Camera focus on (service/focus.py): whole-frame scan every {focus['scan_ms']:g} ms, window margin "
                f"{focus['margin']:g} face widths (at most {focus['max_margin_px']:g} px of the detector's input), "
                f"decided faces re-embedded every {focus['recheck_frames']} frames or when their look "
                f"correlates below {focus['recheck_below']:g}.",
                "",
            ]
        if "stills" in body:
            stills = body["stills"]
            rule = stills["rule"]
            lines += [
                f"{stills['departures']} departures, gallery {stills['gallery_size']}, {stills['frames']} frames "
                f"per encounter at {stills['fps']:g} fps; decision rule: checkpoints {rule['decision_frames']} "
                f"with FPIR shares {rule['fpir_shares']}, {rule['fuse_best']} frames fused.",
                "",
            ]
            rows = []
            for row, single in zip(stills["encounters"], stills["single_image"], strict=True):
                low, high = row["fpir_ci95"]
                rows.append(
                    [
                        f"{row['target_fpir']:g}",
                        f"{percent(row['fpir'], 3)} [{percent(low, 3)}, {percent(high, 3)}]",
                        percent(row["fnir"]),
                        percent(single["fnir"]),
                        percent(row["misidentification_rate"], 3),
                        f"{row['decisions_per_person']:.3f}",
                        f"{row['match_seconds_median']:.2f} s"
                        if row["match_seconds_median"] is not None
                        else "-",
                        percent(row["tailgating"]["own_decision_share"]),
                        _delay(row["tailgating"]["own_encounter_after_frames"]),
                        row["tailgating"]["mixed"],
                    ]
                )
            lines += [
                *table(
                    [
                        "target FPIR",
                        "encounter FPIR [95% CI]",
                        "encounter FNIR",
                        "single-image FNIR",
                        "misidentified",
                        "decisions / person",
                        "MATCH after (median)",
                        "tailgaters decided",
                        "tailgater's own encounter after (frames: mean / p95 / max)",
                        "mixed encounters",
                    ],
                    rows,
                ),
                "",
            ]
            alike = [row["tailgating_look_alike"] for row in stills["encounters"]]
            if alike[0] is not None:
                lines += [
                    "Had every tailgater looked exactly like the person before them (the focus's look check "
                    "blind), tailgaters decided on their own face: "
                    + ", ".join(
                        f"{percent(a['own_decision_share'])} at {row['target_fpir']:g}"
                        for a, row in zip(alike, stills["encounters"], strict=True)
                    )
                    + f"; own encounter after {_delay(alike[0]['own_encounter_after_frames'])} frames "
                    "(mean / p95 / max).",
                    "",
                ]
        if "videos" in body:
            lines += [
                *table(
                    [
                        "video",
                        "identity",
                        "frames",
                        "decisions",
                        "correct",
                        "first decision after",
                        "frames: embedded / followed / window / scan",
                    ],
                    [
                        [
                            v["video"],
                            v["identity"] or "(nobody enrolled)",
                            v["frames"],
                            ", ".join(v["decisions"]) or "-",
                            "yes" if v["correct"] else "NO",
                            f"{v['seconds_to_first_decision']:.2f} s"
                            if v["seconds_to_first_decision"] is not None
                            else "-",
                            "{embedded} / {followed} / {window} / {scan}".format_map(
                                {
                                    k: (v["focus"] or {}).get(k, 0)
                                    for k in ("embedded", "followed", "window", "scan")
                                }
                            )
                            if v["focus"] is not None
                            else "every frame in full",
                        ]
                        for v in body["videos"]
                    ],
                ),
                "",
            ]
    return "\n".join(lines)


def _delay(after: dict[str, object]) -> str:
    if after["mean"] is None:
        return "-"
    return f"{after['mean']:.2f} / {after['p95']:g} / {after['max']}"


def plot(report: dict, path: Path) -> None:
    figure = Figure(figsize=(7, 4.5))  # no pyplot: no backend or global figure state
    axes = figure.subplots()
    labels, encounter, single = [], [], []
    for pack, body in report["packs"].items():
        for row, one in zip(
            body.get("stills", {}).get("encounters", []),
            body.get("stills", {}).get("single_image", []),
            strict=True,
        ):
            labels.append(f"{pack}\nFPIR {row['target_fpir']:g}")
            encounter.append(100 * row["fnir"])
            single.append(100 * one["fnir"])
    positions = np.arange(len(labels))
    axes.bar(positions - 0.2, single, 0.4, label="single image")
    axes.bar(positions + 0.2, encounter, 0.4, label="encounter")
    axes.set_xticks(positions, labels)
    axes.set_ylabel("FNIR (%)")
    axes.set_title("FNIR at the same FPIR: one photo vs the gate's encounter decision")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def write(out: Path, report: dict) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "encounters.json", out / "encounters.md"]
    write_json(written[0], report)
    written[1].write_text(markdown(report), encoding="utf-8")
    if any("stills" in body for body in report["packs"].values()):
        written.append(out / "fnir.png")
        plot(report, written[-1])
    return written


def stills_report(
    stills: StillSet,
    pipeline: FacePipeline,
    calibrations: Calibrations,
    settings: EncounterSettings,
    progress: bool,
) -> dict[str, object]:
    embedder = ModelRef.of(pipeline.pack.embedder)
    start = time.perf_counter()
    runs = [simulate_stills(stills, embedder, calibrations, settings, t, progress) for t in settings.targets]
    return {
        "departures": settings.departures,
        "gallery_size": settings.gallery_size,
        "frames": settings.frames,
        "fps": settings.fps,
        "rule": {
            "decision_frames": list(settings.rule.decision_frames),
            "fpir_shares": list(settings.rule.fpir_shares),
            "fuse_best": settings.rule.fuse_best,
            "same_person_fmr": settings.rule.same_person_fmr,
        },
        "encounters": [encounter_summary(run) for run in runs],
        "single_image": single_image_summary(runs[0]["single"], settings.targets),
        "simulation_s": round(time.perf_counter() - start, 1),
        "now": now_iso(),
    }


def fused_impostor_scores(stills: StillSet, frames: int, per_identity: int = 12, seed: int = 0) -> np.ndarray:
    """Impostor scores of probes that average `frames` photos of one identity (renormalised, as an encounter
    does) against every single photo of every other identity: what a stranger's encounter scores against a
    gallery. `per_identity` random subsets per identity with at least `frames` photos."""
    rng = np.random.default_rng(seed)
    rows = np.flatnonzero(stills.acquired)
    vectors, owners = stills.single[rows], stills.identities[rows]
    scores = []
    for identity in np.unique(owners):
        mine = np.flatnonzero(owners == identity)
        if len(mine) < frames:
            continue
        others = owners != identity
        for _ in range(per_identity):
            mean = vectors[rng.choice(mine, size=frames, replace=False)].mean(axis=0)
            scores.append((vectors[others] @ (mean / np.linalg.norm(mean))).astype(np.float32))
    if not scores:
        raise DatasetError(f"no identity has {frames} photos with a face: nothing to average")
    return np.concatenate(scores)


def fused_calibration_tables(
    stills: StillSet, pipeline: FacePipeline, dataset: Dataset, most_frames: int
) -> dict[int, CalibrationTable]:
    """The tables the service reads for encounters averaging 2..`most_frames` frames."""
    card = pipeline.pack.embedder
    return {
        frames: measure_calibration(
            fused_impostor_scores(stills, frames),
            embedder=card.name,
            embedder_sha256=card.sha256,
            dataset=f"{dataset.root.name} (fingerprint {dataset.fingerprint[:16]}, {len(dataset.samples)} images, "
            f"pack {pipeline.pack.name}): probes averaging {frames} photos of one identity",
        )
        for frames in range(2, most_frames + 1)
    }
