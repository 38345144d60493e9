"""Service configuration: defaults, a TOML file, environment overrides, and clear errors for bad values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gatematch.errors import ConfigError
from gatematch.service.config import ServiceConfig, load_config


def test_defaults_serve_on_loopback_without_any_file() -> None:
    config = load_config(env={})
    assert config == ServiceConfig()
    assert (config.server.host, config.server.port) == ("127.0.0.1", 50051)
    assert (config.budgets.frame_ms, config.budgets.encounter_ms) == (500.0, 2000.0)
    assert config.store.pack == "default"
    assert config.server.worker_count >= 1


def test_file_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "gatematch.toml"
    path.write_text(
        '[server]\nport = 6000\nworkers = 2\n[budgets]\nframe_ms = 250\n[tls]\ncert_file = "certs/server.pem"\n'
    )
    env = {
        "GATEMATCH_SERVER_PORT": "7000",
        "GATEMATCH_MATCH_LIVENESS": "yes",
        "GATEMATCH_MODEL_DIR": "/elsewhere",
    }
    config = load_config(path, env=env)
    assert config.server.port == 7000  # environment wins over the file
    assert config.server.workers == 2
    assert config.budgets.frame_ms == 250.0
    assert config.match.liveness is True
    assert config.tls.cert_file == str(tmp_path / "certs" / "server.pem")  # relative to the file


def test_paths_are_made_absolute_without_following_the_file_own_link(tmp_path: Path) -> None:
    """A Kubernetes Secret or ConfigMap volume updates a file by switching the link `..data` to a new folder
    and deleting the old one: a path resolved through the file's link at start would name a deleted file after
    the first update (keys added for a rotation, a policy to reload on SIGHUP). The folders are resolved, so
    `..` means what it meant under a linked config folder (a release link)."""
    volume = tmp_path / "volume"
    (volume / "..2030_01_01").mkdir(parents=True)
    (volume / "..data").symlink_to("..2030_01_01")
    (volume / "template-keys.json").symlink_to("..data/template-keys.json")
    (tmp_path / "releases" / "v3").mkdir(parents=True)
    (tmp_path / "current").symlink_to("releases/v3")  # the config folder is a link
    path = tmp_path / "current" / "gatematch.toml"
    path.write_text(
        f'[keys]\nfile = "{volume / "template-keys.json"}"\n[auth]\npolicy_file = "../x/../policy.toml"\n'
    )
    config = load_config(path, env={})
    assert config.keys.file == str(volume.resolve() / "template-keys.json")
    assert config.auth.policy_file == str((tmp_path / "releases").resolve() / "policy.toml")
    elsewhere = load_config(env={"GATEMATCH_KEYS_FILE": str(volume / "template-keys.json")})
    assert elsewhere.keys.file == str(volume / "template-keys.json"), "the environment's path as given"


def test_a_path_through_a_link_loop_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "a").symlink_to("b")
    (tmp_path / "b").symlink_to("a")
    path = tmp_path / "gatematch.toml"
    path.write_text('[keys]\nfile = "a/template-keys.json"\n')
    with pytest.raises(ConfigError, match=r"^\[keys\] file: .* cannot be resolved"):
        load_config(path, env={})


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[encounter]\ndecision_frames = [2, 4]\nfpir_shares = [0.25, 0.75]\n")
    encounter = load_config(env={"GATEMATCH_CONFIG": str(path)}).encounter
    assert (encounter.decision_frames, encounter.fpir_shares) == ((2, 4), (0.25, 0.75))


@pytest.mark.parametrize(
    ("text", "env", "message"),
    [
        ("[server]\nprot = 1\n", {}, "unknown setting [server] prot"),
        ("[srever]\nport = 1\n", {}, "unknown section [srever]"),
        ("[server]\nport = 'x'\n", {}, "port must be int"),
        ("[server]\nport = 70000\n", {}, "port must be 0..65535"),
        ("", {"GATEMATCH_BUDGETS_FRAME_MS": "-1"}, "frame_ms must be > 0"),
        ("[focus]\nmax_margin_px = nan\n", {}, "max_margin_px must be > 0, got nan"),
        ("", {"GATEMATCH_FOCUS_MAX_MARGIN_PX": "0"}, "max_margin_px must be > 0"),
        ("[retention]\npurge_every_s = 0\n", {}, "purge_every_s must be > 0"),
        ("", {"GATEMATCH_FOCUS_PASS_OVER": "2"}, "pass_over must be 0 or 1"),
        ("", {"GATEMATCH_MATCH_LIVENESS": "maybe"}, "liveness must be true or false"),
        ("", {"GATEMATCH_MATCH_TARGET_FPIR": "2"}, "target_fpir must be in (0, 1)"),
        ("[server\n", {}, "c.toml"),
    ],
)
def test_bad_settings_are_named(tmp_path: Path, text: str, env: dict[str, str], message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path, env=env)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config"):
        load_config(tmp_path / "absent.toml", env={})


def test_store_url_and_audit_sink_from_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[store]\nurl = "postgresql://gate@db.example:5432/galleries"\n[audit]\nsink = "store"\n')
    config = load_config(path, env={})
    assert config.store.location == "postgresql://gate@db.example:5432/galleries"
    assert config.audit.sink == "store"
    overridden = load_config(path, env={"GATEMATCH_STORE_URL": "postgresql://gate@other/galleries"})
    assert overridden.store.url == "postgresql://gate@other/galleries"
    assert load_config(env={}).store.location == load_config(env={}).store.gallery_dir  # embedded by default


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GATEMATCH_STORE_URL": "mysql://x/y"}, "[store] url must start with postgresql://"),
        ({"GATEMATCH_AUDIT_SINK": "syslog"}, "[audit] sink must be one of file, store"),
        ({"GATEMATCH_AUDIT_SINK": "store"}, '[audit] sink = "store" needs the galleries in PostgreSQL'),
    ],
)
def test_bad_store_settings_are_named(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(env=env)
