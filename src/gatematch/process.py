"""Process-wide settings, made once where a process starts (CLI, server, benchmark), never on import.

Importing a gatematch module changes no global state; the entry points call `configure_process()` first (the
server `configure_server_process()`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import cv2
import faiss

# One probe is searched by one thread. faiss would fan a single query out over all cores with OpenMP; measured
# on the 2-core box that is 3-20x slower at p50 (thread wake-ups, and it competes with the onnxruntime sessions),
# while concurrent gates already keep the cores busy.
SEARCH_THREADS = 1
# In the server, OpenCV's image work (resize, warps, colour conversion) runs in the calling thread: its own pool
# would split each frame over the cores the inference workers already fill, and its threads wait actively. On
# the 2-core box, 4 cameras at 5 fps, that pool cost 0.7-0.8 ms of CPU per frame; the server spent 11.03-11.42
# ms per frame without it against 12.05-12.33 with it (three pairs back to back); same pixels either way. Batch
# commands keep the pool: embedding 95 photos took 2.6-2.7 s with it against 3.0-3.3 s without.
SERVER_IMAGE_THREADS = 1


def configure_process() -> None:
    """The settings every gatematch process runs with (idempotent)."""
    faiss.omp_set_num_threads(SEARCH_THREADS)


def configure_server_process() -> None:
    """`configure_process`, and one thread per image operation: the server's workers fill the cores."""
    configure_process()
    cv2.setNumThreads(SERVER_IMAGE_THREADS)


@contextlib.contextmanager
def faiss_threads(threads: int | None = None) -> Iterator[None]:
    """Let faiss use `threads` (default: every core) inside the block, e.g. for an offline index build."""
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(threads or os.cpu_count() or 1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)
