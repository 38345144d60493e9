"""Reading the project's TOML files (model cards, packs, service config, authorization policy).

Every one of them is operator-edited, so an unreadable or malformed file must end in that file's own typed
error naming the file, never a tomllib traceback.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from gatematch.errors import GatematchError


def read_toml(path: Path, error: type[GatematchError], what: str) -> dict[str, Any]:
    """The parsed document, or `error` saying which `what` (e.g. "config") could not be read or parsed."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{what} {path}: not valid TOML ({exc})") from None
