"""Encounters: one traveler's face followed across a camera's frames, decided once.

A single gate frame is often blurred or turned; several frames of the same face are better evidence. Faces are
linked to open tracks by box overlap (IoU) or, for fast movement, centre distance; the templates of a track's
best-quality frames are averaged (then re-normalised) and searched. MATCH is announced as soon as the fused
evidence clears the threshold (after `min_frames`, or at once when it clears it by `strong_margin`); NO_MATCH
when the encounter budget runs out, or the face leaves before a match. Gallery- and protocol-free: the caller
passes the search function.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from gatematch.gallery import SearchResult
from gatematch.service.config import EncounterConfig

MATCH, NO_MATCH = "MATCH", "NO_MATCH"

Search = Callable[[np.ndarray], SearchResult]


@dataclass(frozen=True)
class Sighting:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels
    quality: float  # higher is better; ranks frames for fusion
    embedding: np.ndarray | None  # L2-normalised; None when the face failed quality gates


@dataclass(frozen=True)
class EncounterOutcome:
    encounter_id: int
    decision: str  # MATCH or NO_MATCH
    result: SearchResult | None  # the last search (None if no frame of the encounter was usable)
    frames_used: int
    first_sequence: int
    last_sequence: int
    elapsed_s: float


@dataclass
class _Track:
    id: int
    box: tuple[float, float, float, float]
    first_time: float
    last_time: float
    first_sequence: int
    last_sequence: int
    best: list[tuple[float, np.ndarray]] = field(default_factory=list)  # (quality, embedding), best first
    result: SearchResult | None = None
    decided: bool = False


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


class EncounterTracker:
    """Per-stream state; not thread-safe (one stream's frames are processed one at a time)."""

    def __init__(self, config: EncounterConfig, encounter_s: float, search: Search):
        self.config = config
        self.encounter_s = encounter_s
        self.search = search
        self._tracks: list[_Track] = []
        self._ids = itertools.count(1)

    def _outcome(self, track: _Track, decision: str, now: float) -> EncounterOutcome:
        track.decided = True
        return EncounterOutcome(
            track.id,
            decision,
            track.result,
            len(track.best),
            track.first_sequence,
            track.last_sequence,
            now - track.first_time,
        )

    def tick(self, now: float) -> list[EncounterOutcome]:
        """NO_MATCH for undecided encounters whose budget ran out or whose face left; forget lost tracks."""
        outcomes = []
        lost_after = self.config.lost_after_ms / 1000
        for track in self._tracks:
            budget_over = now - track.first_time >= self.encounter_s
            lost = now - track.last_time > lost_after
            if not track.decided and (budget_over or lost):
                outcomes.append(self._outcome(track, NO_MATCH, now))
        self._tracks = [t for t in self._tracks if now - t.last_time <= lost_after]
        return outcomes

    def _assign(self, sightings: Sequence[Sighting], now: float, sequence: int) -> list[_Track]:
        pairs = sorted(
            (
                (iou(t.box, s.box), ti, si)
                for ti, t in enumerate(self._tracks)
                for si, s in enumerate(sightings)
            ),
            reverse=True,
        )
        chosen: dict[int, _Track] = {}
        used: set[int] = set()
        for overlap, ti, si in pairs:
            track = self._tracks[ti]
            if si in chosen or ti in used:
                continue
            near = centre_shift(track.box, sightings[si].box) <= self.config.max_centre_shift
            if overlap >= self.config.min_iou or near:
                chosen[si] = track
                used.add(ti)
        tracks = []
        for si, sighting in enumerate(sightings):
            track = chosen.get(si)
            if track is None:
                track = _Track(next(self._ids), sighting.box, now, now, sequence, sequence)
                self._tracks.append(track)
            track.box, track.last_time, track.last_sequence = sighting.box, now, sequence
            tracks.append(track)
        return tracks

    def observe(
        self, now: float, sequence: int, sightings: Sequence[Sighting]
    ) -> tuple[list[int], list[EncounterOutcome]]:
        """Feed one frame's faces; return each face's encounter id and any decisions this frame settles."""
        outcomes = self.tick(now)
        tracks = self._assign(sightings, now, sequence)
        for track, sighting in zip(tracks, sightings, strict=True):
            if track.decided or sighting.embedding is None:
                continue
            track.best.append((sighting.quality, sighting.embedding))
            track.best.sort(key=lambda pair: pair[0], reverse=True)
            del track.best[self.config.fuse_best :]
            fused = np.mean([e for _, e in track.best], axis=0)
            track.result = self.search((fused / np.linalg.norm(fused)).astype(np.float32))
            match = track.result.match
            strong = match is not None and match.score >= track.result.threshold + self.config.strong_margin
            if match is not None and (strong or len(track.best) >= self.config.min_frames):
                outcomes.append(self._outcome(track, MATCH, now))
        return [t.id for t in tracks], outcomes
