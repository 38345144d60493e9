"""Shared fixtures: the real models, photos and videos from ../shared (helpers live in the `support` package).

Tests that need ../shared skip with a message when it is missing, except under CI=true, where a missing
../shared is a failure: a silent skip in CI would hide breakage.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gatematch.cards import get_pack, load_cards
from gatematch.facepipeline import FacePipeline
from gatematch.liveness import LivenessChecker
from gatematch.modelstore import ModelStore
from gatematch.runtime import RuntimeConfig, create_session
from support.data import SHARED, need
from support.postgres import PostgresCluster, need_cluster, start_cluster


@pytest.fixture(scope="session", autouse=True)
def private_data_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every default location (key file, audit trail, embedded store) under a temporary folder, never the
    developer's own ~/.local/share/gatematch; no template key or config from the environment (tests that
    want one set it)."""
    patch = pytest.MonkeyPatch()
    home = tmp_path_factory.mktemp("data-home")
    patch.setenv("XDG_DATA_HOME", str(home))
    for name in ("GATEMATCH_TEMPLATE_KEY", "GATEMATCH_CONFIG"):
        patch.delenv(name, raising=False)
    yield home
    patch.undo()


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


@pytest.fixture(scope="session")
def liveness_checker(model_store: ModelStore) -> LivenessChecker:
    """The default pack's two MiniFASNet models, as the service combines them."""
    return LivenessChecker(
        [
            (card, create_session(card, model_store.verified_path(card), RuntimeConfig()))
            for card in get_pack("default").liveness
        ]
    )


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PostgresCluster | str]:
    """One throwaway PostgreSQL cluster for the session (or why there is none), started on first use."""
    cluster = start_cluster()
    yield cluster
    if isinstance(cluster, PostgresCluster):
        cluster.destroy()


@pytest.fixture
def postgres(postgres_cluster: PostgresCluster | str) -> PostgresCluster:
    """The running cluster; skips (fails under CI=true) when PostgreSQL is not installed."""
    return need_cluster(postgres_cluster)


@pytest.fixture(params=["sqlite", "postgres"])
def store_location(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a fresh, empty gallery store lives, once per backend: a folder, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "store")
    return need_cluster(request.getfixturevalue("postgres_cluster")).database()
