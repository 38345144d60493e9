"""Labelled photo sets laid out as ROOT/<identity>/<image>, with a fingerprint that pins exactly what was measured."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from gatematch.errors import DatasetError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".pgm"}


@dataclass(frozen=True)
class Sample:
    identity: str
    path: Path
    sha256: str


@dataclass(frozen=True)
class Dataset:
    root: Path
    samples: tuple[Sample, ...]

    @property
    def identities(self) -> list[str]:
        return sorted({s.identity for s in self.samples})

    @property
    def fingerprint(self) -> str:
        """sha256 over (identity, relative path, file hash) of every sample: same photos, same labels."""
        digest = hashlib.sha256()
        for sample in self.samples:
            rel = sample.path.relative_to(self.root).as_posix()
            digest.update(f"{sample.identity}\0{rel}\0{sample.sha256}\n".encode())
        return digest.hexdigest()


def scan_dataset(root: Path) -> Dataset:
    """Every image under ROOT/<identity>/, sorted by identity then file name (deterministic for seeds)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data set folder {root} does not exist")
    samples = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.iterdir()):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                samples.append(Sample(folder.name, path, hashlib.sha256(path.read_bytes()).hexdigest()))
    if not samples:
        raise DatasetError(f"data set folder {root} holds no images in ROOT/<identity>/<image> layout")
    return Dataset(root, tuple(samples))
