"""The Kubernetes manifests: every overlay renders with `kubectl kustomize` and validates offline
against the Kubernetes schemas; the Pod Security level of each is what docs/security.md says,
with every control but hostPath (and root where the PodResources socket needs it) at the
restricted level; the PrometheusRule and the dashboard ConfigMaps are the generated rules and
dashboards; the ServiceMonitor selects the Service and keeps the job labels."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

import pod_security
from conftest import require_binary
from gpu_carbon_exporter import __version__
from gpu_carbon_exporter.config import load_config
from gpu_carbon_exporter.mixin import prometheus_rule, render, rule_files

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "kubernetes"
RENDERED = ["namespace", "base", "overlays/datacenter", "overlays/edge", "examples/kube-prometheus-stack"]
IMAGE = f"ghcr.io/gpu-carbon-exporter/gpu-carbon-exporter:{__version__}"
KUBERNETES_VERSIONS = ["1.29", kubernetes_validate.latest_version()]


def build(path: str) -> list[dict]:
    out = subprocess.run([require_binary("kubectl"), "kustomize", str(K8S / path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {path: build(path) for path in RENDERED}


def one(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, len(found))
    return found[0]


def pod(docs: list[dict]) -> dict:
    return one(docs, "DaemonSet")["spec"]["template"]["spec"]


@pytest.mark.parametrize("path", RENDERED)
def test_every_object_validates_against_the_kubernetes_schemas(rendered, path):
    assert rendered[path]
    for doc in rendered[path]:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # CRDs: checked below (promtool for the rules, the ServiceMonitor by its fields)
        for version in KUBERNETES_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_validator_rejects_a_broken_daemonset(rendered):
    ds = json.loads(json.dumps(one(rendered["base"], "DaemonSet")))
    ds["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}  # a typo
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(ds, KUBERNETES_VERSIONS[-1], strict=True)


# What keeps each pod from the restricted level: hostPath volumes, which also rule out baseline,
# and uid 0 where the kubelet's PodResources socket needs it (its owner, root, holds no capability).
EXPECTED = {
    "base": {"hostPath volumes: state (/var/lib/gpu-carbon-exporter)"},
    "overlays/datacenter": {"hostPath volumes: state (/var/lib/gpu-carbon-exporter)",
                            "hostPath volumes: pod-resources (/var/lib/kubelet/pod-resources)",
                            "hostPath volumes: host-proc (/proc)"},
    "overlays/edge": {"hostPath volumes: state (/var/lib/gpu-carbon-exporter)", "hostPath volumes: host-sys (/sys)"},
}
EXPECTED_RESTRICTED = {
    "base": {"running as non-root: state-owner", "running as non-root user: state-owner runs as uid 0",
             "capabilities: state-owner adds ['CHOWN']"},
    "overlays/datacenter": {"running as non-root: exporter", "running as non-root user: exporter runs as uid 0",
                            "running as non-root user: pod runAsUser 0"},
}
EXPECTED_RESTRICTED["overlays/edge"] = EXPECTED_RESTRICTED["base"]


@pytest.mark.parametrize("path", list(EXPECTED))
def test_pod_security_level_is_the_documented_one(rendered, path):
    spec = pod(rendered[path])
    assert set(pod_security.baseline(spec)) == EXPECTED[path]
    hostpath = {f"volume types: {v['name']} is hostPath" for v in spec["volumes"] if "hostPath" in v}
    assert set(pod_security.restricted(spec)) == hostpath | EXPECTED_RESTRICTED[path]
    overlay = path.split("/")[-1]
    doc = (ROOT / "docs" / "security.md").read_text()
    assert re.search(rf"^\| `{overlay}` \| {pod_security.level(spec)} \|", doc, re.M), overlay
    (ns,) = rendered["namespace"]  # the namespace admits that level, and warns of what restricted misses
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == pod_security.level(spec)
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/warn"] == "restricted"


def test_the_pod_security_checker_finds_what_it_looks_for():
    bad = {"hostPID": True, "volumes": [{"name": "x", "hostPath": {"path": "/"}}],
           "containers": [{"name": "c", "securityContext": {"privileged": True,
                                                            "capabilities": {"add": ["SYS_ADMIN"]}}}]}
    assert pod_security.level(bad) == "privileged" and len(pod_security.baseline(bad)) == 4
    assert pod_security.level({"containers": [{"name": "c"}]}) == "baseline"
    selinux = {"securityContext": {"seLinuxOptions": {"user": "root"}}, "containers": [{"name": "c"}]}
    assert pod_security.baseline(selinux) == ["SELinux: pod sets user"]


@pytest.mark.parametrize("path", list(EXPECTED))
def test_containers_hold_no_privilege(rendered, path):
    spec = pod(rendered[path])
    assert not any(spec.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        sc = c["securityContext"]
        assert sc.get("privileged") in (None, False) and sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"]["drop"] == ["ALL"]
        assert set(sc["capabilities"].get("add", [])) <= ({"CHOWN"} if c["name"] == "state-owner" else set())
        assert c["image"] == IMAGE and c["resources"]["limits"] and c["resources"]["requests"]
    exporter = one_container(spec, "exporter")
    assert exporter["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert exporter["livenessProbe"]["httpGet"]["path"] == "/healthz"
    mounts = {m["name"]: m for m in exporter["volumeMounts"]}
    for v in spec["volumes"]:  # host paths are read-only, but for the state
        if "hostPath" in v and v["name"] != "state":
            assert mounts[v["name"]]["readOnly"] is True, v["name"]
    env = {e["name"]: e for e in exporter["env"]}
    assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"


def one_container(spec: dict, name: str) -> dict:
    return next(c for c in spec["containers"] if c["name"] == name)


def test_overlays_select_their_nodes_and_configure_their_sources(rendered, tmp_path):
    dc, edge = pod(rendered["overlays/datacenter"]), pod(rendered["overlays/edge"])
    assert dc["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert any(t["key"] == "nvidia.com/gpu" for t in dc["tolerations"])
    assert edge["nodeSelector"]["kubernetes.io/arch"] == "arm64"
    assert edge["containers"][0]["resources"]["requests"]["memory"] == "32Mi"
    for path, want in (("overlays/datacenter", {"proc_root": "/host/proc"}), ("overlays/edge", {"enabled": False})):
        cm = next(d for d in rendered[path] if d["kind"] == "ConfigMap")
        (tmp_path / "config.yml").write_text(cm["data"]["config.yml"])
        cfg = load_config(str(tmp_path / "config.yml"))  # a bad key would raise, naming it
        for key, value in want.items():
            assert cfg["attribution"][key] == value
        assert cfg["state"]["path"] == "/var/lib/gpu-carbon-exporter/state.json"


def test_prometheusrule_is_the_generated_rules(rendered):
    committed = (K8S / "components" / "kube-prometheus-stack" / "prometheusrule.yaml").read_text()
    assert committed == render(prometheus_rule(rule_files())), \
        "run: gpu-carbon-exporter rules --prometheusrule " \
        "deploy/kubernetes/components/kube-prometheus-stack/prometheusrule.yaml"
    rule = one(rendered["examples/kube-prometheus-stack"], "PrometheusRule")
    on_disk = [g for f in sorted((ROOT / "prometheus" / "rules").glob("*.yml"))
               for g in yaml.safe_load(f.read_text())["groups"]]
    assert sorted(g["name"] for g in rule["spec"]["groups"]) == sorted(g["name"] for g in on_disk)
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_prometheusrule_passes_promtool(rendered, tmp_path):
    rule = one(rendered["examples/kube-prometheus-stack"], "PrometheusRule")
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    out = subprocess.run([require_binary("promtool"), "check", "rules", str(tmp_path / "rules.yml")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_configmaps_are_the_dashboards(rendered):
    maps = [d for d in rendered["examples/kube-prometheus-stack"]
            if d["kind"] == "ConfigMap" and d["metadata"].get("labels", {}).get("grafana_dashboard") == "1"]
    files = {p.name: p.read_text() for p in (ROOT / "grafana" / "dashboards").glob("*.json")}
    got = {name: text for m in maps for name, text in m["data"].items()}
    assert got == files


def test_servicemonitor_scrapes_each_pod_once_and_keeps_job_labels(rendered):
    """Both overlays in one namespace (the example): the ServiceMonitor selects both Services, and
    each Service selects its own overlay's pods only, so no pod is scraped twice."""
    docs = rendered["examples/kube-prometheus-stack"]
    sm = one(docs, "ServiceMonitor")
    services = [d for d in docs if d["kind"] == "Service"]
    daemonsets = [d for d in docs if d["kind"] == "DaemonSet"]
    assert len(services) == len(daemonsets) == 2
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    (endpoint,) = sm["spec"]["endpoints"]
    assert endpoint["honorLabels"] is True
    assert {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node", "action": "replace"} \
        in endpoint["relabelings"]
    for svc in services:
        labels = svc["metadata"]["labels"]
        assert sm["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert labels[sm["spec"]["jobLabel"]] == "gpu-carbon-exporter"  # one job name: the alerts' selector
        assert sm["metadata"]["namespace"] == svc["metadata"]["namespace"]
        assert endpoint["port"] in {p["name"] for p in svc["spec"]["ports"]}
        assert svc["spec"]["clusterIP"] == "None"
        selected = [ds for ds in daemonsets
                    if svc["spec"]["selector"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()]
        assert len(selected) == 1, svc["metadata"]["name"]
    assert yaml.safe_load((ROOT / "prometheus" / "rules" / "gpu-carbon-alerts.yml").read_text()) \
        and 'job="gpu-carbon-exporter"' in (ROOT / "prometheus" / "rules" / "gpu-carbon-alerts.yml").read_text()


def test_the_exporter_never_exposes_a_label_honor_labels_would_let_it_override():
    """honorLabels keeps the exporter's labels on a clash: of the labels Prometheus and the
    ServiceMonitor put on a target, the exporter exposes only a job's pod and namespace."""
    import sys

    out = subprocess.run([sys.executable, "-m", "gpu_carbon_exporter", "--simulate", "jobs-mix", "--once",
                          "--once.duration", "1"], capture_output=True, text=True, timeout=120)
    labels = set(re.findall(r"[{,]([a-z_]+)=\"", out.stdout))
    assert {"pod", "namespace", "job_id", "gpu"} <= labels  # the exposition was read
    target = {"job", "instance", "node", "service", "endpoint", "container", "cluster", "site", "fleet",
              "pod", "namespace"}
    assert labels & target == {"pod", "namespace"}
