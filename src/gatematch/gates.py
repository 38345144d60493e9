"""Run-time gate assignments: which flight a gate serves, for how long, and who said so.

The authorization policy file maps cameras to gates and gates to the flights they serve; that is the static
base. On the day, flights change gates: an administrator assigns a gate to a flight for a time window and
releases it again (GateService). Assignments are kept in the gallery store's database, so every replica sharing
it lets the gate's cameras match the new flight as soon as the assignment is written, and a released one stops
counting at once. A window is bounded (MAX_WINDOW): an assignment nobody releases still ends by itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta

from gatematch.errors import RequestError
from gatematch.gallery import iso
from gatematch.gallery_store import FLIGHT_ID

GATE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,31}")
MAX_WINDOW = timedelta(hours=24)  # the longest a run-time assignment may last
MAX_LEAD = timedelta(days=14)  # how far ahead one may start (as far ahead as galleries are built)
KEEP_ENDED = timedelta(
    days=1
)  # ended or released rows are deleted this long after (the audit trail keeps them)


@dataclass(frozen=True)
class GateAssignment:
    assignment_id: int
    gate_id: str
    flight_id: str
    starts_at: datetime
    ends_at: datetime
    assigned_by: str
    assigned_at: datetime
    released_at: datetime | None = None
    released_by: str = ""

    def in_force(self, now: datetime) -> bool:
        return self.released_at is None and self.starts_at <= now < self.ends_at

    def overlaps(self, starts_at: datetime, ends_at: datetime) -> bool:
        return self.starts_at < ends_at and starts_at < self.ends_at

    def as_dict(self) -> dict[str, object]:
        return {
            "assignment_id": self.assignment_id,
            "gate_id": self.gate_id,
            "flight_id": self.flight_id,
            "starts_at": iso(self.starts_at),
            "ends_at": iso(self.ends_at),
            "assigned_by": self.assigned_by,
            "assigned_at": iso(self.assigned_at),
            "released_at": iso(self.released_at) if self.released_at else None,
            "released_by": self.released_by,
        }


@dataclass(frozen=True)
class AssignResult:
    assignment: GateAssignment
    released: tuple[GateAssignment, ...]  # the gate's assignments a reassignment ended


def to_second(moment: datetime) -> datetime:
    """Times are kept to the second in UTC (both stores keep them so)."""
    return moment.astimezone(UTC).replace(microsecond=0)


def check_assignment(
    gate_id: str, flight_id: str, starts_at: datetime, ends_at: datetime, now: datetime
) -> tuple[datetime, datetime]:
    """The window, to the second, or RequestError saying what is wrong with the assignment."""
    if not GATE_ID.fullmatch(gate_id):
        raise RequestError(f"gate id {gate_id!r} must be 1-32 letters, digits, '_' or '-'")
    if not FLIGHT_ID.fullmatch(flight_id):
        raise RequestError(f"flight id {flight_id!r} must be 1-32 letters, digits, '_' or '-'")
    if starts_at.tzinfo is None or ends_at.tzinfo is None:
        raise RequestError("an assignment's start and end need a UTC offset")
    starts_at, ends_at = to_second(starts_at), to_second(ends_at)
    if ends_at <= starts_at:
        raise RequestError("an assignment must end after it starts")
    if ends_at <= now:
        raise RequestError("an assignment must end in the future")
    if ends_at - starts_at > MAX_WINDOW:
        raise RequestError(f"an assignment lasts at most {MAX_WINDOW.total_seconds() / 3600:g} h")
    if starts_at - now > MAX_LEAD:
        raise RequestError(f"an assignment starts at most {MAX_LEAD.days} days ahead")
    return starts_at, ends_at


def flights_in_force(assignments: Iterable[GateAssignment], gate_id: str, now: datetime) -> frozenset[str]:
    """The flights the gate serves now by run-time assignment."""
    return frozenset(a.flight_id for a in assignments if a.gate_id == gate_id and a.in_force(now))


ASSIGNMENT_COLUMNS = ", ".join(f.name for f in fields(GateAssignment))  # a store's columns, in this order


def assignment_of(row: Sequence[object], moment: Callable[[object], datetime]) -> GateAssignment:
    """An assignment from a row of ASSIGNMENT_COLUMNS; `moment` turns the store's stored time into a UTC datetime."""
    values = dict(zip((f.name for f in fields(GateAssignment)), row, strict=True))
    for name in ("starts_at", "ends_at", "assigned_at"):
        values[name] = moment(values[name])
    values["released_at"] = moment(values["released_at"]) if values["released_at"] else None
    return GateAssignment(**values)  # type: ignore[arg-type]
