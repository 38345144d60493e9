"""Flight manifests: who is expected on one departure, and where their enrollment photos are.

Two formats, one meaning:

CSV, one row per traveler (photos separated by ';'):
    flight_id,departure,traveler_id,photos,document_type,direction
    GM101,2030-05-01T18:30:00Z,P001,p001/a.jpg;p001/b.jpg,passport,departure

JSON:
    {"flight_id": "GM101", "departure": "2030-05-01T18:30:00Z", "direction": "departure",
     "travelers": [{"traveler_id": "P001", "photos": ["p001/a.jpg"], "document_type": "passport"}]}

`direction` (optional, default `departure`) says whether the travelers leave on the flight (exit) or arrive on
it (entry, `arrival`); for an arrival, `departure` is the flight's scheduled arrival time here.

Photo paths are relative to the manifest's folder, absolute, or file:// URLs; nothing is fetched over a
network (enrollment runs air-gapped). Every photo must lie inside the manifest's folder, or inside the photo
root the operator names: `../`, absolute paths, file:// URLs and symlinks that lead out of it are refused, so a
manifest (which often comes from another party, the airline) cannot make enrollment read any other file of the
machine. The check is repeated when a photo is read (`Manifest.read_photo`), so a symlink swapped in after
validation is refused too. A departure without an explicit UTC offset is refused: a gallery's
expiry is computed from it, and a naive time silently read in the wrong zone would keep biometric data hours
too long or destroy it before boarding. Every error names the file and the line (CSV) or JSON path.
"""

from __future__ import annotations

import csv
import errno
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import unquote, urlparse

from gatematch.errors import ManifestError
from gatematch.gallery import DEPARTURE, DIRECTIONS
from gatematch.gallery_store import FLIGHT_ID, MAX_PHOTOS, TRAVELER_ID

CSV_COLUMNS = ("flight_id", "departure", "traveler_id", "photos", "document_type", "direction")
REQUIRED_COLUMNS = CSV_COLUMNS[:4]
# A departure outside these years is a typo; refusing it also keeps departure + retention representable.
EARLIEST_DEPARTURE = datetime(2000, 1, 1, tzinfo=UTC)
LATEST_DEPARTURE = datetime(3000, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class ManifestTraveler:
    traveler_id: str
    photos: tuple[Path, ...]  # absolute paths of existing files
    document_type: str | None = None


@dataclass(frozen=True)
class Manifest:
    flight_id: str
    departure: datetime  # aware, UTC
    travelers: tuple[ManifestTraveler, ...]
    source: Path
    photo_root: Path  # resolved: every photo lies inside it
    direction: str = DEPARTURE

    def read_photo(self, path: Path) -> bytes:
        """A photo's bytes, read only if it still resolves inside the photo root (OSError otherwise)."""
        if not confined(path, self.photo_root):
            raise PermissionError(errno.EACCES, "it no longer lies inside the photo folder")
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, "rb") as handle:
            return handle.read()


def confined(path: Path, root: Path) -> bool:
    """Whether `path`, with every symlink followed, lies inside `root` (resolved)."""
    return Path(os.path.realpath(path)).is_relative_to(root)


def load_manifest(path: Path, photo_root: Path | None = None) -> Manifest:
    """Parse and validate a CSV or JSON manifest (chosen by extension); photos must lie inside `photo_root`
    (default: the manifest's folder)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ManifestError(f"manifest {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"manifest {path}: cannot be read as UTF-8 text ({exc})") from None
    root = Path(os.path.realpath(photo_root if photo_root is not None else path.parent))
    if not root.is_dir():
        raise ManifestError(f"photo root {photo_root} is not a folder")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _from_csv(text, path, root)
    if suffix == ".json":
        return _from_json(text, path, root)
    raise ManifestError(f"manifest {path}: unknown format '{suffix}' (use .csv or .json)")


def parse_departure(value: object, where: str) -> datetime:
    if not isinstance(value, str) or not value.strip():
        raise ManifestError(f"{where}: departure must be an ISO 8601 time, e.g. 2030-05-01T18:30:00Z")
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ManifestError(f"{where}: departure {value!r} is not an ISO 8601 time") from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ManifestError(
            f"{where}: departure {value!r} has no UTC offset; write it in UTC, e.g. {value.strip()}Z"
        )
    try:
        utc: datetime | None = moment.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:30+01:00 is before year 1 in UTC
        utc = None
    if utc is None or not EARLIEST_DEPARTURE <= utc < LATEST_DEPARTURE:
        raise ManifestError(
            f"{where}: departure {value!r} is outside {EARLIEST_DEPARTURE.year}-{LATEST_DEPARTURE.year - 1}"
        )
    return utc


def parse_direction(value: object, where: str) -> str:
    """`departure` or `arrival`; empty or missing means departure."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return DEPARTURE
    if not isinstance(value, str) or value.strip().lower() not in DIRECTIONS:
        raise ManifestError(f"{where}: direction {value!r} must be one of {', '.join(DIRECTIONS)}")
    return value.strip().lower()


def _flight_id(value: object, where: str) -> str:
    if not isinstance(value, str) or not FLIGHT_ID.fullmatch(value.strip()):
        raise ManifestError(f"{where}: flight_id {value!r} must be 1-32 letters, digits, '_' or '-'")
    return value.strip()


def _traveler_id(value: object, where: str) -> str:
    if not isinstance(value, str) or not TRAVELER_ID.fullmatch(value.strip()):
        raise ManifestError(
            f"{where}: traveler_id {value!r} must be 1-64 letters, digits or '._:-', starting with a letter "
            "or digit"
        )
    return value.strip()


def _photo(value: object, base: Path, root: Path, where: str) -> Path:
    if not isinstance(value, str):
        raise ManifestError(f"{where}: photo path must be a text, got {value!r}")
    text = value.strip()
    if not text:
        raise ManifestError(f"{where}: photo path is empty")
    if "://" in text:
        url = urlparse(text)
        if url.scheme != "file" or url.netloc not in ("", "localhost"):
            raise ManifestError(f"{where}: photo {text!r}: only local files and file:// URLs are allowed")
        path = Path(unquote(url.path))
    else:
        path = Path(text)
        if not path.is_absolute():
            path = base / path
    if not confined(path, root):
        raise ManifestError(
            f"{where}: photo {text!r} lies outside the photo folder {root} (through '..', an absolute path, "
            "a file:// URL or a symlink); photos must be inside the manifest's folder or --photo-root"
        )
    if path.exists() and not path.is_file():
        raise ManifestError(f"{where}: photo {text!r} is not a regular file ({path})")
    if not path.is_file():
        raise ManifestError(f"{where}: photo file {text!r} not found (looked at {path})")
    return path.resolve()


def _traveler(
    traveler_id: object, photos: object, document_type: object, base: Path, root: Path, where: str
) -> ManifestTraveler:
    tid = _traveler_id(traveler_id, where)
    if photos is not None and not isinstance(photos, list):
        raise ManifestError(f"{where}: traveler {tid}: photos must be a list of paths, got {photos!r}")
    if not photos:
        raise ManifestError(f"{where}: traveler {tid} needs at least one photo")
    if len(photos) > MAX_PHOTOS:
        raise ManifestError(f"{where}: traveler {tid} has {len(photos)} photos; at most {MAX_PHOTOS}")
    paths = tuple(_photo(p, base, root, f"{where} photo {i + 1}") for i, p in enumerate(photos))
    if len(set(paths)) != len(paths):
        raise ManifestError(f"{where}: traveler {tid} lists the same photo twice")
    if document_type is not None and (not isinstance(document_type, str) or len(document_type) > 32):
        raise ManifestError(f"{where}: document_type must be a short text, got {document_type!r}")
    return ManifestTraveler(tid, paths, (document_type or "").strip() or None)


def _unique(travelers: list[tuple[ManifestTraveler, str]], source: Path) -> tuple[ManifestTraveler, ...]:
    """One entry per traveler, and no photo under two travelers: either is an identity mix-up upstream."""
    first: dict[str, str] = {}
    owner: dict[Path, str] = {}
    for traveler, where in travelers:
        if traveler.traveler_id in first:
            raise ManifestError(
                f"{where}: duplicate traveler_id {traveler.traveler_id} (first at {first[traveler.traveler_id]})"
            )
        first[traveler.traveler_id] = where
        for photo in traveler.photos:
            if photo in owner:
                raise ManifestError(
                    f"{where}: photo {photo.name} of traveler {traveler.traveler_id} is also listed for "
                    f"traveler {owner[photo]}"
                )
            owner[photo] = traveler.traveler_id
    if not travelers:
        raise ManifestError(f"manifest {source}: no travelers")
    return tuple(t for t, _ in travelers)


def _from_csv(text: str, path: Path, root: Path) -> Manifest:
    reader = csv.DictReader(text.splitlines(), strict=True)
    columns = [c.strip() for c in reader.fieldnames or []]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    unknown = [c for c in columns if c not in CSV_COLUMNS]
    if missing or unknown:
        raise ManifestError(
            f"manifest {path} line 1: header must be {','.join(CSV_COLUMNS)} (document_type and direction "
            "optional); "
            f"missing {missing or 'nothing'}, unknown {unknown or 'nothing'}"
        )
    reader.fieldnames = columns
    flight: str | None = None
    departure: datetime | None = None
    direction = DEPARTURE
    travelers = []
    try:
        for row in reader:
            where = f"manifest {path.name} line {reader.line_num}"
            if None in row or any(row[c] is None for c in REQUIRED_COLUMNS):
                raise ManifestError(f"{where}: expected {len(columns)} fields")
            row_flight = _flight_id(row["flight_id"], where)
            row_departure = parse_departure(row["departure"], where)
            row_direction = parse_direction(row.get("direction"), where)
            if flight is None:
                flight, departure, direction = row_flight, row_departure, row_direction
            elif (row_flight, row_departure, row_direction) != (flight, departure, direction):
                raise ManifestError(
                    f"{where}: every row must have the same flight_id and departure (and direction)"
                )
            photos = [p for p in row["photos"].split(";") if p.strip()]
            traveler = _traveler(
                row["traveler_id"], photos, row.get("document_type"), path.parent, root, where
            )
            travelers.append((traveler, where))
    except csv.Error as exc:
        raise ManifestError(f"manifest {path.name} line {reader.line_num}: malformed CSV ({exc})") from None
    if flight is None or departure is None:
        raise ManifestError(f"manifest {path}: no travelers")
    return Manifest(flight, departure, _unique(travelers, path), path, root, direction)


class _DuplicateKeyError(ValueError):
    pass


def _object_without_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """json's default keeps the last of repeated keys: a second "travelers" would silently drop travelers."""
    data: dict[str, object] = {}
    for key, value in pairs:
        if key in data:
            raise _DuplicateKeyError(key)
        data[key] = value
    return data


def _from_json(text: str, path: Path, root: Path) -> Manifest:
    try:
        data = json.loads(text, object_pairs_hook=_object_without_duplicates)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"manifest {path.name} line {exc.lineno}: not valid JSON ({exc.msg})") from None
    except _DuplicateKeyError as exc:
        raise ManifestError(f"manifest {path.name}: duplicate key '{exc.args[0]}' in one object") from None
    if not isinstance(data, dict):
        raise ManifestError(f"manifest {path.name}: top level must be an object")
    unknown = sorted(set(data) - {"flight_id", "departure", "direction", "travelers"})
    if unknown:
        raise ManifestError(f"manifest {path.name}: unknown field(s) {unknown}")
    flight = _flight_id(data.get("flight_id"), f"manifest {path.name} flight_id")
    departure = parse_departure(data.get("departure"), f"manifest {path.name} departure")
    direction = parse_direction(data.get("direction"), f"manifest {path.name} direction")
    entries = data.get("travelers")
    if not isinstance(entries, list):
        raise ManifestError(f"manifest {path.name}: 'travelers' must be a list")
    travelers = []
    for i, entry in enumerate(entries):
        where = f"manifest {path.name} travelers[{i}]"
        if not isinstance(entry, dict):
            raise ManifestError(f"{where}: must be an object")
        extra = sorted(set(entry) - {"traveler_id", "photos", "document_type"})
        if extra:
            raise ManifestError(f"{where}: unknown field(s) {extra}")
        travelers.append(
            (
                _traveler(
                    entry.get("traveler_id"),
                    entry.get("photos"),
                    entry.get("document_type"),
                    path.parent,
                    root,
                    where,
                ),
                where,
            )
        )
    return Manifest(flight, departure, _unique(travelers, path), path, root, direction)
