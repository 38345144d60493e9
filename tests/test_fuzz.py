"""The CI fuzz run: every target of tests/fuzz/fuzz_inputs.py for 10,000 inputs (fixed seed), without a finding.

libFuzzer ends with a non-zero status and a crash file on the first finding; a longer run is in README.md.
"""

from __future__ import annotations

import os
import re
import signal
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


# A process's peak RSS (what libFuzzer's -rss_limit_mb reads) survives execve (getrusage(2)), and Python's
# subprocess starts a child with vfork, whose exec replaces the parent's own memory image: a harness started
# by the test process would begin at that process's peak, about 1.5 GB late in the suite, and libFuzzer's
# once-a-second check then stopped the run on an innocent (empty) input. A small Python starts the harness
# instead, in a session of its own so that a timeout ends both.
LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def run_harness(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", LAUNCHER, sys.executable, str(HARNESS), *args]
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=cwd, start_new_session=True
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


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
    ballast = np.ones(800 * 2**20 // 8)  # 800 MB of this process's memory, every page touched
    done = run_harness("images", "-runs=10", "-seed=1", cwd=tmp_path)
    del ballast
    inited = re.search(r"INITED .*rss: (\d+)Mb", done.stderr)
    assert done.returncode == 0 and inited, done.stderr[-2000:]
    assert int(inited.group(1)) < 600, f"the harness starts at {inited.group(1)} MB: the test runner's peak"
