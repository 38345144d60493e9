"""Where the real models, photos and videos are, and what to do when they are missing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NoReturn

import pytest

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("GATEMATCH_SHARED", REPO.parent / "shared"))


def under_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def missing(message: str) -> NoReturn:
    """Skip the test saying what it lacks; under CI=true fail instead: a silent skip in CI hides breakage."""
    if under_ci():
        pytest.fail(f"CI=true: {message}")
    pytest.skip(message)


def need(path: Path, what: str) -> Path:
    """`path` if it exists; otherwise skip (or fail under CI=true) naming what is missing."""
    if path.exists():
        return path
    missing(f"{what} not found at {path} (set GATEMATCH_SHARED to the shared data folder)")


def need_root(why: str) -> None:
    """Skip (or fail under CI=true, which runs as root) unless this process is root: `why` says what for."""
    if os.geteuid() != 0:
        missing(f"root is needed {why}")
