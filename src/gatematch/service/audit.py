"""Append-only audit log of decisions and gallery administration, one JSON object per line, fsynced.

Records who, when, which gallery, which decision and score. A record holds only short strings and numbers
(no field can take bytes, arrays, or a string longer than MAX_TEXT), so an image or a template cannot reach
the log even by mistake: a 128-d float32 template alone is 512 bytes, its base64 684 characters.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

MAX_TEXT = 200
# Exact types only: bool, numpy scalars, bytes and arrays are refused rather than converted.
_ALLOWED: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (float, int)}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class AuditRecord:
    event: str  # match | encounter | gallery.load | gallery.delete | denied
    client: str
    flight_id: str = ""
    gallery_version: str = ""
    camera_id: str = ""
    gate_id: str = ""
    decision: str = ""
    traveler_id: str = ""
    score: float | None = None
    confidence: float | None = None
    sequence: int | None = None
    encounter_id: int | None = None
    detail: str = ""
    at: str = field(default_factory=_now)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.default is None:
                continue
            allowed = _ALLOWED[str(f.type).split(" |")[0]]
            if type(value) not in allowed:
                raise TypeError(
                    f"audit field {f.name} must be {'/'.join(t.__name__ for t in allowed)}, "
                    f"got {type(value).__name__}"
                )
            if isinstance(value, str) and len(value) > MAX_TEXT:
                raise ValueError(f"audit field {f.name} is {len(value)} characters, over {MAX_TEXT}")


class AuditLog:
    """Appends records with O_APPEND and fsync, so concurrent writers never interleave and a crash loses none."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._lock = threading.Lock()

    def record(self, record: AuditRecord) -> None:
        line = json.dumps(asdict(record), separators=(",", ":"), ensure_ascii=True) + "\n"
        with self._lock:
            os.write(self._fd, line.encode())
            os.fsync(self._fd)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
