"""A throwaway PostgreSQL cluster for the tests: initdb in a temporary folder, one loopback port, stopped at
the end. Tests that need it skip with a message when PostgreSQL is not installed, except under CI=true, where
they fail (`make test` installs the Debian package `postgresql` when it is missing).

initdb refuses to run as root; as root (CI) the cluster belongs to the `postgres` user the Debian package
creates, and the folder is made accessible to it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg

from support.data import missing

# A test cluster holds nothing worth a fsync; it only needs to be fast and to restart cleanly.
SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "100",
    "shared_buffers": "32MB",
    "unix_socket_directories": "",
    "listen_addresses": "127.0.0.1",
    "log_min_messages": "warning",
}


def find_binary(name: str) -> str | None:
    """A PostgreSQL server program: on PATH, or where Debian's packages put it (not on PATH there)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    return candidates[0] if candidates else None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class PostgresCluster:
    """initdb + pg_ctl on a loopback port; `database()` hands out a fresh, empty database per test."""

    def __init__(self, initdb: str, pg_ctl: str) -> None:
        self.pg_ctl = pg_ctl
        self.folder = Path(tempfile.mkdtemp(prefix="gatematch-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "server.log"
        self.port = free_port()
        self.user: str | None = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError(
                    "running as root and there is no 'postgres' user to own the cluster"
                ) from None
            self.user = "postgres"
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
            os.chmod(self.folder, 0o700)
        self._run(
            initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-instructions"
        )
        self.start()

    def _run(self, *argv: str) -> None:
        command = ["runuser", "-u", self.user, "--", *argv] if self.user else list(argv)
        done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=self.folder)
        if done.returncode != 0:
            log = self.log.read_text() if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(argv[:2])} failed: {done.stderr.strip()} {log[-2000:]}")

    @property
    def options(self) -> str:
        """Server settings for `pg_ctl -o` (which passes them through a shell: quoted)."""
        return " ".join(f"-c {key}='{value}'" for key, value in {**SETTINGS, "port": self.port}.items())

    def start(self) -> None:
        self._run(
            self.pg_ctl,
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            self.options,
            "-w",
            "-t",
            "60",
            "start",
        )

    def stop(self, mode: str = "fast") -> None:
        self._run(self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new empty database; its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def files(self) -> Iterator[Path]:
        """Every file of the cluster (tables, WAL): where a plaintext template would show up if it were stored."""
        for path in self.data.rglob("*"):
            if path.is_file():
                yield path

    def destroy(self) -> None:
        with contextlib.suppress(RuntimeError):
            self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)


def start_cluster() -> PostgresCluster | str:
    """A running cluster, or why there cannot be one here."""
    initdb, pg_ctl = find_binary("initdb"), find_binary("pg_ctl")
    if not initdb or not pg_ctl:
        return "PostgreSQL server programs (initdb, pg_ctl) not found: install the Debian package postgresql"
    try:
        return PostgresCluster(initdb, pg_ctl)
    except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
        return f"cannot start a throwaway PostgreSQL cluster: {exc}"


def need_cluster(cluster: PostgresCluster | str) -> PostgresCluster:
    """The cluster; otherwise skip (or fail under CI=true) with the reason."""
    if isinstance(cluster, PostgresCluster):
        return cluster
    missing(cluster)
