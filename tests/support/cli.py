"""Running `gatematch` as an operator would: a separate process, its exit code and its two output streams."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support.data import REPO


def run_gatematch(
    *args: str, model_dir: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"GATEMATCH_MODEL_DIR": str(model_dir)} if model_dir else {})}
    return subprocess.run(
        [sys.executable, "-m", "gatematch.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        cwd=REPO,
    )
