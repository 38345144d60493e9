"""Process-wide settings, made once where a process starts (CLI, server, benchmark), never on import.

Importing a gatematch module changes no global state; the entry points call `configure_process()` first.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import faiss

# One probe is searched by one thread. faiss would fan a single query out over all cores with OpenMP; measured
# on the 2-core box that is 3-20x slower at p50 (thread wake-ups, and it competes with the onnxruntime sessions),
# while concurrent gates already keep the cores busy.
SEARCH_THREADS = 1


def configure_process() -> None:
    """The settings every gatematch process runs with (idempotent)."""
    faiss.omp_set_num_threads(SEARCH_THREADS)


@contextlib.contextmanager
def faiss_threads(threads: int | None = None) -> Iterator[None]:
    """Let faiss use `threads` (default: every core) inside the block, e.g. for an offline index build."""
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads or os.cpu_count() or 1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)
