"""Where `bench accuracy` embeds and what survives a crash: `--engine ray` gives the templates and the report of
`--engine local`, and a run killed with SIGKILL part-way resumes by embedding only what it had not stored.

Both run `gatematch` as a separate process, as an operator would (Ray starts its own processes; a SIGKILL
must hit a real process)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from gatematch.benchmarks.dataset import scan_dataset
from gatematch.benchmarks.embedding_store import EmbeddingStore
from gatematch.cli.main import main
from support.cli import run_gatematch
from support.data import REPO, missing, need

GALLERY, DEPARTURES = 3, 4
DIM = 128  # the default pack's MobileFaceNet


def options(cache: Path, out: Path, model_dir: Path, *extra: str) -> list[str]:
    argv = ["--gallery-size", str(GALLERY), "--departures", str(DEPARTURES), "--seed", "3"]
    return [*argv, "--cache", str(cache), "--out", str(out), "--model-dir", str(model_dir), "--quiet", *extra]


def figures(report: dict) -> dict:
    """A pack's report less what depends on how and when it was embedded."""
    pack = dict(report["packs"]["default"])
    del pack["embedding"], pack["embedding_s"]
    return pack


def store_of(cache: Path) -> EmbeddingStore:
    (folder,) = cache.iterdir()
    return EmbeddingStore(folder, DIM)


@pytest.fixture(scope="module")
def celeb5(faces_dir: Path) -> Path:
    return need(faces_dir / "celeb5", "celeb5 photos")


@pytest.fixture(scope="module")
def local_run(celeb5: Path, model_dir: Path, tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("local")
    assert main(["bench", "accuracy", str(celeb5), *options(base / "cache", base / "out", model_dir)]) == 0
    return {"cache": base / "cache", "report": json.loads((base / "out" / "report.json").read_text())}


def test_the_ray_engine_gives_the_local_templates_and_report(celeb5, local_run, model_dir, tmp_path):
    if importlib.util.find_spec("ray") is None:
        message = "Ray is not installed (pip install -e '.[ray]'; make test installs it)"
        missing(message)
    cache, out = tmp_path / "cache", tmp_path / "out"
    done = run_gatematch(
        "bench", "accuracy", str(celeb5), *options(cache, out, model_dir, "--engine", "ray"), timeout=600
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "report.json").read_text())
    embedding = report["packs"]["default"]["embedding"]
    assert embedding["engine"] == "ray" and embedding["new_images"] == len(scan_dataset(celeb5).samples)
    assert figures(report) == figures(local_run["report"])
    digests = [s.sha256 for s in scan_dataset(celeb5).samples]
    ray_rows, local_rows = store_of(cache).rows(digests), store_of(local_run["cache"]).rows(digests)
    assert np.array_equal(ray_rows.acquired, local_rows.acquired) and ray_rows.acquired.sum() > 80
    assert np.array_equal(ray_rows.quality_passed, local_rows.quality_passed)
    everyone = np.arange(len(digests))
    cosine = np.einsum("ij,ij->i", ray_rows.templates[everyone], local_rows.templates[everyone])
    assert cosine[local_rows.acquired].min() >= 0.9999


def chunk_count(cache: Path) -> int:
    return sum(1 for _ in cache.glob("*/chunk-*.npy"))


def test_a_killed_run_resumes_embedding_only_what_it_had_not_stored(celeb5, local_run, model_dir, tmp_path):
    cache, out = tmp_path / "cache", tmp_path / "out"
    argv = options(cache, out, model_dir, "--chunk-size", "4")
    child = subprocess.Popen(
        [sys.executable, "-m", "gatematch.cli", "bench", "accuracy", str(celeb5), *argv],
        cwd=REPO,
        env=os.environ.copy(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while chunk_count(cache) < 3:
            assert child.poll() is None, f"the run ended before it could be killed: {child.stderr.read()}"
            assert time.monotonic() < deadline, "no chunk written within 2 minutes"
            time.sleep(0.02)
        child.send_signal(signal.SIGKILL)
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    stored_before = len(store_of(cache).digests())
    total = len({s.sha256 for s in scan_dataset(celeb5).samples})
    assert 12 <= stored_before < total  # at least the three chunks of 4 seen, not the whole set
    assert main(["bench", "accuracy", str(celeb5), *argv]) == 0
    report = json.loads((out / "report.json").read_text())
    embedding = report["packs"]["default"]["embedding"]
    assert embedding["new_images"] == total - stored_before and embedding["stored_images"] == stored_before
    assert len(store_of(cache).digests()) == total
    assert not [p for p in cache.rglob("*") if ".tmp-" in p.name]  # a chunk being written at the kill is gone
    assert figures(report) == figures(local_run["report"])


def test_the_ray_engine_without_ray_installed_is_a_one_line_error(
    celeb5, model_dir, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as it does without the extra
    argv = options(tmp_path / "cache", tmp_path / "out", model_dir, "--engine", "ray")
    assert main(["bench", "accuracy", str(celeb5), *argv]) == 2
    assert "pip install 'gatematch[ray]'" in capsys.readouterr().err
    assert (
        main(
            [
                "bench",
                "accuracy",
                str(celeb5),
                *options(tmp_path / "c", tmp_path / "o", model_dir, "--ray-actors", "2"),
            ]
        )
        == 2
    )
    assert "--ray-actors is an option of --engine ray" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()
