"""Model store: where model files live, how they are installed, and proof that they are the pinned files.

Border systems are usually air-gapped, so installing from a local folder (`fetch --from DIR`) is the normal
path and downloading is the exception. A file is only ever used after its sha256 matched the card.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from gatematch.atomicfile import write_atomic
from gatematch.cards import ModelCard
from gatematch.errors import ModelError

ENV_MODEL_DIR = "GATEMATCH_MODEL_DIR"


def user_cache_dir() -> Path:
    """gatematch's per-user cache: $XDG_CACHE_HOME/gatematch, else ~/.cache/gatematch."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gatematch"


def default_model_dir() -> Path:
    """$GATEMATCH_MODEL_DIR, else the per-user cache ($XDG_CACHE_HOME or ~/.cache)/gatematch/models."""
    if os.environ.get(ENV_MODEL_DIR):
        return Path(os.environ[ENV_MODEL_DIR]).expanduser()
    return user_cache_dir() / "models"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class ModelStatus:
    card: ModelCard
    path: Path
    present: bool
    verified: bool
    problem: str = ""


class ModelStore:
    """A flat folder of model files named as their cards say."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else default_model_dir()
        self._verified: dict[Path, tuple[int, int]] = {}

    def path(self, card: ModelCard) -> Path:
        return self.root / card.file

    def status(self, card: ModelCard) -> ModelStatus:
        path = self.path(card)
        if not path.is_file():
            return ModelStatus(card, path, False, False, "not installed")
        actual = sha256_of(path)
        if actual != card.sha256:
            return ModelStatus(
                card, path, True, False, f"sha256 mismatch: expected {card.sha256}, got {actual}"
            )
        return ModelStatus(card, path, True, True)

    def verified_path(self, card: ModelCard) -> Path:
        """The model's path, after checking its hash (rechecked only when the file changes)."""
        path = self.path(card)
        try:
            stat = path.stat()
        except OSError:
            raise ModelError(
                f"model '{card.name}' is not installed at {path}; run `gatematch models fetch --from DIR`"
            ) from None
        stamp = (stat.st_size, stat.st_mtime_ns)
        if self._verified.get(path) != stamp:
            status = self.status(card)
            if not status.verified:
                raise ModelError(f"model '{card.name}' at {path}: {status.problem}")
            self._verified[path] = stamp
        return path

    def _install(self, card: ModelCard, source: Path) -> None:
        """Copy a verified file in atomically: a reader never sees a partial model."""

        def copy_verified(out: BinaryIO) -> None:
            digest = hashlib.sha256()
            with source.open("rb") as src:
                while block := src.read(1 << 20):
                    digest.update(block)
                    out.write(block)
            if digest.hexdigest() != card.sha256:
                raise ModelError(f"model '{card.name}': copy from {source} changed while being read")

        try:
            self.root.mkdir(parents=True, exist_ok=True)
            write_atomic(self.path(card), copy_verified, mode=0o644)
        except OSError as exc:
            raise ModelError(
                f"model '{card.name}': cannot install into {self.root}: {exc.strerror or exc}"
            ) from None

    def install(self, card: ModelCard, source: Path) -> None:
        """Install one file made elsewhere (gatematch.quantize), refusing any hash mismatch."""
        actual = sha256_of(source)
        if actual != card.sha256:
            raise ModelError(
                f"model '{card.name}': {source} has sha256 {actual}, the card pins {card.sha256}"
            )
        self._install(card, source)

    def fetch_from_dir(self, source_dir: Path, cards: Iterable[ModelCard]) -> list[str]:
        """Install each card's file from `source_dir` (searched recursively); refuse any hash mismatch. Models
        made here (`derived` cards) are left to `gatematch models quantize`."""
        source_dir = Path(source_dir)
        if not source_dir.is_dir():
            raise ModelError(f"model source folder {source_dir} does not exist")
        by_name: dict[str, list[Path]] = {}
        for path in source_dir.rglob("*.onnx"):
            by_name.setdefault(path.name, []).append(path)
        installed = []
        for card in cards:
            if card.derived or self.status(card).verified:
                continue
            candidates = by_name.get(card.file, [])
            if not candidates:
                raise ModelError(f"model '{card.name}': {card.file} not found under {source_dir}")
            matching = [p for p in candidates if sha256_of(p) == card.sha256]
            if not matching:
                raise ModelError(
                    f"model '{card.name}': {candidates[0]} has sha256 {sha256_of(candidates[0])}, "
                    f"but the card pins {card.sha256}; refusing to install it"
                )
            self._install(card, matching[0])
            installed.append(card.name)
        return installed

    def download(self, cards: Iterable[ModelCard], timeout: float = 60.0) -> list[str]:
        """Download each missing card's file from its upstream address; refuse any hash mismatch."""
        installed = []
        for card in cards:
            if card.derived or self.status(card).verified:
                continue
            if not card.url:
                raise ModelError(
                    f"model '{card.name}' has no direct download address ({card.upstream}); "
                    "install it with `gatematch models fetch --from DIR`"
                )
            with tempfile.TemporaryDirectory() as tmp:
                target = Path(tmp) / card.file
                try:
                    with (
                        urllib.request.urlopen(card.url, timeout=timeout) as response,
                        target.open("wb") as out,
                    ):
                        shutil.copyfileobj(response, out)
                except OSError as exc:
                    raise ModelError(f"model '{card.name}': download from {card.url} failed: {exc}") from None
                actual = sha256_of(target)
                if actual != card.sha256:
                    raise ModelError(
                        f"model '{card.name}': downloaded file has sha256 {actual}, but the card pins "
                        f"{card.sha256}; refusing to install it"
                    )
                self._install(card, target)
            installed.append(card.name)
        return installed
