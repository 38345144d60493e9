"""Shared fixtures: the real models, photos and videos from ../shared (helpers live in the `support` package).

Tests that need ../shared skip with a message when it is missing, except under CI=true, where a missing
../shared is a failure: a silent skip in CI would hide breakage.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from gatematch.cards import load_cards
from gatematch.facepipeline import FacePipeline
from gatematch.modelstore import ModelStore
from support.data import SHARED, need


@pytest.fixture(scope="session")
def shared() -> Path:
    return need(SHARED, "../shared")


@pytest.fixture(scope="session")
def faces_dir(shared: Path) -> Path:
    return need(shared / "faces", "../shared/faces")


@pytest.fixture(scope="session")
def examples(faces_dir: Path) -> Path:
    """examples6: six public figures, the demo gallery that matches the videos."""
    return need(faces_dir / "examples6", "examples6 photos")


@pytest.fixture(scope="session")
def video_dir(shared: Path) -> Path:
    return need(shared / "video", "../shared/video")


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


@pytest.fixture(scope="session")
def pipeline(model_store: ModelStore) -> FacePipeline:
    """The default pack with default settings (all cores), shared by the tests that only read from it."""
    return FacePipeline.from_pack("default", store=model_store)
