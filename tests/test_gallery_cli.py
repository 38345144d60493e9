"""`gatematch gallery list|inspect` verify what they report and name a damaged gallery; a damaged database is
one line and exit code 2 (once as a separate process, as an operator runs it; otherwise through the same
`main` in this process, which is faster)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gatematch.cli.main import main
from gatematch.gallery_store import is_database_url
from gatematch.gallery_store_sqlite import DB_NAME, SQLiteGalleryStore
from gatematch.keyfile import KeyFile
from support.cli import run_gatematch
from support.drafts import BEFORE, draft
from support.stores import StoreBackend
from test_gallery_store import DAMAGE, corrupt_pages


@pytest.fixture
def backend(store_location: str, postgres_cluster) -> StoreBackend:
    return StoreBackend(store_location, postgres_cluster if is_database_url(store_location) else None)


def gallery(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """`gatematch gallery ARGV`: exit code, stdout, stderr."""
    code = main(["gallery", *argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("damage", ["flipped byte", "truncated", "deleted", "undecryptable"])
def test_list_and_inspect_name_the_damaged_gallery(
    backend: StoreBackend, damage: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    keys = KeyFile.create(tmp_path / "keys.json")
    store = backend.open(key=keys)
    broken = store.write(draft()[0], now=BEFORE).info.gallery_id
    healthy = store.write(draft(flight="GM202", tag="OK", seed=1)[0], now=BEFORE).info.gallery_id
    where = ("--store", backend.location, "--keys", str(keys.path))
    assert gallery(capsys, "list", *where)[0] == 0
    DAMAGE[damage](backend, broken)

    code, out, _ = gallery(capsys, "list", *where)
    assert code == 1
    lines = {line.split()[0]: line for line in out.splitlines()}
    assert "DAMAGED" in lines[broken] and any(w in lines[broken] for w in ("sha256", "index", "altered"))
    assert "DAMAGED" not in lines[healthy] and f"encrypted (key {keys.current().key_id})" in lines[healthy]
    code, out, _ = gallery(capsys, "list", *where, "--json")
    assert {g["gallery_id"]: g["check"]["ok"] for g in json.loads(out)} == {broken: False, healthy: True}

    code, out, _ = gallery(capsys, "inspect", broken, *where)
    assert code == 1 and "DAMAGED" in out
    assert gallery(capsys, "inspect", healthy, *where)[0] == 0


def test_list_names_plaintext_galleries_where_keys_are_held(
    backend: StoreBackend, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    plain = backend.open().write(draft()[0], now=BEFORE).info.gallery_id
    keys = KeyFile.create(tmp_path / "keys.json")
    code, out, _ = gallery(capsys, "list", "--store", backend.location, "--keys", str(keys.path))
    assert (
        code == 1 and out.startswith(plain) and "PLAINTEXT  DAMAGED: gallery" in out and "keys rotate" in out
    )


def test_corrupted_sqlite_pages_are_one_line_and_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    SQLiteGalleryStore(tmp_path).write(draft()[0], now=BEFORE)
    corrupt_pages(tmp_path / DB_NAME)
    done = run_gatematch("gallery", "list", "--store", str(tmp_path))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1 and "damaged or unreadable" in done.stderr
    for argv in (("inspect", "GM101_20300501T1830Z"), ("purge",), ("export", "GM101_20300501T1830Z")):
        code, _, err = gallery(capsys, *argv, "--store", str(tmp_path))
        assert code == 2 and err.count("\n") == 1 and "damaged or unreadable" in err, argv
