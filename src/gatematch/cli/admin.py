"""What the administration commands (`gatematch gallery`, `keys`, `audit`) share: the service configuration
they read (store, key file, retention, audit trail), and the audit records they leave.

They take `--config FILE` (default: $GATEMATCH_CONFIG, else the embedded defaults, with GATEMATCH_<SECTION>_<KEY>
overrides), so a command run on the service's machine finds the same store, keys and audit trail as the
service; `--store` and `--keys` name others. Every action that reads or changes galleries or keys is appended to
the audit trail as the operating-system user (`cli:<user>`).
"""

from __future__ import annotations

import argparse
import getpass
import os
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

from gatematch.errors import GalleryStoreError, TemplateKeyError
from gatematch.gallery_store import GalleryStore, is_database_url, open_store
from gatematch.gallery_store_sqlite import DB_NAME
from gatematch.keyfile import KeyFile, template_keys
from gatematch.service.audit import AuditLog, AuditRecord, AuditSink, DatabaseAuditLog
from gatematch.service.config import ServiceConfig, load_config
from gatematch.template_crypto import ENV_TEMPLATE_KEY, KeyProvider


def admin_options() -> argparse.ArgumentParser:
    """The options every administration command takes (`parents=[admin_options()]`): config, key file, store
    and --json."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--config", type=Path, default=None, help="service config (default: $GATEMATCH_CONFIG or built-in)"
    )
    common.add_argument(
        "--keys", type=Path, default=None, help="template key file (default: the config's [keys] file)"
    )
    common.add_argument(
        "--store",
        "--out",
        dest="store",
        default=None,
        help="gallery store: a folder (embedded SQLite store) or a postgresql:// URL (default: the config's)",
    )
    common.add_argument("--json", action="store_true", help="machine-readable output")
    return common


def operator() -> str:
    """Who runs the command, as the audit trail names them."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (some containers)
        name = f"uid{os.getuid()}"
    return f"cli:{name}"[:200]


class Admin:
    """The configuration, store, keys and audit trail one command works with."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.config: ServiceConfig = load_config(args.config)
        self.location: str = getattr(args, "store", None) or self.config.store.location
        self.key_file_path = Path(args.keys or self.config.keys.file)

    def keys(self, create: bool = False) -> KeyProvider | None:
        """The template keys: --keys, else GATEMATCH_TEMPLATE_KEY, else the config's key file (created for a new
        embedded store when `create`)."""
        if self.args.keys is not None:
            if not self.key_file_path.exists():
                raise TemplateKeyError(f"no key file at {self.key_file_path}")
            return KeyFile(self.key_file_path)
        return template_keys(self.key_file_path, self.location, create=create)

    def managed_key_file(self) -> KeyFile | None:
        """The key file the `keys` commands read and change (None while there is none). Refused while
        GATEMATCH_TEMPLATE_KEY overrides it: the galleries would be opened with another key than the file's."""
        if self.args.keys is None and os.environ.get(ENV_TEMPLATE_KEY, "").strip():
            raise TemplateKeyError(
                f"{ENV_TEMPLATE_KEY} is set and overrides the key file; unset it to manage keys (or give --keys)"
            )
        return KeyFile(self.key_file_path) if self.key_file_path.exists() else None

    def key_file(self) -> KeyFile:
        """The existing key file (see `managed_key_file`)."""
        keys = self.managed_key_file()
        if keys is None:
            raise TemplateKeyError(f"no key file at {self.key_file_path} (`gatematch keys create` makes one)")
        return keys

    def store(self, create: bool = False, keys: KeyProvider | None = None) -> GalleryStore:
        """The gallery store; only `create` may make a new folder (a typo must not leave stores around)."""
        location = self.location
        if not create and not is_database_url(location) and not (Path(location) / DB_NAME).is_file():
            raise GalleryStoreError(
                f"no gallery store at {location} (build one with `gatematch gallery build`)"
            )
        return open_store(location, keys, self.config.retention.policy())

    @cached_property
    def audit(self) -> AuditSink:
        log = AuditLog(self.config.audit.path, self.config.audit.rotate_bytes)
        if self.config.audit.sink == "store" and is_database_url(self.location):
            return DatabaseAuditLog(self.location, log)
        return log

    def record(self, event: str, **fields: object) -> None:
        """Append one record of this command's action to the audit trail."""
        self.audit.record(AuditRecord(event, operator(), **fields))  # type: ignore[arg-type]

    def close(self) -> None:
        if "audit" in self.__dict__:
            self.audit.close()


Handler = Callable[[argparse.Namespace, Admin], int]


def with_admin(handler: Handler) -> Callable[[argparse.Namespace], int]:
    """The command's handler, run with the Admin of its arguments (store, keys, audit trail), closed after."""

    def run(args: argparse.Namespace) -> int:
        admin = Admin(args)
        try:
            return handler(args, admin)
        finally:
            admin.close()

    return run
