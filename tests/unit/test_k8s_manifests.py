"""The Kubernetes manifests (k8s/), checked by parsing: there is no cluster or kustomize binary here.

What is checked is what would otherwise only fail on a cluster: kinds and API versions, the
kustomization's files, non-root containers with CPU/memory requests and limits, token auth on every
Ray pod, entry points and import paths that exist in this repository, worker groups that can run the
quickstart sweep's hardware, the RayService's applications equal to serve/config.yaml's, and the
copies of dashboards and rules equal to their sources (`python k8s/sync.py` refreshes them).
"""

from __future__ import annotations

import ast
import json
import re
import shlex
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "k8s"
APP_DIR = "/app"  # where k8s/Dockerfile puts the repository (WORKDIR)
IMAGES = ("ghcr.io/OWNER/benchmatch", "ghcr.io/OWNER/benchmatch-cuda")
AUTH_SECRET = "benchmatch-ray-auth"

EXPECTED_KINDS = {
    "Namespace": "v1",
    "PersistentVolumeClaim": "v1",
    "NetworkPolicy": "networking.k8s.io/v1",
    "RayCluster": "ray.io/v1",
    "RayJob": "ray.io/v1",
    "RayService": "ray.io/v1",
    "PodMonitor": "monitoring.coreos.com/v1",
    "PrometheusRule": "monitoring.coreos.com/v1",
}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())


def resources() -> list[dict[str, Any]]:
    out = []
    for rel in kustomization()["resources"]:
        out.extend(_docs(K8S / rel))
    return out


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for d in resources() if d["kind"] == kind]


def ray_cluster_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    """(owner, RayCluster spec) of every RayCluster, including those inside RayService/RayJob."""
    for d in resources():
        name = f"{d['kind']}/{d['metadata']['name']}"
        if d["kind"] == "RayCluster":
            yield name, d["spec"]
        elif d["kind"] == "RayService":
            yield name, d["spec"]["rayClusterConfig"]
        elif d["kind"] == "RayJob" and "rayClusterSpec" in d["spec"]:
            yield name, d["spec"]["rayClusterSpec"]


def pod_templates() -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(where, pod template, runs Ray) of every pod the manifests define."""
    for owner, spec in ray_cluster_specs():
        yield f"{owner} head", spec["headGroupSpec"]["template"], True
        for group in spec.get("workerGroupSpecs", []):
            yield f"{owner} {group['groupName']}", group["template"], True
    for job in by_kind("RayJob"):
        if "submitterPodTemplate" in job["spec"]:
            yield f"RayJob/{job['metadata']['name']} submitter", job["spec"]["submitterPodTemplate"], False


def containers() -> Iterator[tuple[str, dict[str, Any], dict[str, Any], bool]]:
    for where, template, is_ray in pod_templates():
        for c in template["spec"].get("initContainers", []) + template["spec"]["containers"]:
            yield f"{where}/{c['name']}", c, template["spec"], is_ray


def ray_start_resources(value: str) -> dict[str, float]:
    """KubeRay's rayStartParams `resources` format: a JSON object inside a quoted string."""
    inner = value.strip()
    assert inner.startswith('"') and inner.endswith('"'), f"resources must be '\"{{...}}\"', got {value!r}"
    return json.loads(json.loads(inner))


def ray_start_labels(value: str) -> dict[str, str]:
    from ray._private.label_utils import parse_node_labels_string  # Ray's own parser of --labels

    return parse_node_labels_string(value)


# ---- files and kinds ----

def test_every_yaml_file_parses():
    files = sorted(K8S.rglob("*.yaml")) + sorted(K8S.rglob("*.yml"))
    assert files
    for path in files:
        assert _docs(path), f"{path} is empty"


def test_kustomization_lists_existing_files():
    k = kustomization()
    assert k["apiVersion"] == "kustomize.config.k8s.io/v1beta1" and k["kind"] == "Kustomization"
    for rel in k["resources"]:
        assert (K8S / rel).is_file(), rel
        assert not Path(rel).is_absolute() and ".." not in Path(rel).parts, f"{rel} is outside k8s/ (kustomize refuses)"
    for gen in k.get("configMapGenerator", []):
        for entry in gen["files"]:
            rel = entry.split("=", 1)[-1]
            assert (K8S / rel).is_file() and ".." not in Path(rel).parts, rel
    # Every manifest file under k8s/ is deployed (nothing forgotten), except the kustomization.
    listed = {(K8S / r).resolve() for r in k["resources"]}
    for path in K8S.rglob("*.yaml"):
        if path.name != "kustomization.yaml":
            assert path.resolve() in listed, f"{path.relative_to(ROOT)} is not in kustomization.yaml"


def test_kinds_and_api_versions():
    seen = {}
    for d in resources():
        assert d["kind"] in EXPECTED_KINDS, d["kind"]
        assert d["apiVersion"] == EXPECTED_KINDS[d["kind"]], (d["kind"], d["apiVersion"])
        seen[d["kind"]] = seen.get(d["kind"], 0) + 1
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", d["metadata"]["name"]), d["metadata"]["name"]
    assert set(seen) == set(EXPECTED_KINDS)
    assert seen["PodMonitor"] == 2  # head and workers


def test_ray_version_matches_the_pinned_ray():
    pin = re.search(r"^ray==(\S+)$", (ROOT / "constraints-dev.txt").read_text(), re.M)
    assert pin
    for owner, spec in ray_cluster_specs():
        assert spec["rayVersion"] == pin.group(1), owner


# ---- security and resources ----

def test_every_container_is_non_root_with_limits():
    n = 0
    for where, c, pod, _ in containers():
        n += 1
        sc = c.get("securityContext", {})
        assert sc.get("runAsNonRoot") is True and sc.get("runAsUser") == 1000, where
        assert sc.get("allowPrivilegeEscalation") is False, where
        assert sc.get("capabilities", {}).get("drop") == ["ALL"], where
        assert sc.get("readOnlyRootFilesystem") is True, where
        assert pod["securityContext"].get("runAsNonRoot") is True, where
        assert pod["securityContext"].get("seccompProfile", {}).get("type") == "RuntimeDefault", where
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(c["resources"].get(kind, {})), f"{where}: {kind} need cpu and memory"
        # A read-only root needs a writable /tmp (Ray's sockets, logs, object spilling).
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        assert "/tmp" in mounts and "emptyDir" in volumes[mounts["/tmp"]], f"{where}: /tmp must be an emptyDir"
        assert c["image"].split(":")[0] in IMAGES, f"{where}: image {c['image']}"
    assert n >= 7


def test_autoscalers_are_non_root_with_limits():
    for owner, spec in ray_cluster_specs():
        if not spec.get("enableInTreeAutoscaling"):
            continue
        opts = spec["autoscalerOptions"]
        assert {"cpu", "memory"} <= set(opts["resources"]["limits"]), owner
        assert opts["securityContext"]["runAsNonRoot"] is True, owner
        assert opts["securityContext"]["capabilities"]["drop"] == ["ALL"], owner


def test_token_auth_on_every_ray_pod_and_the_submitter():
    k = kustomization()
    (secret,) = [g for g in k["secretGenerator"] if g["name"] == AUTH_SECRET]
    key, rel = secret["files"][0].split("=", 1)
    assert key == "auth_token"
    # The token file is generated at deploy time and ignored by git, never committed.
    assert rel.startswith("secrets/")
    ignore = (K8S / "secrets" / ".gitignore").read_text().split()
    assert "*" in ignore and "!.gitignore" in ignore
    assert k["generatorOptions"]["disableNameSuffixHash"] is True  # referenced by name from CRs
    for owner, spec in ray_cluster_specs():
        assert spec["authOptions"] == {"mode": "token", "secretName": AUTH_SECRET}, owner
        env = {e["name"]: e for e in spec["autoscalerOptions"].get("env", [])}
        assert env["RAY_AUTH_MODE"]["value"] == "token", owner
    for where, c, _, _ in containers():
        env = {e["name"]: e for e in c.get("env", [])}
        assert env.get("RAY_AUTH_MODE", {}).get("value") == "token", where
        ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": AUTH_SECRET, "key": "auth_token"}, where


def test_network_policies():
    policies = {p["metadata"]["name"]: p["spec"] for p in by_kind("NetworkPolicy")}
    internal = policies["benchmatch-ray-internal"]
    assert internal["podSelector"]["matchLabels"] == {"app.kubernetes.io/part-of": "benchmatch"}
    assert internal["policyTypes"] == ["Ingress"]
    # Rule 1: any port, but only from benchmatch's pods.
    first = internal["ingress"][0]
    assert "ports" not in first and first["from"] == [{"podSelector": {"matchLabels": {"app.kubernetes.io/part-of": "benchmatch"}}}]
    # Every other rule is limited to ports and to labelled namespaces.
    for rule in internal["ingress"][1:]:
        assert rule["ports"] and all("namespaceSelector" in f for f in rule["from"])
    serve = policies["benchmatch-serve-clients"]
    assert [p["port"] for r in serve["ingress"] for p in r["ports"]] == [8000]
    assert all("namespaceSelector" in f for r in serve["ingress"] for f in r["from"])
    # Every pod is selected by the internal policy (it carries the label).
    for where, template, _ in pod_templates():
        assert template["metadata"]["labels"]["app.kubernetes.io/part-of"] == "benchmatch", where


def test_dockerfile_runs_as_non_root():
    text = (K8S / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert users[-1].split(":")[0] == "1000"
    assert re.search(r"^WORKDIR /app$", text, re.M) and "PYTHONPATH=/app" in text


# ---- entry points and import paths exist in this repository ----

def _module_file(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__main__.py", base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _repo_path(arg: str) -> Path:
    return ROOT / (arg[len(APP_DIR) + 1:] if arg.startswith(APP_DIR + "/") else arg)


def test_rayjob_entrypoint_exists_in_the_repo():
    for job in by_kind("RayJob"):
        argv = shlex.split(job["spec"]["entrypoint"])
        assert argv[:2] == ["python", "-m"], job["spec"]["entrypoint"]
        module = argv[2]
        assert _module_file(module) and (_module_file(module).name == "__main__.py" or
                                         _module_file(module).suffix == ".py"), f"no module {module}"
        for arg in argv[3:]:
            if arg.endswith((".yaml", ".yml", ".json")):
                assert _repo_path(arg).is_file(), f"{arg} does not exist in the repository"
        # The selected cluster exists in the manifests.
        selector = job["spec"].get("clusterSelector", {}).get("ray.io/cluster")
        if selector:
            assert selector in {c["metadata"]["name"] for c in by_kind("RayCluster")}


def _serve_config(service: dict[str, Any]) -> dict[str, Any]:
    return yaml.safe_load(service["spec"]["serveConfigV2"])


def test_rayservice_import_paths_exist():
    for service in by_kind("RayService"):
        for app in _serve_config(service)["applications"]:
            module, _, attr = app["import_path"].partition(":")
            path = _module_file(module)
            assert path, f"{app['import_path']}: no module file for {module}"
            tree = ast.parse(path.read_text())
            names = {n.name for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef)}
            names |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
            assert attr in names, f"{app['import_path']}: {module} defines no {attr}"
            catalog = app.get("args", {}).get("catalog_path")
            if catalog:
                assert _repo_path(catalog).is_file(), catalog


def test_rayservice_applications_equal_serve_config():
    source = ROOT / "serve" / "config.yaml"
    if not source.exists():
        pytest.skip("serve/config.yaml is not written yet")
    expected = yaml.safe_load(source.read_text())["applications"]
    for service in by_kind("RayService"):
        config = _serve_config(service)
        assert config["applications"] == expected, "k8s/rayservice.yaml is stale: run `python k8s/sync.py`"
        # On Kubernetes the proxies must listen beyond loopback for the serve Service to reach them.
        assert config["http_options"]["host"] == "0.0.0.0" and config["http_options"]["port"] == 8000


# ---- worker groups cover the sweep's hardware ----

def _group_hardware(group: dict[str, Any], catalog: dict[str, Any]) -> str | None:
    """The catalog entry a worker group serves, checked the way the sweep schedules trials."""
    params = group["rayStartParams"]
    resources = ray_start_resources(params.get("resources", '"{}"'))
    names = [r.split(":", 1)[1] for r in resources if r.startswith("accelerator_type:") and r.split(":", 1)[1] in catalog]
    if not names:
        return None
    assert len(names) == 1, f"{group['groupName']}: serves several catalog entries {names}"
    hw = catalog[names[0]]
    labels = ray_start_labels(params.get("labels", ""))
    # The node label: the profile's name for emulated local profiles (as cluster/local.py labels its
    # nodes), Ray's accelerator name for real accelerators (what Ray itself detects and sets).
    expected_label = hw.name if hw.local else hw.accelerator_type
    assert labels.get("ray.io/accelerator-type") == expected_label, group["groupName"]
    assert float(params["num-cpus"]) >= hw.cpu_cores, f"{group['groupName']}: fewer CPUs than {hw.name}"
    container = group["template"]["spec"]["containers"][0]
    gpus = int(container["resources"]["limits"].get("nvidia.com/gpu", 0))
    assert gpus == hw.device_count, f"{group['groupName']}: {gpus} GPUs, {hw.name} has {hw.device_count}"
    if gpus:
        assert group["template"]["spec"].get("nodeSelector"), f"{group['groupName']}: GPU group needs a node selector"
        assert container["image"].startswith("ghcr.io/OWNER/benchmatch-cuda:"), group["groupName"]
    assert group["template"]["metadata"]["labels"].get("benchmatch.io/hardware") == hw.name
    return hw.name


def test_worker_groups_serve_catalog_hardware_and_cover_the_quickstart():
    from benchmarks.spec import load_sweep
    from cluster.hardware import load_catalog

    catalog = load_catalog()
    (cluster,) = [c for c in by_kind("RayCluster") if c["metadata"]["name"] == "benchmatch"]
    served = {}
    for group in cluster["spec"]["workerGroupSpecs"]:
        hw = _group_hardware(group, catalog)
        assert hw, f"worker group {group['groupName']} advertises no catalog hardware"
        served[hw] = group["groupName"]
    assert any(catalog[h].device_count for h in served), "a GPU worker group is expected"
    quickstart = load_sweep(ROOT / "configs" / "quickstart.yaml")
    missing = [h for h in quickstart.hardware if h not in served]
    assert not missing, f"no worker group for {missing} of configs/quickstart.yaml"
    # The RayJob runs that sweep on that cluster.
    (job,) = by_kind("RayJob")
    assert "configs/quickstart.yaml" in job["spec"]["entrypoint"]
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == "benchmatch"


def test_head_schedules_no_trials():
    for owner, spec in ray_cluster_specs():
        assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0", owner


# ---- copies kustomize needs are in sync with their sources ----

def test_dashboard_copies_are_identical():
    src = {p.name: p.read_bytes() for p in (ROOT / "cluster" / "grafana" / "dashboards").glob("*.json")}
    dst = {p.name: p.read_bytes() for p in (K8S / "monitoring" / "dashboards").glob("*.json")}
    assert src and src == dst, "k8s/monitoring/dashboards is stale: run `python k8s/sync.py`"
    (gen,) = [g for g in kustomization()["configMapGenerator"] if g["name"] == "benchmatch-grafana-dashboards"]
    assert sorted(Path(f).name for f in gen["files"]) == sorted(src)
    assert gen["options"]["labels"]["grafana_dashboard"] == "1"


def test_prometheus_rule_equals_the_local_rules():
    from cluster.prometheus import RULE_FILES

    expected = [g for p in RULE_FILES for g in yaml.safe_load(p.read_text())["groups"]]
    (rule,) = by_kind("PrometheusRule")
    assert rule["spec"]["groups"] == expected, "k8s/monitoring/prometheusrule.yaml is stale: run `python k8s/sync.py`"


def test_pod_monitors_scrape_the_metrics_port_of_ray_pods():
    monitors = {m["metadata"]["name"]: m["spec"] for m in by_kind("PodMonitor")}
    node_types = {m["selector"]["matchLabels"]["ray.io/node-type"] for m in monitors.values()}
    assert node_types == {"head", "worker"}
    for spec in monitors.values():
        assert [e["port"] for e in spec["podMetricsEndpoints"]] == ["metrics"]
        assert spec["namespaceSelector"]["matchNames"] == [kustomization()["namespace"]]
    # Every Ray container exposes the port the monitors scrape, at the metrics-export-port Ray uses.
    for owner, spec in ray_cluster_specs():
        groups = [spec["headGroupSpec"], *spec.get("workerGroupSpecs", [])]
        for group in groups:
            ports = {p["name"]: p["containerPort"] for p in group["template"]["spec"]["containers"][0]["ports"]}
            assert ports.get("metrics") == int(group["rayStartParams"]["metrics-export-port"]), owner
