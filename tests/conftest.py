"""Shared fixtures: the real models and photos from ../shared.

Tests that need ../shared skip with a message when it is missing, except under CI=true, where a missing
../shared is a failure: a silent skip in CI would hide breakage.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gatematch.cards import load_cards
from gatematch.modelstore import ModelStore

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("GATEMATCH_SHARED", REPO.parent / "shared"))


def need(path: Path, what: str) -> Path:
    """`path` if it exists; otherwise skip (or fail under CI=true) naming what is missing."""
    if path.exists():
        return path
    message = f"{what} not found at {path} (set GATEMATCH_SHARED to the shared data folder)"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true: {message}")
    pytest.skip(message)


@pytest.fixture(scope="session")
def shared() -> Path:
    return need(SHARED, "../shared")


@pytest.fixture(scope="session")
def faces_dir(shared: Path) -> Path:
    return need(shared / "faces", "../shared/faces")


@pytest.fixture(scope="session")
def model_dir(shared: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store filled from ../shared/models through the real fetch path, once per test session."""
    source = need(shared / "models", "../shared/models")
    root = tmp_path_factory.mktemp("models")
    ModelStore(root).fetch_from_dir(source, load_cards().values())
    return root


@pytest.fixture(scope="session")
def model_store(model_dir: Path) -> ModelStore:
    return ModelStore(model_dir)
