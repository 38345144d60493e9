"""The one way gatematch replaces a file: written aside, fsynced, renamed over, directory fsynced.

A reader (or a crash) then sees either the old file or all of the new one, never a part. Temporary files are
named `<name>.tmp-<random>` beside their target, so the gallery store can recognise (and shred) its own leftovers.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TMP_MARK = ".tmp-"


def fsync_dir(directory: Path) -> None:
    """Make a rename or unlink inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, content: bytes | Callable[[BinaryIO], None], *, mode: int = 0o600) -> None:
    """Replace `path` with `content` (bytes, or a function writing into the open file) atomically.

    If writing raises, the target is untouched and the temporary file is removed. `mode` applies to the new file
    (0600 by default: most of what gatematch writes is sensitive).
    """
    path = Path(path)
    handle, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}{TMP_MARK}")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            if isinstance(content, bytes | bytearray | memoryview):
                out.write(content)
            else:
                content(out)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
