"""The container image and the Kubernetes manifests, checked without a Docker engine or a cluster.

The Dockerfile is read statically (what it copies exists and enters the build context, its entry point and
commands are the CLI's, its model step really installs and verifies the models) and linted by hadolint and
checkov. The kustomizations are rendered by `kubectl kustomize` (secret files replaced by placeholders in a
copy) and checked as the cluster would see them: locked-down pods, native gRPC probes on the service's port
(the health-only port where the service does mutual TLS), config and environment keys that `load_config`
accepts, the template key file mounted from its Secret and read as the pod's user, and checkov.
`make deploy-check` installs the tools in .venv-deploy.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import tempfile
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

import pytest
import yaml

from gatematch.cards import get_pack
from gatematch.cli.main import build_parser, main
from gatematch.keyfile import KeyFile, template_keys
from gatematch.modelstore import ENV_MODEL_DIR, ModelStore
from gatematch.service.config import ENV_CONFIG, ServerConfig, load_config
from gatematch.service.security import Policy
from gatematch.template_crypto import ENV_TEMPLATE_KEY
from support.data import REPO, missing, need, need_root

DEPLOY = REPO / "deploy" / "kubernetes"
KUSTOMIZATIONS = ("base", "overlays/production", "overlays/app-tls", "overlays/models-volume")
DEPLOY_BIN = REPO / ".venv-deploy" / "bin"
# What the service reads from its environment besides GATEMATCH_<SECTION>_<KEY> config overrides.
SERVICE_ENV = {ENV_CONFIG, ENV_MODEL_DIR, ENV_TEMPLATE_KEY}
STORE_URL = "postgresql://gatematch@db.invalid:5432/gatematch"  # stands in for the Secret's URL
KEY_FILE = "template-keys.json"  # the key of the Secret gatematch-keys: the key file's name in the pod


def missing_tool(what: str) -> None:
    message = f"{what} not found: run `make deploy-tools`"
    missing(message)


def tool(name: str) -> str:
    for candidate in (DEPLOY_BIN / name, shutil.which(name)):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    missing_tool(name)
    raise AssertionError  # unreachable: missing_tool skips or fails


def kubectl() -> str:
    """The machine's kubectl when its kustomize is v4 or newer (Debian's 1.20 has v2), else the pinned one."""
    for candidate in (shutil.which("kubectl"), DEPLOY_BIN / "kubectl"):
        if candidate and Path(candidate).is_file():
            version = subprocess.run([str(candidate), "version", "--client"], capture_output=True, text=True)
            if re.search(r"Kustomize Version: v([4-9]|\d\d)", version.stdout):
                return str(candidate)
    missing_tool("kubectl with kustomize v4+")
    raise AssertionError


# --------------------------------------------------------------------------------------------- Dockerfile


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", (REPO / "Dockerfile").read_text())
    rows = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            rows.append((word.upper(), rest.strip()))
    return rows


def in_build_context(path: str) -> bool:
    """.dockerignore semantics for a top-level path: the last matching pattern decides, `!` re-includes."""
    included = True
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        if fnmatch(path.rstrip("/"), pattern.lstrip("!").rstrip("/")):
            included = negate
    return included


def image_env() -> dict[str, str]:
    env = {}
    for word, args in dockerfile():
        if word == "ENV":
            env.update(dict(item.split("=", 1) for item in shlex.split(args)))
    return env


def test_dockerfile_copies_what_exists_and_enters_the_build_context():
    stages = {args.split()[-1] for word, args in dockerfile() if word == "FROM" and " AS " in args.upper()}
    copies = [shlex.split(args) for word, args in dockerfile() if word == "COPY"]
    assert copies
    for words in copies:
        source_stage = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
        if source_stage:
            assert source_stage in stages, f"COPY --from={source_stage}: no such stage"
            continue
        for source in words[:-1]:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            assert in_build_context(source), f"COPY {source}: excluded by .dockerignore"
    assert not in_build_context("tests") and not in_build_context(".venv"), "the context is an allowlist"


def test_dockerfile_entrypoint_and_commands_are_the_cli():
    rows = dict(dockerfile())  # the last ENTRYPOINT / CMD / USER win, as in the image
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    entrypoint, command = json.loads(rows["ENTRYPOINT"]), json.loads(rows["CMD"])
    assert entrypoint == ["gatematch"] and entrypoint[0] in scripts
    assert build_parser().parse_args(command).command == "serve"
    assert rows["USER"] == "10001:10001", "numeric non-root user, as the pods' runAsUser"
    exposed = {int(port) for word, args in dockerfile() if word == "EXPOSE" for port in args.split()}
    assert ServerConfig().port in exposed and 9090 in exposed


def test_dockerfile_model_step_installs_and_verifies_the_pack(shared, tmp_path, capsys):
    """Run the image's model step here, from the shared models: the same command, the same checks."""
    step = next(args for word, args in dockerfile() if word == "RUN" and "models fetch" in args)
    words = shlex.split(step)
    pack = next(
        args.split("=", 1)[1] for word, args in dockerfile() if word == "ARG" and args.startswith("PACK=")
    )
    words = [w.replace("${PACK}", pack) for w in words[words.index("models") :]]
    target = words[words.index("--model-dir") + 1]
    assert target == image_env()[ENV_MODEL_DIR], "models land where the runtime looks for them"
    words[words.index("--from") + 1] = str(need(shared / "models", "../shared/models"))
    words[words.index("--model-dir") + 1] = str(tmp_path / "models")
    assert main(words) == 0
    assert "sha256 verified" in capsys.readouterr().out
    store = ModelStore(tmp_path / "models")
    assert all(store.status(card).verified for card in get_pack(pack).models)


def test_dockerfile_passes_hadolint():
    result = subprocess.run([tool("hadolint"), str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def checkov(*target: str, framework: str) -> dict:
    command = [tool("checkov"), *target, "--framework", framework, "--output", "json"]
    result = subprocess.run([*command, "--skip-download"], capture_output=True, text=True, timeout=300)
    assert result.returncode in (0, 1), result.stderr[-2000:]
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


def assert_clean(report: dict) -> None:
    results = report["results"]
    failed = [f"{c['check_id']} {c['resource']}: {c['check_name']}" for c in results["failed_checks"]]
    assert not failed, "\n".join(failed)
    assert report["summary"]["passed"] > 0 and not report["summary"]["parsing_errors"]
    for skipped in results["skipped_checks"]:
        assert len(skipped["check_result"].get("suppress_comment") or "") > 20, (
            f"{skipped['check_id']} skipped without a reason"
        )


def test_dockerfile_passes_checkov():
    assert_clean(checkov("-f", str(REPO / "Dockerfile"), framework="dockerfile"))


# ---------------------------------------------------------------------------------------------- manifests


@pytest.fixture(scope="module")
def secret_placeholders(tmp_path_factory) -> dict[str, str]:
    """Stand-ins for the secret files, by Secret key, shaped like the real thing so that the service's own
    checks apply: the key file is a real one, made by the code behind `gatematch keys create`."""
    key_file = KeyFile.create(tmp_path_factory.mktemp("keys") / KEY_FILE)
    return {"url": STORE_URL, KEY_FILE: key_file.path.read_text()}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory, secret_placeholders) -> dict[str, list[dict]]:
    """Each kustomization rendered from a copy whose secret files are placeholders."""
    binary = kubectl()
    copy = tmp_path_factory.mktemp("deploy") / "kubernetes"
    shutil.copytree(DEPLOY, copy)
    for kustomization in copy.rglob("kustomization.yaml"):
        for generator in yaml.safe_load(kustomization.read_text()).get("secretGenerator", []):
            for entry in generator.get("files", []):
                key, _, file = entry.rpartition("=")
                path = kustomization.parent / file
                if not path.exists():
                    path.write_text(secret_placeholders.get(key, f"placeholder for {path.name}"))
    documents = {}
    for name in KUSTOMIZATIONS:
        result = subprocess.run([binary, "kustomize", str(copy / name)], capture_output=True, text=True)
        assert result.returncode == 0, f"{name}: {result.stderr}"
        documents[name] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
    documents["dir"] = copy.parent
    return documents


def objects(docs: list[dict], kind: str) -> list[dict]:
    return [doc for doc in docs if doc["kind"] == kind]


def one(docs: list[dict], kind: str, prefix: str = "gatematch") -> dict:
    (found,) = [doc for doc in objects(docs, kind) if doc["metadata"]["name"].startswith(prefix)]
    return found


def containers(deployment: dict) -> list[dict]:
    pod = deployment["spec"]["template"]["spec"]
    return pod["containers"] + pod.get("initContainers", [])


def test_base_has_every_part_of_a_deployment(rendered):
    kinds = {doc["kind"] for doc in rendered["base"]}
    assert kinds >= {
        "Namespace",
        "ServiceAccount",
        "ConfigMap",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
    }
    services = {s["metadata"]["name"]: s for s in objects(rendered["base"], "Service")}
    assert services["gatematch-headless"]["spec"]["clusterIP"] == "None", "for client-side round_robin"
    assert all(doc["metadata"].get("namespace", "gatematch") == "gatematch" for doc in rendered["base"])
    hpa = one(rendered["base"], "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(rendered["base"], "Deployment")["metadata"]["name"]
    assert "replicas" not in one(rendered["base"], "Deployment")["spec"], "the autoscaler owns the count"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_pods_run_locked_down(rendered, name):
    deployment = one(rendered[name], "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    for container in containers(deployment):
        context = container["securityContext"]
        assert context["readOnlyRootFilesystem"] and not context["allowPrivilegeEscalation"]
        assert context["capabilities"]["drop"] == ["ALL"]
        assert context["seccompProfile"]["type"] == "RuntimeDefault"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), f"{container['name']} {kind}"


def service_env(container: dict) -> dict[str, str]:
    """The container's GATEMATCH_* environment: the store URL placeholder for the Secret's, 2 cores for the CPU
    limit (no other Secret value may come through the environment)."""
    env = {}
    for item in container.get("env", []):
        source = item.get("valueFrom", {})
        if "secretKeyRef" in source:
            env[item["name"]] = {"url": STORE_URL}[source["secretKeyRef"]["key"]]
        elif "resourceFieldRef" in source:
            env[item["name"]] = "2"
        else:
            env[item["name"]] = item["value"]
    return {name: value for name, value in env.items() if name.startswith("GATEMATCH_")}


def service_config(rendered, name: str, tmp_path: Path):
    """The service's config as this kustomization's pod would load it: the ConfigMap's TOML, then its env."""
    config_map = one(rendered[name], "ConfigMap", "gatematch-config")
    folder = tmp_path / name.replace("/", "-")
    folder.mkdir()
    for file_name, text in config_map["data"].items():
        (folder / file_name).write_text(text)
    container = one(rendered[name], "Deployment")["spec"]["template"]["spec"]["containers"][0]
    env = {k: v for k, v in service_env(container).items() if k not in SERVICE_ENV}
    return load_config(folder / "gatematch.toml", env=env), folder, container


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_config_and_environment_are_keys_the_service_accepts(rendered, name, tmp_path):
    config, folder, container = service_config(rendered, name, tmp_path)
    Policy.load(folder / "policy.toml")
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    config_mount = next(path for path in mounts if path.endswith("/config"))
    assert service_env(container)[ENV_CONFIG] == f"{config_mount}/gatematch.toml"
    assert config.auth.policy_file == f"{config_mount}/policy.toml"
    writable = [path for path, mount in mounts.items() if not mount.get("readOnly")]
    assert config.store.url.startswith("postgresql://"), "replicas share their galleries in PostgreSQL"
    assert config.audit.sink == "store", "audit records in the store's append-only table"
    fallback = config.audit.path  # the audit file while the database is away
    assert any(fallback.startswith(f"{root}/") for root in writable), f"{fallback} is on the read-only root"
    assert config.store.model_dir == image_env()[ENV_MODEL_DIR]
    assert config.server.host == "0.0.0.0" and config.server.workers == 2, "workers from the CPU limit"
    for file in (config.tls.cert_file, config.tls.key_file, config.tls.client_ca_file):
        assert not file or any(file.startswith(f"{root}/") for root in mounts), f"{file} is not mounted"
    if name == "overlays/app-tls":
        assert config.tls.client_ca_file and not config.server.allow_insecure_remote


def test_the_store_url_comes_from_a_generated_secret_and_no_key_from_the_environment(
    rendered, secret_placeholders
):
    container = one(rendered["overlays/production"], "Deployment")["spec"]["template"]["spec"]["containers"][
        0
    ]
    generated = {s["metadata"]["name"]: s for s in objects(rendered["overlays/production"], "Secret")}
    references = {
        item["name"]: item["valueFrom"]["secretKeyRef"]
        for item in container["env"]
        if "secretKeyRef" in item.get("valueFrom", {})
    }
    assert set(references) == {"GATEMATCH_STORE_URL"}
    for name, ref in references.items():
        value = base64.b64decode(generated[ref["name"]]["data"][ref["key"]]).decode()
        assert value == secret_placeholders[ref["key"]], f"{name} follows the generated Secret's name"
    # The environment key would override the key file, and `gatematch keys` refuses to run under it: a
    # cluster that set it could never rotate its keys.
    for name in KUSTOMIZATIONS:
        for container in containers(one(rendered[name], "Deployment")):
            assert ENV_TEMPLATE_KEY not in {item["name"] for item in container.get("env", [])}, name


@dataclass
class KeyVolume:
    """The template key file of one kustomization's pod: where the service looks, and what holds it there."""

    path: PurePosixPath  # [keys] file as the pod's config and environment make it
    mount: dict
    secret: dict  # the volume's `secret` source
    generated: dict | None  # the Secret the kustomization generates for it (None in the base)
    pod: dict


def key_volume(rendered, name: str, tmp_path: Path) -> KeyVolume:
    config, _, container = service_config(rendered, name, tmp_path)
    path = PurePosixPath(config.keys.file)
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent))
    pod = one(rendered[name], "Deployment")["spec"]["template"]["spec"]
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    secrets = {s["metadata"]["name"]: s for s in objects(rendered[name], "Secret")}
    return KeyVolume(path, mount, volume["secret"], secrets.get(volume["secret"]["secretName"]), pod)


def pod_identity(pod: dict) -> tuple[int, int, int | None]:
    """(uid, gid, fsGroup) the service container runs with: its own securityContext over the pod's."""
    context = pod["securityContext"] | pod["containers"][0].get("securityContext", {})
    return context["runAsUser"], context["runAsGroup"], pod["securityContext"].get("fsGroup")


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_template_keys_are_a_file_mounted_read_only_from_the_keys_secret(rendered, name, tmp_path):
    keys = key_volume(rendered, name, tmp_path)
    assert keys.mount["readOnly"], "the pod never writes its keys"
    # A subPath mount is never updated: the keys added for a rotation would not reach the running service.
    assert "subPath" not in keys.mount and "subPathExpr" not in keys.mount
    # A stable name (no content hash) is what lets a changed key file reach the running pods through their
    # volume; it is also the name sites with External Secrets create.
    assert keys.secret["secretName"] == "gatematch-keys"
    if name != "base":
        assert keys.generated is not None, f"{name} generates the Secret the pods mount"
        assert set(keys.generated["data"]) == {keys.path.name}, "the Secret's one key is the key file's name"
        assert keys.secret.get("items") in (None, [{"key": keys.path.name, "path": keys.path.name}])
    # The kubelet gives a Secret's files mode defaultMode (0644 when unset), | 0440 and group fsGroup when the
    # pod has one; the service accepts group read only from its own group, and nothing for others.
    uid, gid, fs_group = pod_identity(keys.pod)
    mode = keys.secret.get("defaultMode", 0o644) | (0o440 if fs_group is not None else 0)
    assert uid != 0 and fs_group == gid, "the key file's group (fsGroup) must be the service's own group"
    assert mode & 0o037 == 0, f"mode {mode:04o}: nothing beyond read for the group, nothing for others"


def project_secret(volume: Path, data: dict[str, bytes], mode: int, group: int) -> None:
    """Write a Secret's data into `volume` as the kubelet does: the files in a new timestamped folder that the
    link `..data` is switched to by one rename, each key a link through `..data` (a reader of the key's path
    sees the old file or the new one, never half of one); group-owned by fsGroup. The pod's mount is
    read-only, here a folder nobody may write."""
    volume.chmod(0o2755)
    stamp = volume / f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.{time.monotonic_ns()}"
    stamp.mkdir()
    for key, content in data.items():
        (stamp / key).write_bytes(content)
        (stamp / key).chmod(mode)
    for path in (stamp, *(stamp / key for key in data)):
        os.chown(path, -1, group)
    stamp.chmod(0o2555)
    (volume / "..data_tmp").symlink_to(stamp.name)
    os.replace(volume / "..data_tmp", volume / "..data")
    for key in data:
        if not (volume / key).is_symlink():
            (volume / key).symlink_to(f"..data/{key}")
    for old in volume.glob("..20*"):
        if old != stamp:
            old.chmod(0o755)
            shutil.rmtree(old)
    os.chown(volume, -1, group)
    volume.chmod(0o2555)


@contextlib.contextmanager
def as_pod_user(uid: int, gid: int, groups: list[int]) -> Iterator[None]:
    """The block runs with the pod's user, group and supplementary groups (effective ids, switched back after;
    the process is root). The CLI's modules are imported first: the interpreter's own files may be where the
    pod's user cannot read them."""
    build_parser()
    saved = os.getegid(), os.getgroups()
    os.setgroups(groups)
    os.setegid(gid)
    os.seteuid(uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(saved[0])
        os.setgroups(saved[1])


@pytest.fixture
def world_readable_dir() -> Iterator[Path]:
    """A folder the pod's user can reach (pytest's own temporary folders are root's only)."""
    folder = Path(tempfile.mkdtemp(prefix="gatematch-pod-"))
    folder.chmod(0o755)
    yield folder
    for path in (folder, *folder.rglob("*")):
        if path.is_dir() and not path.is_symlink():
            path.chmod(0o755)
    shutil.rmtree(folder)


def keys_listed(capsys) -> list[tuple[str, bool]]:
    """`gatematch keys list --json` as the pod runs it (its config names the key file): (id, current) rows."""
    assert main(["keys", "list", "--json"]) == 0, capsys.readouterr().err
    return [(row["id"], row["current"]) for row in json.loads(capsys.readouterr().out)["keys"]]


def test_the_key_file_as_the_pod_reads_it_is_one_gatematch_keys_accepts_and_a_rotation_reaches_it(
    rendered, tmp_path, world_readable_dir, monkeypatch, capsys
):
    """The rendered Secret laid out as the kubelet mounts it (root-owned, group fsGroup, defaultMode | 0440,
    behind the ..data link) and read as the pod's user: `gatematch keys` accepts it, a key added to the Secret
    reaches a key file the service holds open (no restart), and changing the keys in the pod is refused in
    one line (they are changed where the Secret is made)."""
    need_root("to lay the Secret out as the kubelet does (root-owned files) and read it as the pod's user")
    keys = key_volume(rendered, "overlays/production", tmp_path)
    uid, gid, fs_group = pod_identity(keys.pod)
    assert keys.generated is not None and fs_group is not None
    mode = keys.secret.get("defaultMode", 0o644) | 0o440
    volume = world_readable_dir / "keys"
    volume.mkdir()
    source = tmp_path / KEY_FILE  # the site's copy of the key file, from which the Secret is made
    source.write_bytes(base64.b64decode(keys.generated["data"][keys.path.name]))
    source.chmod(0o600)
    project_secret(volume, {keys.path.name: source.read_bytes()}, mode, fs_group)
    mounted = volume / keys.path.name
    # the pod's config names the key file; here GATEMATCH_KEYS_FILE moves it to where this test mounted it
    monkeypatch.setenv("GATEMATCH_KEYS_FILE", str(mounted))
    monkeypatch.setenv("XDG_DATA_HOME", str(world_readable_dir / "data"))  # no store there: keys only
    first = KeyFile(source).current().key_id
    with as_pod_user(uid, gid, [fs_group]):
        assert keys_listed(capsys) == [(first, True)]
        config = load_config()  # what a replica holds while it serves, made as `gatematch serve` makes it
        serving = template_keys(config.keys.file, STORE_URL, create=True)

    added = KeyFile(source).add()  # step 1 of a rotation: a key added to the file the Secret is made from
    project_secret(volume, {keys.path.name: source.read_bytes()}, mode, fs_group)  # the kubelet's update
    with as_pod_user(uid, gid, [fs_group]):
        assert serving is not None and serving.has(added.key_id), "the replica learns it, no restart"
        assert serving.current().key_id == added.key_id, "and seals with it"
        assert keys_listed(capsys) == [(first, False), (added.key_id, True)]
        for command in (["keys", "create"], ["keys", "rotate", "--new-key"]):
            assert main(command) == 2
            error = capsys.readouterr().err
            assert error.count("\n") == 1 and "cannot be written" in error, error
        assert [e.key_id for e in KeyFile(mounted).entries] == [first, added.key_id], "the mounted file as is"


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_probes_are_native_grpc_health_checks_on_the_right_port(rendered, name, tmp_path):
    config, _, container = service_config(rendered, name, tmp_path)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == config.server.port and ports["metrics"] == config.metrics.port
    # with mutual TLS in the service, the kubelet's plaintext probe asks the health-only port instead
    probed = config.server.health_port if name == "overlays/app-tls" else config.server.port
    assert probed and (name != "overlays/app-tls" or ports["health"] == probed)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == probed, f"{probe}: native gRPC health probe"


def test_generated_secrets_and_images_are_referenced(rendered):
    production = one(rendered["overlays/production"], "Deployment")
    names = {s["metadata"]["name"] for s in objects(rendered["overlays/production"], "Secret")}
    refs = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for e in containers(production)[0]["env"]
        if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]
    }
    assert refs and refs <= names
    for name in ("overlays/production", "overlays/app-tls", "overlays/models-volume"):
        for container in containers(one(rendered[name], "Deployment")):
            assert "@sha256:" in container["image"], f"{name}: {container['image']} is not pinned by digest"
    tls = one(rendered["overlays/app-tls"], "Deployment")["spec"]["template"]["spec"]["volumes"]
    secret = next(v["secret"]["secretName"] for v in tls if v["name"] == "tls")
    assert secret in {s["metadata"]["name"] for s in objects(rendered["overlays/app-tls"], "Secret")}


def test_models_volume_installs_verified_models_before_the_service(rendered):
    pod = one(rendered["overlays/models-volume"], "Deployment")["spec"]["template"]["spec"]
    (init,) = pod["initContainers"]
    args = build_parser().parse_args(init["args"])
    assert (args.command, args.models_command) == ("models", "fetch") and args.source
    service_mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert service_mounts[str(args.model_dir)]["readOnly"], "the service only reads what the init verified"


def test_manifests_pass_checkov(rendered):
    folder = rendered["dir"] / "rendered"
    folder.mkdir(exist_ok=True)
    for name in KUSTOMIZATIONS:
        (folder / f"{name.replace('/', '-')}.yaml").write_text(yaml.safe_dump_all(rendered[name]))
    assert_clean(checkov("-d", str(folder), framework="kubernetes"))
