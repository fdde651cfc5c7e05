"""The Kubernetes Pod Security Standards (baseline and restricted, as of v1.30) checked on a pod
template: which controls a pod violates, so a test can say which level each overlay meets.
Written from https://kubernetes.io/docs/concepts/security/pod-security-standards/ ."""
from __future__ import annotations

from typing import Any

BASELINE_CAPS = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                 "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}


def _containers(spec: dict) -> list[dict]:
    return [*spec.get("initContainers", []), *spec.get("containers", []), *spec.get("ephemeralContainers", [])]


def baseline(spec: dict) -> list[str]:
    """Violations of the baseline level, one line each ('control: where')."""
    out = []
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            out.append(f"host namespaces: {key}")
    pod_sc = spec.get("securityContext", {})
    for v in spec.get("volumes", []):
        if "hostPath" in v:
            out.append(f"hostPath volumes: {v['name']} ({v['hostPath']['path']})")
    for s in pod_sc.get("sysctls", []):
        if s["name"] not in SAFE_SYSCTLS:
            out.append(f"sysctls: {s['name']}")
    if pod_sc.get("seccompProfile", {}).get("type") == "Unconfined":
        out.append("seccomp: pod Unconfined")
    if pod_sc.get("appArmorProfile", {}).get("type") == "Unconfined":
        out.append("AppArmor: pod Unconfined")
    if pod_sc.get("windowsOptions", {}).get("hostProcess"):
        out.append("HostProcess: pod")
    out += _selinux(pod_sc.get("seLinuxOptions", {}), "pod")
    for c in _containers(spec):
        sc, name = c.get("securityContext", {}), c["name"]
        if sc.get("privileged"):
            out.append(f"privileged containers: {name}")
        if sc.get("windowsOptions", {}).get("hostProcess"):
            out.append(f"HostProcess: {name}")
        extra = set(sc.get("capabilities", {}).get("add", [])) - BASELINE_CAPS
        if extra:
            out.append(f"capabilities: {name} adds {sorted(extra)}")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            out.append(f"host ports: {name}")
        if sc.get("procMount", "Default") != "Default":
            out.append(f"/proc mount type: {name}")
        if sc.get("seccompProfile", {}).get("type") == "Unconfined":
            out.append(f"seccomp: {name} Unconfined")
        if sc.get("appArmorProfile", {}).get("type") == "Unconfined":
            out.append(f"AppArmor: {name} Unconfined")
        out += _selinux(sc.get("seLinuxOptions", {}), name)
    return out


def _selinux(options: dict, where: str) -> list[str]:
    """SELinux: type only one of the container types; user and role never set."""
    bad = [k for k in ("user", "role") if options.get(k)]
    if options.get("type", "") not in ("", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"):
        bad.append("type")
    return [f"SELinux: {where} sets {', '.join(bad)}"] if bad else []


def restricted(spec: dict) -> list[str]:
    """Violations of the restricted level beyond baseline's, one line each."""
    out = []
    pod_sc = spec.get("securityContext", {})
    for v in spec.get("volumes", []):
        kind = next(k for k in v if k != "name")
        if kind not in RESTRICTED_VOLUMES:
            out.append(f"volume types: {v['name']} is {kind}")
    for c in _containers(spec):
        sc, name = c.get("securityContext", {}), c["name"]
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"privilege escalation: {name} does not set allowPrivilegeEscalation: false")
        non_root = sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot"))
        if non_root is not True:
            out.append(f"running as non-root: {name}")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            out.append(f"running as non-root user: {name} runs as uid 0")
        seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {})).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"seccomp: {name} has no RuntimeDefault or Localhost profile")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []):
            out.append(f"capabilities: {name} does not drop ALL")
        if set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            out.append(f"capabilities: {name} adds {sorted(set(caps['add']) - {'NET_BIND_SERVICE'})}")
    if pod_sc.get("runAsUser") == 0:  # even where every container sets its own
        out.append("running as non-root user: pod runAsUser 0")
    return out


def level(spec: dict[str, Any]) -> str:
    """The strictest level a pod meets: restricted, baseline or privileged."""
    if baseline(spec):
        return "privileged"
    return "baseline" if restricted(spec) else "restricted"
