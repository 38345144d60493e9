"""Template keys in a key file: several keys with ids, the newest seals, every one held opens.

The file is JSON, readable by its owner only (0600; a file others can read is refused, see `_exposure` for the
one group it may be readable by), replaced atomically:
    {"format": "gatematch-template-keys/1",
     "keys": [{"id": "3f2a9c0e1b7d4a55", "created": "2030-05-01T18:30:00Z", "key": "<base64 of 32 bytes>"}]}
`gatematch keys create` adds a key (the newest seals from then on), `gatematch keys rotate` re-encrypts every
gallery under it, `gatematch keys retire ID` drops a key no gallery uses any more. A running service re-reads
the file when it changed (a stat per gallery write, and when it meets a key id it does not hold), so keys can be
added and galleries resealed while it serves.

Where keys come from (`template_keys`): GATEMATCH_TEMPLATE_KEY when set (one key, an override for containers
that inject secrets through the environment), else the key file. The embedded store creates its key file on
first use; a PostgreSQL store never does (every replica must hold the same keys: copy one file to all).
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import stat
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from gatematch.atomicfile import write_atomic
from gatematch.errors import MissingKeyError, TemplateKeyError
from gatematch.gallery import iso
from gatematch.gallery_store import is_database_url, open_store
from gatematch.template_crypto import ENV_TEMPLATE_KEY, KeyProvider, Keyring, TemplateKey, generate_key

LOG = logging.getLogger(__name__)
FORMAT = "gatematch-template-keys/1"


@dataclass(frozen=True)
class KeyEntry:
    key: TemplateKey
    created: str

    @property
    def key_id(self) -> str:
        return self.key.key_id


def _parse(path: Path, data: bytes) -> list[KeyEntry]:
    """The entries of a key file; TemplateKeyError naming the file and what is wrong."""
    try:
        document = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise TemplateKeyError(f"key file {path} is not valid JSON") from None
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise TemplateKeyError(f"key file {path} is not a gatematch key file (format {FORMAT!r})")
    items = document.get("keys")
    if not isinstance(items, list) or not items:
        raise TemplateKeyError(f"key file {path} holds no keys")
    entries = []
    for n, item in enumerate(items, 1):
        if not isinstance(item, dict) or not all(
            isinstance(item.get(f), str) for f in ("id", "created", "key")
        ):
            raise TemplateKeyError(f"key file {path}: key {n} needs text fields id, created and key")
        key = TemplateKey.from_base64(item["key"], f"key file {path}: key {n}")
        if key.key_id != item["id"]:
            raise TemplateKeyError(f"key file {path}: key {n} is not the key its id {item['id']} names")
        entries.append(KeyEntry(key, item["created"]))
    if len({e.key_id for e in entries}) != len(entries):
        raise TemplateKeyError(f"key file {path} holds the same key twice")
    return entries


class KeyFile:
    """A KeyProvider over a key file, re-read when the file changes."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._entries: list[KeyEntry] = []
        self._ring: Keyring | None = None
        self.refresh()

    @classmethod
    def create(cls, path: Path | str) -> KeyFile:
        """A new key file with one new key; refuses to replace an existing file."""
        path = Path(path)
        if path.exists():
            raise TemplateKeyError(f"key file {path} exists; `gatematch keys create` adds a key to it")
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write(path, [KeyEntry(TemplateKey.from_base64(generate_key()), iso(datetime.now(UTC)))])
        return cls(path)

    def refresh(self) -> bool:
        """Re-read the file if it changed since it was last read; True when it did."""
        try:
            info = self.path.stat()
        except OSError as exc:
            raise TemplateKeyError(f"key file {self.path} cannot be read: {exc.strerror or exc}") from None
        stamp = (info.st_ino, info.st_mtime_ns, info.st_size)
        with self._lock:
            if stamp == self._stamp:
                return False
        exposure = _exposure(self.path, info)
        if exposure:
            raise TemplateKeyError(exposure)
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise TemplateKeyError(f"key file {self.path} cannot be read: {exc.strerror or exc}") from None
        entries = _parse(self.path, data)
        with self._lock:
            self._stamp, self._entries, self._ring = stamp, entries, Keyring(e.key for e in entries)
        return True

    @property
    def entries(self) -> list[KeyEntry]:
        """The keys, oldest first (the last one seals)."""
        with self._lock:
            return list(self._entries)

    def _keyring(self) -> Keyring:
        with self._lock:
            if self._ring is None:  # never: __init__ reads the file (refresh) or raises
                raise TemplateKeyError(f"key file {self.path} has not been read")
            return self._ring

    # -- KeyProvider -------------------------------------------------------------------------------------

    def current(self) -> TemplateKey:
        self.refresh()  # a key added by `gatematch keys create` seals the next write
        return self._keyring().current()

    def get(self, key_id: str) -> TemplateKey:
        if not self._keyring().has(key_id):
            self.refresh()
        try:
            return self._keyring().get(key_id)
        except MissingKeyError:
            raise MissingKeyError(key_id, f"key {key_id} is not in the key file {self.path.name}") from None

    def has(self, key_id: str) -> bool:
        if not self._keyring().has(key_id):
            with contextlib.suppress(TemplateKeyError):  # a file being fixed: ask again later
                self.refresh()
        return self._keyring().has(key_id)

    # -- changes (the `gatematch keys` commands) -----------------------------------------------------------

    def add(self) -> TemplateKey:
        """A new key, the newest from now on (it seals every write after this)."""
        self.refresh()
        entry = KeyEntry(TemplateKey.from_base64(generate_key()), iso(datetime.now(UTC)))
        _write(self.path, [*self.entries, entry])
        self.refresh()
        return entry.key

    def retire(self, key_id: str) -> None:
        """Drop a key (the caller made sure nothing is sealed under it any more); never the newest."""
        self.refresh()
        entries = self.entries
        if key_id not in {e.key_id for e in entries}:
            raise MissingKeyError(key_id, f"key {key_id} is not in the key file {self.path}")
        if entries[-1].key_id == key_id:
            raise TemplateKeyError(
                f"key {key_id} is the newest key (it seals new galleries); add another first"
            )
        _write(self.path, [e for e in entries if e.key_id != key_id])
        self.refresh()


def _exposure(path: Path, info: os.stat_result) -> str | None:
    """How a key file's mode lets anyone but this process read it (or change it), or None when it does not.

    Owner-only (0600, 0400) is what `gatematch keys create` writes. Group read is accepted only for a file
    root owns whose group is the process's own (effective) group, because that is all a Kubernetes Secret
    volume can give a non-root container: the kubelet makes the files root-owned with group fsGroup and mode
    defaultMode | 0440, and no pod setting makes them owned by the container's user. A group-readable file
    another user owns is refused (its owner could read it, or with 0640 slip in a key of their own), as is a
    group the process is only a supplementary member of, anything beyond reading for the group, and any
    access for others.
    """
    mode = stat.S_IMODE(info.st_mode)
    fix = f"`chmod 600 {path}`"
    if mode & stat.S_IRWXO:
        return f"key file {path} can be read by other users (mode {mode:04o}); {fix}"
    if mode & (stat.S_IWGRP | stat.S_IXGRP):
        return f"key file {path} is open to its group beyond reading (mode {mode:04o}); {fix}"
    if mode & stat.S_IRGRP and info.st_gid != os.getegid():
        return (
            f"key file {path} can be read by group {info.st_gid}, which is not this process's group "
            f"{os.getegid()} (mode {mode:04o}); {fix} (on Kubernetes: set the pod's fsGroup to its runAsGroup)"
        )
    if mode & stat.S_IRGRP and info.st_uid != 0:
        return (
            f"key file {path} can be read by its group (mode {mode:04o}, owner {info.st_uid}): only a root-owned "
            f"file, as a Kubernetes Secret volume has, may be; {fix}"
        )
    return None


def _write(path: Path, entries: list[KeyEntry]) -> None:
    document = {
        "format": FORMAT,
        "keys": [
            {"id": e.key_id, "created": e.created, "key": base64.b64encode(e.key.raw).decode("ascii")}
            for e in entries
        ],
    }
    try:
        write_atomic(path, (json.dumps(document, indent=2) + "\n").encode(), mode=0o600)
    except OSError as exc:
        raise TemplateKeyError(
            f"key file {path} cannot be written ({exc.strerror or exc}); where it is mounted read-only (a "
            "Kubernetes Secret), change the file the Secret is made from"
        ) from None


def template_keys(key_file: Path | str, location: str | Path, *, create: bool) -> KeyProvider | None:
    """The template keys for the store at `location`: GATEMATCH_TEMPLATE_KEY when set, else the key file.

    A missing key file is created when `create` is set, the store is the embedded one, and it holds no
    encrypted gallery (its first use: nothing can be lost); otherwise it is an error when `create` is set, and
    no keys (None) when not (read-only commands then check what they can without decrypting).
    """
    from_env = TemplateKey.from_env()
    if from_env is not None:
        return Keyring([from_env])
    path = Path(key_file)
    if path.exists():
        return KeyFile(path)
    if not create:
        return None
    if is_database_url(location):
        raise TemplateKeyError(
            f"no key file at {path}: create one with `gatematch keys create --keys {path}` and give every "
            "replica a copy (or set [keys] file)"
        )
    store = open_store(location)
    sealed = sorted({info.key_id or "?" for info in store.galleries() if info.encrypted})
    if sealed:
        raise TemplateKeyError(
            f"no key file at {path}, but the store at {store.location} holds galleries sealed under keys "
            f"{', '.join(sealed)}: restore the key file (or set {ENV_TEMPLATE_KEY})"
        )
    created = KeyFile.create(path)
    LOG.warning(
        "created a template key file; keep a copy elsewhere: without it the galleries cannot be read",
        extra={"key_file": str(path), "key_id": created.current().key_id},
    )
    return created
