"""Encounters: one person's face followed across a camera's frames, decided exactly once.

A single gate frame is often blurred or turned; several frames of the same face are better evidence. A face
continues a track only when its position AND its template agree with the track: boxes must overlap (IoU) or be
close (centre shift), and the face's template must be at least `same_person_min` in cosine from the track's
fused template. A different face in the same place therefore starts a new encounter (a tailgater gets a
decision of their own) and two people are never averaged into one template.

The decision spends a false-match budget. The operator sets the target rate of false MATCH decisions per
encounter of someone not on the flight (default 0.003). An encounter searches the gallery at a few checkpoints
(after `decision_frames[j]` usable frames), each search at a threshold for `fpir_shares[j] x target`; an
encounter that ends before its last checkpoint (budget over, face gone, stream closed) makes one final search
with whatever share is left. By the union bound the chance that any of an encounter's searches falsely crosses
its threshold is at most the target, whatever the correlation between searches. MATCH is announced at the first
search that crosses; NO_MATCH at the last checkpoint or the final search.

Frames that fail liveness are never fused; an encounter whose failing frames are at least as many as its live
ones ends LIVENESS_FAILED. Gallery- and protocol-free: the caller passes the clock and the search function.

A caller that saves model time (service/focus.py) may send a face without a template: it then links by position
only and is never fused. A `surplus` face passed quality and liveness but was not embedded because it ranks
below every frame the track already fuses: it counts as a usable frame (the checkpoints come when they would
have), and the fused template is what it would have been.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from gatematch.gallery import SearchResult
from gatematch.service.config import EncounterConfig

MATCH, NO_MATCH, LIVENESS_FAILED = "MATCH", "NO_MATCH", "LIVENESS_FAILED"

# (probe template, target FPIR of this search, frames it averages) -> result
Search = Callable[[np.ndarray, float, int], SearchResult]


@dataclass(frozen=True)
class Sighting:
    """One gate-sized face of one frame, as the tracker needs it."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
    quality: float  # higher is better; ranks frames for fusion
    template: np.ndarray | None  # L2-normalised; None when the face failed quality (no reliable identity)
    live: bool | None = None  # liveness verdict; None when liveness is not checked
    surplus: bool = False  # usable, but too weak to enter the track's fused set, so it was not embedded

    @property
    def fusable(self) -> bool:
        return self.template is not None and self.live is not False


@dataclass(frozen=True)
class EncounterOutcome:
    encounter_id: int
    decision: str  # MATCH, NO_MATCH or LIVENESS_FAILED
    result: SearchResult | None  # the search the decision rests on (None: no usable frame, nothing searched)
    frames_used: int  # templates fused into that search
    frames_seen: int  # frames in which this person's face was seen
    first_sequence: int
    last_sequence: int
    elapsed_s: float  # from the encounter's first frame to the decision
    searches: int  # gallery searches the encounter made
    tailgating: bool  # another gate-sized face was in view together with this one
    false_match_probability: float | None  # MATCH only: how often a stranger's encounter would get this far


@dataclass(frozen=True)
class TrackView:
    """What a caller may know of a live track to plan the next frame's work (service/focus.py)."""

    id: int
    box: tuple[float, float, float, float]
    decided: bool
    fused_full: bool  # the track already fuses `fuse_best` frames ...
    weakest_fused: float  # ... and the weakest of them has this quality (no frame up to it can enter)


@dataclass
class _Track:
    id: int
    box: tuple[float, float, float, float]
    first_time: float
    last_time: float
    first_sequence: int
    last_sequence: int
    best: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (quality, template), best first
    usable: int = 0  # fusable frames seen
    seen: int = 0
    live_passed: int = 0
    live_failed: int = 0
    spent: float = 0.0  # share of the target FPIR already spent by searches
    searches: int = 0
    result: SearchResult | None = None
    decided: bool = False
    crowded: bool = False

    def fused(self) -> np.ndarray | None:
        if not self.best:
            return None
        mean = np.mean([t for _, t in self.best], axis=0)
        return (mean / np.linalg.norm(mean)).astype(np.float32)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def centre_shift(a: Sequence[float], b: Sequence[float]) -> float:
    """Distance between box centres in widths of box `a`."""
    dx = (a[0] + a[2] - b[0] - b[2]) / 2
    dy = (a[1] + a[3] - b[1] - b[3]) / 2
    return float(np.hypot(dx, dy)) / max(a[2] - a[0], 1e-6)


def near(rule: EncounterConfig, track_box: Sequence[float], box: Sequence[float]) -> bool:
    """The place rule: a face may continue a track when its box overlaps the track's or its centre is close."""
    return iou(track_box, box) >= rule.min_iou or centre_shift(track_box, box) <= rule.max_centre_shift


class EncounterTracker:
    """The encounters of one camera stream for one flight; not thread-safe (one frame at a time)."""

    def __init__(self, rule: EncounterConfig, target_fpir: float, encounter_s: float, same_person_min: float):
        self.rule = rule
        self.target_fpir = target_fpir
        self.encounter_s = encounter_s
        self.same_person_min = same_person_min
        self._tracks: list[_Track] = []
        self._ids = itertools.count(1)

    @property
    def open_tracks(self) -> int:
        return len(self._tracks)

    def tracks(self) -> list[TrackView]:
        """The live tracks as they stand (a snapshot: the tracker goes on changing)."""
        fuse = self.rule.fuse_best
        return [
            TrackView(
                t.id,
                t.box,
                t.decided,
                len(t.best) >= fuse,
                t.best[-1][0] if t.best else 0.0,
            )
            for t in list(self._tracks)
        ]

    # -- linking ---------------------------------------------------------------------------------------

    def _same_person(self, track: _Track, sighting: Sighting) -> bool:
        reference = track.fused()
        if reference is None or sighting.template is None:
            return True  # nothing reliable to compare: position alone decides, and nothing is fused
        return float(reference @ sighting.template) >= self.same_person_min

    def _assign(self, sightings: Sequence[Sighting], now: float, sequence: int) -> list[_Track]:
        pairs = sorted(
            (
                (iou(t.box, s.box), ti, si)
                for ti, t in enumerate(self._tracks)
                for si, s in enumerate(sightings)
                if near(self.rule, t.box, s.box) and self._same_person(t, s)
            ),
            reverse=True,
        )
        chosen: dict[int, _Track] = {}
        used: set[int] = set()
        for _, ti, si in pairs:
            if si not in chosen and ti not in used:
                chosen[si] = self._tracks[ti]
                used.add(ti)
        tracks = []
        for si, sighting in enumerate(sightings):
            track = chosen.get(si)
            if track is None:
                track = _Track(next(self._ids), sighting.box, now, now, sequence, sequence)
                self._tracks.append(track)
            track.box, track.last_time, track.last_sequence = sighting.box, now, sequence
            track.seen += 1
            track.crowded |= len(sightings) > 1
            tracks.append(track)
        return tracks

    # -- deciding --------------------------------------------------------------------------------------

    def _outcome(
        self, track: _Track, decision: str, now: float, fmp: float | None = None
    ) -> EncounterOutcome:
        track.decided = True
        return EncounterOutcome(
            encounter_id=track.id,
            decision=decision,
            result=track.result,
            frames_used=len(track.best),
            frames_seen=track.seen,
            first_sequence=track.first_sequence,
            last_sequence=track.last_sequence,
            elapsed_s=now - track.first_time,
            searches=track.searches,
            tailgating=track.crowded,
            false_match_probability=fmp,
        )

    def _cannot_enter(self, track: _Track, quality: float) -> bool:
        """A frame of this quality would be dropped from the track's fused set at once (ties go to the older)."""
        return len(track.best) >= self.rule.fuse_best and quality <= track.best[-1][0]

    def _attack(self, track: _Track) -> bool:
        return track.live_failed > 0 and track.live_failed >= track.live_passed

    def _search(self, track: _Track, share: float, search: Search) -> float | None:
        """One search spending `share` of the target; the MATCH's false-match probability, or None."""
        spent_before = track.spent
        track.spent += share
        track.searches += 1
        track.result = search(track.fused(), share * self.target_fpir, len(track.best))
        match = track.result.match
        if match is None:
            return None
        fpir = match.estimated_fpir if match.estimated_fpir is not None else share * self.target_fpir
        return min(1.0, spent_before * self.target_fpir + fpir)

    def _checkpoint(self, track: _Track, now: float, search: Search) -> EncounterOutcome | None:
        """The search due after this frame, if the track just reached a checkpoint."""
        rule, j = self.rule, track.searches
        if j >= len(rule.decision_frames) or track.usable < rule.decision_frames[j]:
            return None
        if self._attack(track):
            return self._outcome(track, LIVENESS_FAILED, now)
        fmp = self._search(track, rule.fpir_shares[j], search)
        if fmp is not None:
            return self._outcome(track, MATCH, now, fmp)
        return self._outcome(track, NO_MATCH, now) if j == len(rule.decision_frames) - 1 else None

    def _final(self, track: _Track, now: float, search: Search | None) -> EncounterOutcome:
        """The encounter ends before its last checkpoint: one last search with the unspent share."""
        if self._attack(track):
            return self._outcome(track, LIVENESS_FAILED, now)
        left = max(sum(self.rule.fpir_shares) - track.spent, 0.0)
        if track.best and left > 1e-12 and search is not None:
            fmp = self._search(track, left, search)
            if fmp is not None:
                return self._outcome(track, MATCH, now, fmp)
        return self._outcome(track, NO_MATCH, now)

    # -- the stream's calls ----------------------------------------------------------------------------

    def observe(
        self, now: float, sequence: int, sightings: Sequence[Sighting], search: Search
    ) -> tuple[list[int], list[EncounterOutcome]]:
        """Feed one frame's gate-sized faces; return each face's encounter id and the decisions it settles."""
        outcomes = self.tick(now, search)
        tracks = self._assign(sightings, now, sequence)
        for track, sighting in zip(tracks, sightings, strict=True):
            if track.decided:
                continue
            if sighting.live is not None:
                track.live_passed += sighting.live
                track.live_failed += not sighting.live
            if sighting.fusable:
                track.best.append((sighting.quality, sighting.template))
                track.best.sort(key=lambda pair: pair[0], reverse=True)
                del track.best[self.rule.fuse_best :]
            elif not (sighting.surplus and self._cannot_enter(track, sighting.quality)):
                continue
            track.usable += 1
            outcome = self._checkpoint(track, now, search)
            if outcome is not None:
                outcomes.append(outcome)
        return [t.id for t in tracks], outcomes

    def tick(self, now: float, search: Search | None) -> list[EncounterOutcome]:
        """Decide undecided encounters whose budget ran out or whose face left; forget tracks no longer seen."""
        outcomes = []
        for track in self._tracks:
            over = now - track.first_time >= self.encounter_s
            lost = now - track.last_time > self.rule.lost_after_ms / 1000
            if not track.decided and (over or lost):
                outcomes.append(self._final(track, now, search))
        self._tracks = [t for t in self._tracks if now - t.last_time <= self.rule.lost_after_ms / 1000]
        return outcomes

    def close(self, now: float, search: Search | None) -> list[EncounterOutcome]:
        """The stream ends: every open encounter gets its one decision now, and the tracker forgets them all."""
        outcomes = [self._final(t, now, search) for t in self._tracks if not t.decided]
        self._tracks = []
        return outcomes
