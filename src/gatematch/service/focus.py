"""Where a camera stream spends model time: detection where the faces are, embeddings where they can change a decision.

A gate camera's frames are redundant: a face moves little from one frame to the next and only a few frames of an
encounter decide it. One `Focus` per stream and flight sits next to the flight's EncounterTracker and plans each
frame (one frame at a time):

- Detection. The faces seen in the previous frame are looked for in one window over their boxes grown by
  `margin` box widths on each side, but by no more than `max_margin_px` of the detector's input (what the
  network sees around a face is counted in its own pixels: a big face needs no more than a small one): it
  starts on the whole frame's anchor grid, so a face in it meets the network as in a whole-frame run
  (detect.py). The whole frame is searched when no face was seen in the previous frame,
  when the window lost one of them (in the same frame), and when `scan_ms` have passed since the last search:
  coarsely (`scan_coarse` of the detector's scale), what that finds then detected again at full scale in a
  window; when the followed faces' window would cover more than `max_window_share` of the frame (a traveler
  close to the camera), the whole frame at full scale at once. Bound: a new face outside every window is found
  by the first frame processed `scan_ms` after the last whole-frame search, i.e. less than `scan_ms` plus one
  frame interval after it appeared (1.2 s at the defaults and 5 fps); inside the window, at once.
- Assessment and embedding. Only the frame's subject and its rivals (the faces the frame rules and the tracker
  look at) are aligned and assessed. A new or undecided face gets quality, liveness and an embedding, except the
  embedding when it cannot be fused: failed quality or liveness, or ranked no higher than every frame its track
  already fuses (a surplus frame: it still counts, encounter.py); LightQNet only runs on faces the cheap quality
  checks passed. A decided encounter's face is followed by position only (no quality, no embedding) unless its
  look changed since its last embedded frame (a 12x12 Lab thumbnail of the aligned crop correlating below
  `recheck_below`) or `recheck_frames` frames passed since: then it is embedded and must pass the tracker's
  identity check again, so a different face in the same place starts an encounter of its own (DESIGN.md has the
  measurements).
- Passing over. While every open encounter is decided and every face of the last analysed frame is verified
  by its look, still (moved less than `STILL` of its width, and changed size less, between each of the last
  `STILL_INTERVALS` analysed frames) and not due for a re-embedding, the next frame (`pass_over`: one at most)
  is not analysed at all, not even decoded: it could only confirm decisions already made. Never a frame on
  which a whole-frame search is due (the bound above holds), nor one after which the tracker could go
  `lost_after_ms` without the face: the next frame's arrival (one interval more) plus its whole budget must
  fit in it, or the track would end and start again (a second decision for one traveler). Times are arrival
  times. A face entering inside the window on a passed frame is found by the next one.
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from gatematch.detect import Detection
from gatematch.facepipeline import Analysis, Face, FacePipeline, subject_and_rivals
from gatematch.images import JpegFrame, Window
from gatematch.quality import FACE_REGION, QualityReport
from gatematch.service.config import EncounterConfig, FocusConfig
from gatematch.service.dataplane import LIVENESS_MIN_REAL, fusion_rank
from gatematch.service.encounter import EncounterTracker, Sighting, TrackView, iou, near

Box = tuple[float, float, float, float]
APPEARANCE_SIZE = (12, 12)  # thumbnail of the face region; DESIGN.md has the measurements behind it
# A face that moved (centre) and grew or shrank by less than this share of its width between two analysed
# frames stood still for that interval; one that stood still for STILL_INTERVALS analysed intervals in a row
# is unlikely to leave the tracker's reach (half a width, or a third of overlap) while one frame is passed
# over. On the four videos at 5 fps: with one still interval, one pass in 39 broke a track that frame-to-frame
# analysis kept (a dancer's head starting to move: a second decision for her); with two, none in 27.
STILL = 0.1
STILL_INTERVALS = 2


def appearance(crop: np.ndarray) -> np.ndarray:
    """A face's look, cheaply: the aligned crop's face region in Lab, 12x12, zero-mean, unit-norm.

    Consecutive frames of one person correlate above 0.85 in 81% of frames (the four videos, against the last
    embedded frame); two different people's photos do in 0.12% of pairs (celeba_wild).
    """
    lab = cv2.cvtColor(crop[FACE_REGION], cv2.COLOR_BGR2LAB)
    thumb = cv2.resize(lab, APPEARANCE_SIZE, interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    thumb -= thumb.mean()
    return thumb / max(float(np.linalg.norm(thumb)), 1e-6)


def warm_up() -> None:
    """OpenCV builds its Lab tables on first use (about 0.3 s): pay that at start, not on a traveler's frame."""
    appearance(np.zeros((112, 112, 3), np.uint8))


def grown_by(config: FocusConfig, width: float, scale: float) -> float:
    """How far a face `width` frame pixels wide is grown on each side: `margin` widths, but at most
    `max_margin_px` of the detector's input (`scale` of them per frame pixel)."""
    return min(config.margin * width, config.max_margin_px / scale)


def grown_window(
    config: FocusConfig, boxes: list[Box], width: int, height: int, scale: float
) -> Window | None:
    """The region of a width x height frame that holds these faces, each grown by `margin` widths but at most
    `max_margin_px` of the detector's input (`scale` of them per frame pixel); None when none of it is in the
    frame. The stream's windows (`Focus.detect`, `Focus.scan`) and the window-fidelity benchmark both come from
    here."""
    if not boxes:
        return None
    grown = []
    for x1, y1, x2, y2 in boxes:
        grow = grown_by(config, x2 - x1, scale)
        grown.append((x1 - grow, y1 - grow, x2 + grow, y2 + grow))
    x1, y1 = max(min(b[0] for b in grown), 0.0), max(min(b[1] for b in grown), 0.0)
    x2, y2 = min(max(b[2] for b in grown), width), min(max(b[3] for b in grown), height)
    if x2 <= x1 or y2 <= y1:
        return None
    return (math.floor(x1), math.floor(y1), math.ceil(x2), math.ceil(y2))


def fills_frame(config: FocusConfig, window: Window, width: int, height: int) -> bool:
    """Whether a window covers so much of the frame (`max_window_share`) that the whole is as cheap."""
    x1, y1, x2, y2 = window
    return (x2 - x1) * (y2 - y1) > config.max_window_share * width * height


def still(before: Box, after: Box) -> bool:
    """Whether a face moved and changed size by less than `STILL` of its width from `before` to `after`."""
    width = max(before[2] - before[0], 1e-6)
    shift = math.hypot(
        (after[0] + after[2] - before[0] - before[2]) / 2, (after[1] + after[3] - before[1] - before[3]) / 2
    )
    return shift < STILL * width and abs((after[2] - after[0]) - width) < STILL * width


def assign(rule: EncounterConfig, tracks: list[TrackView], boxes: list[np.ndarray]) -> dict[int, TrackView]:
    """Each box to at most one track and each track to at most one box, by position (best overlap first)."""
    pairs = sorted(
        (
            (iou(t.box, b), bi, ti)
            for (ti, t), (bi, b) in itertools.product(enumerate(tracks), enumerate(boxes))
            if near(rule, t.box, b)
        ),
        reverse=True,
    )
    chosen: dict[int, TrackView] = {}
    used: set[int] = set()
    for _, bi, ti in pairs:
        if bi not in chosen and ti not in used:
            chosen[bi] = tracks[ti]
            used.add(ti)
    return chosen


@dataclass
class FocusedFrame:
    """One frame's share of its stream's focus: what the frame's plan did, applied to the Focus by `follow`
    only once the frame reached the tracker. A frame abandoned at its budget thus leaves the focus as it was
    (its whole-frame search found faces the tracker never got: the next frame searches again), and the
    abandoned worker and the next frame's never write the same state."""

    arrived: float  # when the frame arrived (monotonic; the simulated clock in a replay)
    scanned_at: float | None = None  # when this frame's whole-frame search ran
    looks: dict[int, np.ndarray] = field(default_factory=dict)  # id(detection) -> look
    counts: Counter[str] = field(default_factory=Counter)


@dataclass
class _Followed:
    reference: np.ndarray | None  # the look of the track's last embedded frame
    since: int = 0  # frames since then
    box: Box | None = None  # where the face was in the last analysed frame
    still_for: int = 0  # analysed intervals in a row up to then in which it stood still (`still`)
    verified: bool = False  # ... and whether it was embedded there or still looked like its reference


class Focus:
    """The detection window and the per-face work of one stream's frames for one flight."""

    def __init__(
        self, config: FocusConfig, rule: EncounterConfig, tracker: EncounterTracker, frame_budget_s: float
    ):
        self.config = config
        self.rule = rule
        self.tracker = tracker
        # the longest a frame may take from arrival to the tracker (a gRPC deadline or a capture age only
        # shortens a frame's budget, never lengthens it)
        self.frame_budget_s = frame_budget_s
        self.counts: Counter[str] = Counter()  # what the frames got: scans, windows, rechecks, skips
        self._scanned = -math.inf
        self._followed: dict[int, _Followed] = {}
        self._last_seen: set[int] = set()  # tracks given a face in the previous frame
        self._analysed = -math.inf  # when the last analysed frame arrived
        self._passed = 0  # frames passed over since then

    # -- passing over --------------------------------------------------------------------------------------

    def pass_over(self, arrived: float) -> bool:
        """Whether the frame that arrived at `arrived` goes unanalysed (the module's "Passing over"); when it
        does, it counts as a frame for the followed faces' re-embedding and in `counts["passed_over"]`."""
        if self._passed >= self.config.pass_over or not self._last_seen:  # pass_over is 0 or 1
            return False
        if self._scan_due(arrived, following=True):
            return False
        # the next frame arrives about one interval after this one (two after the last analysed one) and
        # reaches the tracker at most a frame budget later; the tracker ends a track unseen for lost_after_ms
        next_arrival_s = 2 * (arrived - self._analysed)
        if (next_arrival_s + self.frame_budget_s) * 1000 > self.rule.lost_after_ms:
            return False
        settled = [
            f
            for f in map(self._followed.get, self._last_seen)
            if f is not None and f.verified and f.still_for >= STILL_INTERVALS and not self._recheck_due(f)
        ]
        if len(settled) < len(self._last_seen):
            return False
        if not all(t.decided for t in self.tracker.tracks()):  # an open decision: every frame may count
            return False
        for followed in settled:
            followed.since += 1
        self._passed += 1
        self.counts["passed_over"] += 1
        return True

    # -- detection ---------------------------------------------------------------------------------------

    def _scan_due(self, now: float, following: bool) -> bool:
        """A whole-frame search is due: no face is followed, or `scan_ms` passed since the last one."""
        return not following or (now - self._scanned) * 1000 >= self.config.scan_ms

    def _finds(self, followed: list[TrackView], boxes: Iterable[np.ndarray | Box]) -> bool:
        """Whether every followed face is near one of these boxes (else the window lost it)."""
        boxes = [np.asarray(b) for b in boxes]
        return all(any(near(self.rule, t.box, b) for b in boxes) for t in followed)

    def detect(
        self,
        pipeline: FacePipeline,
        image: np.ndarray | JpegFrame,
        now: float,
        tracks: list[TrackView],
        frame: FocusedFrame,
    ) -> list[Detection]:
        """Faces where they can be: in the followed faces' window, else (or when it is time, or when the window
        lost one) in the whole frame. Only faces seen in the previous frame are looked for in a window: one
        missing there already is searched for everywhere."""
        height, width = image.shape[:2]
        followed = [t for t in tracks if t.id in self._last_seen]
        scale = pipeline.detector.scale_of(width, height) if followed else 1.0
        window = grown_window(self.config, [t.box for t in followed], width, height, scale)
        if window is not None and fills_frame(self.config, window, width, height):
            frame.counts["close"] += 1  # the whole frame at full scale is theirs
            return self.scan(pipeline, image, now, frame, look_first=False)
        if window is None or self._scan_due(now, bool(followed)):
            return self.scan(pipeline, image, now, frame)
        found = pipeline.detect(image, window)
        if self._finds(followed, (d.box for d in found)):
            frame.counts["window"] += 1
            return found
        frame.counts["lost"] += 1  # the window lost a followed face: where did it go?
        return self.scan(pipeline, image, now, frame)

    def scan(
        self,
        pipeline: FacePipeline,
        image: np.ndarray | JpegFrame,
        now: float,
        frame: FocusedFrame,
        look_first: bool = True,
    ) -> list[Detection]:
        """The whole frame: looked at coarsely, then what was found again at full scale in a window (faces
        big enough to matter at the gate are found either way; only a full-scale run places landmarks as the
        embedder needs them). Without `look_first` (the followed faces fill the frame, so the coarse look would
        find them and the window be the whole frame) at full scale at once."""
        frame.scanned_at = now
        frame.counts["scan"] += 1
        height, width = image.shape[:2]
        whole = (0, 0, width, height)
        coarse = self.config.scan_coarse
        if not look_first or coarse >= 1 or not pipeline.detector.any_size:
            return pipeline.detect(image, whole)
        found = pipeline.detect(image, whole, coarse)
        if not found:
            return []
        boxes = [tuple(float(v) for v in d.box) for d in found]
        window = grown_window(self.config, boxes, width, height, pipeline.detector.scale_of(width, height))
        if window is None or fills_frame(self.config, window, width, height):
            window = whole
        return pipeline.detect(image, window)

    # -- per-face work -----------------------------------------------------------------------------------

    def follows(self, track: TrackView | None, look: np.ndarray, counts: Counter[str]) -> bool:
        """True when the face may be followed by position only: its encounter is decided, it was embedded
        less than `recheck_frames` frames ago and it still looks like it did then."""
        if track is None or not track.decided:
            return False
        followed = self._followed.get(track.id)
        if followed is None or followed.reference is None or self._recheck_due(followed):
            counts["recheck_due"] += 1
            return False
        if not self._looks_alike(followed, look):
            counts["recheck_look"] += 1
            return False
        counts["followed"] += 1
        return True

    def skips_embedding(
        self,
        track: TrackView | None,
        fusable: bool,
        rank: float,
        look: np.ndarray | None,
        counts: Counter[str],
    ) -> str | None:
        """Why an assessed face gets no template ("unfusable": failed quality or liveness, so it never enters
        the fused set; "surplus": see `surplus`), or None: it is embedded. One rule for the stream
        (`_FrameWork.embed`) and the encounter benchmark's replay (`plan`)."""
        reason = "unfusable" if not fusable else "surplus" if self.surplus(track, rank, look) else None
        counts[reason or "embedded"] += 1
        return reason

    def surplus(self, track: TrackView | None, rank: float, look: np.ndarray | None) -> bool:
        """True when a usable face of an undecided track ranks no higher than every frame it fuses already
        and still looks like the track's last embedded frame. A surplus face reaches the tracker without a
        template, so the tracker links it by position only: a different person in the same place must be
        embedded instead, to meet the tracker's identity check."""
        return (
            track is not None
            and not track.decided
            and track.fused_full
            and rank <= track.weakest_fused
            and look is not None
            and self._looks_alike(self._followed.get(track.id), look)
        )

    def _recheck_due(self, followed: _Followed) -> bool:
        """Whether this frame is the `recheck_frames`-th since the face was last embedded."""
        return followed.since + 1 >= self.config.recheck_frames

    def _looks_alike(self, followed: _Followed | None, look: np.ndarray | None) -> bool:
        """Whether a face still looks like its track's last embedded frame."""
        return (
            followed is not None
            and followed.reference is not None
            and look is not None
            and float(look @ followed.reference) >= self.config.recheck_below
        )

    def analyze(self, pipeline: FacePipeline, image: np.ndarray | JpegFrame, frame: FocusedFrame) -> Analysis:
        """The frame through the plan: detect where needed, then only the work that can change a decision.
        Reads the focus, writes only `frame` (see FocusedFrame). Its clock is the frame's arrival, as for
        passing over: a queue before the worker must not move a scan to another frame. A JpegFrame is decoded
        where the work reads it: what detection decoded is the frame's "decode", not "detect"; the little that
        alignment and liveness reveal beyond it counts in their own stages."""
        tracks = self.tracker.tracks()
        start = time.perf_counter()
        detections = self.detect(pipeline, image, frame.arrived, tracks, frame)
        detect_s = time.perf_counter() - start
        decode_s = image.seconds if isinstance(image, JpegFrame) else 0.0
        height, width = image.shape[:2]
        gate = set(subject_and_rivals(detections, (width, height)))
        owners = assign(self.rule, tracks, [d.box for d in detections])
        analysis = pipeline.analyze_detected(image, detections, _FrameWork(self, frame, gate, owners))
        analysis.timings["detect"] = detect_s - decode_s
        analysis.timings["decode"] = decode_s
        return analysis

    def follow(
        self,
        frame: FocusedFrame,
        faces: tuple[Face, ...],
        seen: list[Sighting],
        encounter_ids: list[int],
    ) -> None:
        """After the tracker took the frame's gate-sized faces as `seen` (`dataplane.sightings`): the frame's
        plan becomes the focus's."""
        if frame.scanned_at is not None:
            self._scanned = max(self._scanned, frame.scanned_at)
        self.counts.update(frame.counts)
        looks = [frame.looks.get(id(face.detection)) for face in faces]
        self.observed(encounter_ids, looks, seen, frame.arrived)

    def observed(
        self, encounter_ids: list[int], looks: list[np.ndarray | None], seen: list[Sighting], arrived: float
    ) -> None:
        """What an analysed frame (arrived at `arrived`) showed of each track: what it looked like when it was
        last embedded (a sighting with a template, verified by the tracker's identity check), how many frames
        ago that was, and where it is."""
        self._last_seen = set(encounter_ids)
        self._analysed, self._passed = arrived, 0
        for track_id, look, sighting in zip(encounter_ids, looks, seen, strict=True):
            followed = self._followed.setdefault(track_id, _Followed(None))
            box, verified = sighting.box, sighting.template is not None
            moved = followed.box is None or not still(followed.box, box)
            followed.still_for = 0 if moved else followed.still_for + 1
            followed.box = box
            # a changed look that was not embedded (it failed quality or liveness) is not verified
            followed.verified = verified or self._looks_alike(followed, look)
            if verified:
                followed.reference, followed.since = look, 0
            else:
                followed.since += 1
        live = {t.id for t in self.tracker.tracks()}
        self._followed = {k: v for k, v in self._followed.items() if k in live}

    def plan(self, seen: list[Sighting], looks: list[np.ndarray | None], now: float) -> list[Sighting]:
        """Sightings of faces analysed in full, as this focus would have let them be computed (the encounter
        benchmark replays photos analysed once): followed faces lose quality and template, surplus and
        unfusable ones their template. The frame counts as a whole-frame search when the stream's would have
        made one (`detect`), which is what passing over needs to know; the replay's faces stand where a gate
        camera sees travelers and never fill the frame, so the close-face search does not arise."""
        tracks = self.tracker.tracks()
        followed = [t for t in tracks if t.id in self._last_seen]
        if self._scan_due(now, bool(followed)) or not self._finds(followed, (s.box for s in seen)):
            self._scanned = now
            self.counts["scan"] += 1
        owners = assign(self.rule, tracks, [np.asarray(s.box) for s in seen])
        planned = []
        for index, (sighting, look) in enumerate(zip(seen, looks, strict=True)):
            owner = owners.get(index)
            if look is not None and self.follows(owner, look, self.counts):
                planned.append(Sighting(sighting.box, 0.0, None, None))
                continue
            # A template: quality passed.
            fusable = sighting.template is not None and sighting.live is not False
            skipped = self.skips_embedding(owner, fusable, sighting.quality, look, self.counts)
            planned.append(
                sighting
                if skipped is None
                else replace(sighting, template=None, surplus=skipped == "surplus")
            )
        return planned


class _FrameWork:
    """`FaceWork` for one frame (facepipeline): which faces are assessed and which are embedded."""

    def __init__(self, focus: Focus, frame: FocusedFrame, gate: set[int], owners: dict[int, TrackView]):
        self.focus = focus
        self.frame = frame
        self.gate = gate
        self.owners = owners

    def aligns(self, index: int, detection: Detection) -> bool:
        if index not in self.gate:
            self.frame.counts["not_gate"] += 1
            return False  # not the frame's subject nor a rival: no rule and no encounter looks at it
        return True

    def assess(self, index: int, detection: Detection, crop: np.ndarray) -> bool:
        look = appearance(crop)
        self.frame.looks[id(detection)] = look
        return not self.focus.follows(self.owners.get(index), look, self.frame.counts)

    def embed(self, index: int, detection: Detection, quality: QualityReport, liveness: float | None) -> bool:
        fusable = quality.passed and (liveness is None or liveness >= LIVENESS_MIN_REAL)
        look = self.frame.looks.get(id(detection))
        owner = self.owners.get(index)
        return (
            self.focus.skips_embedding(owner, fusable, fusion_rank(quality), look, self.frame.counts) is None
        )
