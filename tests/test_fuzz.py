"""The CI fuzz run: every target of tests/fuzz/fuzz_inputs.py for 10,000 inputs (fixed seed), without a finding.

libFuzzer ends with a non-zero status and a crash file on the first finding; a longer run is in README.md.
"""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import UTC, datetime

import pytest

from gatematch.errors import GatematchError
from gatematch.service.converters import load_header
from gatematch.v1 import gallery_pb2
from support.data import REPO, missing

HARNESS = REPO / "tests" / "fuzz" / "fuzz_inputs.py"
RUNS = 10_000


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
    done = subprocess.run(
        [
            sys.executable,
            str(HARNESS),
            target,
            f"-runs={RUNS}",
            "-seed=1",
            "-timeout=20",
            "-rss_limit_mb=1024",  # the harness runs in about 160 MB: a memory bomb is a finding
        ],
        capture_output=True,
        text=True,
        timeout=300,
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
