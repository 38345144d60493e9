"""Model store and `gatematch models`: offline install verifies sha256, refuses tampered files, reports state."""

from __future__ import annotations

import shutil

import pytest

from gatematch.cards import load_cards
from gatematch.cli.main import main
from gatematch.errors import ModelError
from gatematch.modelstore import ModelStore, default_model_dir


def test_default_dir_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("GATEMATCH_MODEL_DIR", str(tmp_path / "m"))
    assert default_model_dir() == tmp_path / "m"
    monkeypatch.delenv("GATEMATCH_MODEL_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert default_model_dir() == tmp_path / "cache" / "gatematch" / "models"


def test_fetch_from_folder_installs_verified_files(model_store):
    for card in load_cards().values():
        status = model_store.status(card)
        if card.derived:  # made by `gatematch models quantize`, never fetched
            assert not status.present
            continue
        assert status.verified, status.problem
        assert model_store.verified_path(card) == model_store.root / card.file


def test_tampered_source_is_refused(shared, tmp_path):
    card = load_cards()["yunet_2023mar"]
    source = tmp_path / "src"
    source.mkdir()
    tampered = bytearray((shared / "models" / "detection" / card.file).read_bytes())
    tampered[-1] ^= 0xFF
    (source / card.file).write_bytes(bytes(tampered))
    store = ModelStore(tmp_path / "store")
    with pytest.raises(ModelError, match="refusing to install"):
        store.fetch_from_dir(source, [card])
    assert not (store.root / card.file).exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelError, match="not found under"):
        store.fetch_from_dir(empty, [card])
    with pytest.raises(ModelError, match="does not exist"):
        store.fetch_from_dir(tmp_path / "nowhere", [card])


def test_installed_file_altered_later_is_caught(model_dir, tmp_path):
    card = load_cards()["mobilefacenet_128d"]
    store = ModelStore(tmp_path)
    shutil.copy(model_dir / card.file, tmp_path / card.file)
    assert store.verified_path(card)
    with (tmp_path / card.file).open("r+b") as handle:
        handle.seek(1000)
        handle.write(b"\x00\x01\x02")
    with pytest.raises(ModelError, match="sha256 mismatch"):
        store.verified_path(card)
    with pytest.raises(ModelError, match="not installed"):
        ModelStore(tmp_path / "empty").verified_path(card)


def test_download_without_address_says_how_to_install(tmp_path):
    card = load_cards()["w600k_mbf_int8"]
    with pytest.raises(ModelError, match="fetch --from"):
        ModelStore(tmp_path).download([card])


def test_models_cli(model_dir, tmp_path, capsys, shared):
    assert main(["models", "verify", "--model-dir", str(model_dir)]) == 0
    assert main(["models", "list", "--model-dir", str(model_dir)]) == 0
    listing = capsys.readouterr().out
    assert "NOT FOR COMMERCIAL USE" in listing and "w600k_mbf_int8" in listing
    empty = tmp_path / "empty"
    assert main(["models", "verify", "--model-dir", str(empty)]) == 1
    assert "not installed" in capsys.readouterr().out
    assert (
        main(
            [
                "models",
                "fetch",
                "--pack",
                "default",
                "--from",
                str(shared / "models"),
                "--model-dir",
                str(empty),
            ]
        )
        == 0
    )
    assert main(["models", "verify", "--pack", "default", "--model-dir", str(empty)]) == 0
    assert main(["models", "fetch", "--from", str(tmp_path / "missing"), "--model-dir", str(empty)]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_store_that_cannot_be_written_is_a_model_error(shared, tmp_path):
    """A --model-dir that is a file (or unwritable) must give the one-line error, not an OSError traceback."""
    card = load_cards()["yunet_2023mar"]
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    with pytest.raises(ModelError, match="cannot install"):
        ModelStore(blocker).fetch_from_dir(shared / "models", [card])
