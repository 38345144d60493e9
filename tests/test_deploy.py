"""The container image and the Kubernetes manifests, checked without a Docker engine or a cluster.

The Dockerfile is read statically (what it copies exists and enters the build context, its entry point and
commands are the CLI's, its model step really installs and verifies the models) and linted by hadolint and
checkov. The kustomizations are rendered by `kubectl kustomize` (secret files replaced by placeholders in a
copy) and checked as the cluster would see them: locked-down pods, native gRPC probes on the service's port
(the health-only port where the service does mutual TLS), config and environment keys that `load_config`
accepts, and checkov. `make deploy-check` installs the tools in .venv-deploy.
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import subprocess
import tomllib
from fnmatch import fnmatch
from pathlib import Path

import pytest
import yaml

from gatematch.cards import get_pack
from gatematch.cli.main import build_parser, main
from gatematch.modelstore import ENV_MODEL_DIR, ModelStore
from gatematch.service.config import ENV_CONFIG, ServerConfig, load_config
from gatematch.service.security import Policy
from gatematch.template_crypto import ENV_TEMPLATE_KEY
from support.data import REPO, need, under_ci

DEPLOY = REPO / "deploy" / "kubernetes"
KUSTOMIZATIONS = ("base", "overlays/production", "overlays/app-tls", "overlays/models-volume")
DEPLOY_BIN = REPO / ".venv-deploy" / "bin"
# What the service reads from its environment besides GATEMATCH_<SECTION>_<KEY> config overrides.
SERVICE_ENV = {ENV_CONFIG, ENV_MODEL_DIR, ENV_TEMPLATE_KEY}
# Stand-ins for secret values, by Secret key: shaped like the real thing, so the service's checks apply.
SECRET_PLACEHOLDERS = {
    "url": "postgresql://gatematch@db.invalid:5432/gatematch",
    "template-key": base64.b64encode(bytes(32)).decode(),
}


def missing_tool(what: str) -> None:
    message = f"{what} not found: run `make deploy-tools`"
    if under_ci():
        pytest.fail(f"CI=true: {message}")
    pytest.skip(message)


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
def rendered(tmp_path_factory) -> dict[str, list[dict]]:
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
                    path.write_text(SECRET_PLACEHOLDERS.get(key, f"placeholder for {path.name}"))
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
    """The container's GATEMATCH_* environment: Secret values as placeholders, the CPU limit as 2 cores."""
    env = {}
    for item in container.get("env", []):
        source = item.get("valueFrom", {})
        if "secretKeyRef" in source:
            env[item["name"]] = SECRET_PLACEHOLDERS[source["secretKeyRef"]["key"]]
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


def test_store_url_and_template_key_come_from_generated_secrets(rendered):
    container = one(rendered["overlays/production"], "Deployment")["spec"]["template"]["spec"]["containers"][
        0
    ]
    generated = {s["metadata"]["name"]: s for s in objects(rendered["overlays/production"], "Secret")}
    references = {
        item["name"]: item["valueFrom"]["secretKeyRef"]
        for item in container["env"]
        if "secretKeyRef" in item.get("valueFrom", {})
    }
    assert set(references) == {"GATEMATCH_STORE_URL", ENV_TEMPLATE_KEY}
    for name, ref in references.items():
        value = base64.b64decode(generated[ref["name"]]["data"][ref["key"]]).decode()
        assert value == SECRET_PLACEHOLDERS[ref["key"]], f"{name} follows the generated Secret's name"


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
