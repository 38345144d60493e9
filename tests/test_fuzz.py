"""The CI fuzz run: every target of tests/fuzz/fuzz_inputs.py for 10,000 inputs (fixed seed), without a finding.

libFuzzer ends with a non-zero status and a crash file on the first finding; a longer run is in README.md.
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from gatematch.errors import GatematchError
from gatematch.service.converters import load_header
from gatematch.v1 import gallery_pb2
from support.data import REPO, missing

HARNESS = REPO / "tests" / "fuzz" / "fuzz_inputs.py"
RUNS = 10_000


# Linux keeps a process's peak RSS across execve (getrusage(2)) and a forked child starts with its parent's
# pages, so a harness started by the test process inherits that process's peak: late in the suite about
# 1.5 GB, and libFuzzer's once-a-second RSS check then stopped the run on an innocent (empty) input. A small
# Python forks the harness instead: its peak is its own.
LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def run_harness(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", LAUNCHER, sys.executable, str(HARNESS), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=cwd)


@pytest.fixture(scope="module", autouse=True)
def atheris_installed() -> None:
    try:
        import atheris  # noqa: F401
    except ImportError:
        message = "atheris is not installed (pip install -e '.[dev]' on x86_64 Linux)"
        missing(message)


@pytest.mark.parametrize(
    "target",
    [
        "images",
        "raw",
        "frame",
        "request",
        "gallery",
    ],
)
def test_fuzz_target_runs_10000_inputs_without_a_finding(target, tmp_path):
    done = run_harness(
        target,
        f"-runs={RUNS}",
        "-seed=1",
        "-timeout=20",
        "-rss_limit_mb=1024",  # the harness runs in about 160 MB: a memory bomb is a finding
        cwd=tmp_path,  # where libFuzzer writes a crash file
    )
    finding = next((line for line in done.stderr.splitlines() if "Uncaught Python exception" in line), "")
    assert done.returncode == 0, f"{finding}\n{done.stderr[-3000:]}"
    runs = re.search(r"Done (\d+) runs", done.stderr)
    assert runs and int(runs.group(1)) >= RUNS, done.stderr[-2000:]


@pytest.mark.parametrize(
    "field, seconds, nanos",
    [("departure_utc", 2**62, 0), ("departure_utc", 1_900_000_000, -5), ("retention", 2**62, 0)],
)
def test_a_gallery_header_with_an_impossible_time_is_a_typed_error(field, seconds, nanos):
    """Found by the gallery target: what the Load servicer turns into INVALID_ARGUMENT must be a GatematchError."""
    header = gallery_pb2.GalleryHeader(flight_id="GM101")
    header.departure_utc.FromDatetime(datetime(2030, 5, 1, tzinfo=UTC))
    getattr(header, field).seconds = seconds
    getattr(header, field).nanos = nanos
    with pytest.raises(GatematchError):
        load_header(header)


def test_the_harness_counts_its_own_memory_not_the_test_runners(tmp_path):
    """Late in the suite the test process holds over a gigabyte; the harness's memory checks (libFuzzer's RSS
    limit, the harness's per-input peak) must see the harness's memory alone."""
    ballast = np.ones(1200 * 2**20 // 8)  # 1.2 GB of this process's memory, every page touched
    done = run_harness("images", "-runs=10", "-seed=1", cwd=tmp_path)
    del ballast
    inited = re.search(r"INITED .*rss: (\d+)Mb", done.stderr)
    assert done.returncode == 0 and inited, done.stderr[-2000:]
    assert int(inited.group(1)) < 600, f"the harness starts at {inited.group(1)} MB: the test runner's peak"
