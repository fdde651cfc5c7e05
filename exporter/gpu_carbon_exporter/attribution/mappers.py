"""Mapping GPUs and their processes to jobs.

Each mapper answers, for one GPU (or MIG instance) and the processes NVML lists on
it, which jobs hold it, or ``None`` when it has no opinion (the next mapper is
asked). Every data source is injectable: the /proc root, the mapping directory,
the kubelet socket.
"""
from __future__ import annotations

import logging
import os
import pwd
import re
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from ..plugins import MapperContext, register
from ..sources.base import DeviceIdentity, MigInstance, ProcessInfo
from .model import Holder, Job

log = logging.getLogger(__name__)


@dataclass
class Teams:
    """Who pays: namespace -> team, Slurm account -> team, user -> team (first match wins)."""

    by_namespace: dict[str, str]
    by_account: dict[str, str]
    by_user: dict[str, str]

    def of(self, namespace: str = "", account: str = "", user: str = "") -> str:
        return (self.by_namespace.get(namespace) or self.by_account.get(account)
                or self.by_user.get(user) or "")


class Mapper(ABC):
    name = "mapper"

    def refresh(self) -> None:
        """Called once per sample before any ``holders`` call."""

    @abstractmethod
    def holders(self, device: DeviceIdentity, mig: MigInstance | None,
                procs: list[ProcessInfo]) -> list[Holder] | None:
        """The jobs holding this GPU (or MIG instance), or None for no opinion."""


def _group(pairs: list[tuple[Job, ProcessInfo]]) -> list[Holder]:
    by: dict[str, Holder] = {}
    for job, p in pairs:
        h = by.setdefault(job.key, Holder(job))
        h.pids.add(p.pid)
        if p.sm_util_pct is not None:
            h.sm_util = (h.sm_util or 0) + p.sm_util_pct
        if p.used_memory_bytes is not None:
            h.memory_bytes = (h.memory_bytes or 0) + p.used_memory_bytes
    # a signal is only usable if every process of the holder reported it
    for job, p in pairs:
        h = by[job.key]
        if p.sm_util_pct is None:
            h.sm_util = None
        if p.used_memory_bytes is None:
            h.memory_bytes = None
    return list(by.values())


class _PidMapper(Mapper):
    """Base for mappers that map each process, through /proc, to a job."""

    def __init__(self, proc_root: str | Path = "/proc", expose_user: bool = False, teams: Teams | None = None) -> None:
        self.proc, self.expose_user = Path(proc_root), expose_user
        self.teams = teams or Teams({}, {}, {})
        self._cache: dict[int, Job | None] = {}
        self._seen: set[int] = set()

    def refresh(self) -> None:
        """Keep the job of every pid still on a GPU (a pid's job never changes while it lives);
        forget pids that left, so a reused pid is looked up afresh."""
        self._cache = {pid: job for pid, job in self._cache.items() if pid in self._seen}
        self._seen = set()

    def _uid(self, pid: int) -> int | None:
        try:
            for line in (self.proc / str(pid) / "status").read_text().splitlines():
                if line.startswith("Uid:"):
                    return int(line.split()[1])
        except (OSError, ValueError, IndexError):
            pass
        return None

    def _cgroup_paths(self, pid: int, marker: str) -> list[str]:
        """The cgroup paths of a process that contain ``marker`` (v1 and v2 lines alike)."""
        try:
            text = (self.proc / str(pid) / "cgroup").read_text()
        except OSError:
            return []
        return [p for p in (line.split(":", 2)[-1] for line in text.splitlines()) if marker in p]

    def _user(self, uid: int | None) -> str:
        if not self.expose_user or uid is None:
            return ""
        try:
            return pwd.getpwuid(uid).pw_name
        except KeyError:
            return str(uid)

    @abstractmethod
    def job_of(self, pid: int) -> Job | None:
        """The job of one process, or None."""

    def holders(self, device: DeviceIdentity, mig: MigInstance | None,
                procs: list[ProcessInfo]) -> list[Holder] | None:
        pairs = []
        for p in procs:
            self._seen.add(p.pid)
            if p.pid not in self._cache:
                self._cache[p.pid] = self.job_of(p.pid)
            if self._cache[p.pid] is not None:
                pairs.append((self._cache[p.pid], p))
        return _group(pairs) if pairs else None


SLURM_CGROUP = re.compile(r"(?:/uid_(?P<uid>\d+))?/job_(?P<job>[^/]+)(?:/step_(?P<step>[^/]+))?")


class SlurmCgroupMapper(_PidMapper):
    """Slurm job (and step) from /proc/<pid>/cgroup: v1 ``/slurm/uid_U/job_J/step_S`` and
    v2 ``…/slurmstepd.scope/job_J/step_S/…``. Optionally the account from the environment."""

    name = "slurm"

    def __init__(self, proc_root: str | Path = "/proc", *, read_environ: bool = False, **kw) -> None:
        super().__init__(proc_root, **kw)
        self.read_environ = read_environ

    def job_of(self, pid: int) -> Job | None:
        for path in self._cgroup_paths(pid, "slurm"):
            m = SLURM_CGROUP.search(path)
            if m:
                uid = int(m["uid"]) if m["uid"] else self._uid(pid)
                env = slurm_environ(self.proc, pid) if self.read_environ else {}
                user = self._user(uid)
                account = env.get("SLURM_JOB_ACCOUNT", "")
                return Job(m["job"], "slurm", user=user, account=account,
                           team=self.teams.of(account=account, user=user))
        return None


def slurm_environ(proc: Path, pid: int) -> dict[str, str]:
    """SLURM_* variables of a process (empty when not permitted)."""
    try:
        raw = (proc / str(pid) / "environ").read_bytes()
    except OSError:
        return {}
    out = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep and key.startswith(b"SLURM_"):
            out[key.decode(errors="replace")] = value.decode(errors="replace")
    return out


class SlurmEnvMapper(_PidMapper):
    """Slurm job from ``SLURM_JOB_ID`` in /proc/<pid>/environ (needs permission to read it)."""

    name = "slurm_environ"

    def job_of(self, pid: int) -> Job | None:
        env = slurm_environ(self.proc, pid)
        if "SLURM_JOB_ID" not in env:
            return None
        user = env.get("SLURM_JOB_USER", "") if self.expose_user else ""
        account = env.get("SLURM_JOB_ACCOUNT", "")
        return Job(env["SLURM_JOB_ID"], "slurm", user=user, account=account,
                   team=self.teams.of(account=account, user=env.get("SLURM_JOB_USER", "")))


K8S_POD = re.compile(r"pod(?P<uid>[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
K8S_CONTAINER = re.compile(r"(?:cri-containerd-|crio-|docker-)?(?P<id>[0-9a-f]{64})(?:\.scope)?$")


class KubernetesCgroupMapper(_PidMapper):
    """Pod UID and container id from a process's cgroup (cgroupfs and systemd drivers;
    containerd, CRI-O and docker ids). Needs hostPID; the job id is the pod UID."""

    name = "kubernetes_cgroup"

    def job_of(self, pid: int) -> Job | None:
        for path in self._cgroup_paths(pid, "kubepods"):
            pod = K8S_POD.search(path)
            if pod:
                container = K8S_CONTAINER.search(path.rstrip("/"))
                return Job(pod["uid"].replace("_", "-"), "kubernetes",
                           container=container["id"][:12] if container else "")
        return None


class ProcessMapper(_PidMapper):
    """Plain processes, attributed to their user (uid); only when configured."""

    name = "process"

    def job_of(self, pid: int) -> Job | None:
        uid = self._uid(pid)
        if uid is None:
            return None
        user = self._user(uid)
        return Job(f"uid-{uid}", "process", user=user, team=self.teams.of(user=user))


class MappingDirMapper(Mapper):
    """Job ids from files, drop-in compatible with dcgm-exporter's ``--hpc-job-mapping-dir``
    (files ``<gpu index>`` or ``<gpu index>.<gpu instance id>``, one job id per line) and with
    Princeton jobstats' ``/run/gpustat/<ordinal|GPU-UUID|MIG-UUID>`` (``jobid uid``)."""

    name = "mapping_dir"

    def __init__(self, directory: str | Path, expose_user: bool = False, teams: Teams | None = None) -> None:
        self.dir, self.expose_user = Path(directory), expose_user
        self.teams = teams or Teams({}, {}, {})

    def holders(self, device: DeviceIdentity, mig: MigInstance | None,
                procs: list[ProcessInfo]) -> list[Holder] | None:
        if mig is None:
            names = [str(device.index), device.uuid]
        elif mig.gpu_instance_id is None:  # no id from NVML: only the MIG UUID can name it
            names = [mig.uuid]
        else:
            names = [f"{device.index}.{mig.gpu_instance_id}", mig.uuid]
        for name in names:
            try:
                text = (self.dir / name).read_text()
            except OSError:
                continue
            holders = []
            for line in text.splitlines():
                fields = line.split()
                if not fields:
                    continue
                user = fields[1] if len(fields) > 1 and self.expose_user else ""
                holders.append(Holder(Job(fields[0], "slurm", user=user,
                                          team=self.teams.of(user=fields[1] if len(fields) > 1 else ""))))
            if holders:
                mine = [p for p in procs if mig is None or p.gpu_instance_id in (None, mig.gpu_instance_id)]
                if len(holders) == 1:  # the processes on it are that job's
                    holders = _group([(holders[0].job, p) for p in mine]) or holders
                return holders
        return None


class KubernetesPodResourcesMapper(Mapper):
    """Pods per GPU from the kubelet PodResources v1 API (``List``), over its unix socket.

    Works without hostPID. GPUs shared by several pods (time-slicing) are split equally:
    the API names pods, not their processes. The kubelet is asked every ``refresh_s`` on the
    mapper's own thread; samples use its latest answer and never wait for the kubelet."""

    name = "kubernetes"

    def __init__(self, socket: str = "/var/lib/kubelet/pod-resources/kubelet.sock", *, refresh_s: float = 10.0,
                 timeout_seconds: float = 5.0, teams: Teams | None = None, clock=time.monotonic) -> None:
        self.socket, self.refresh_s, self.timeout_seconds, self.clock = socket, refresh_s, timeout_seconds, clock
        self.teams = teams or Teams({}, {}, {})
        self._by_device: dict[str, list[Job]] = {}
        self._thread: threading.Thread | None = None
        self.fetched = threading.Event()  # set after each fetch attempt
        self._stop = threading.Event()
        self.calls = 0
        self.healthy = True

    def refresh(self) -> None:
        """Starts the kubelet poller on first use; never waits for the kubelet (its own thread does)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="kubelet-podresources", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._fetch()
            except Exception:  # a decoding bug: logged, this mapper unhealthy, thread alive
                self.healthy = False
                log.exception("kubelet PodResources at %s: unexpected error", self.socket)
            self.fetched.set()
            self._stop.wait(self.refresh_s)

    def close(self) -> None:
        self._stop.set()

    def _fetch(self) -> None:
        from .podresources import list_pod_resources

        self.calls += 1
        try:
            pods = list_pod_resources(self.socket, self.timeout_seconds)
        except Exception as err:  # noqa: BLE001 - any kubelet failure degrades this mapper only
            if self.healthy:
                log.error("kubelet PodResources at %s: %s", self.socket, err)
            self.healthy = False
            return
        self.healthy = True
        by: dict[str, list[Job]] = {}
        for pod in pods:
            for container in pod.containers:
                for dev in container.devices:
                    if not dev.resource_name.startswith("nvidia.com/"):
                        continue
                    job = Job(f"{pod.namespace}/{pod.name}", "kubernetes", namespace=pod.namespace, pod=pod.name,
                              container=container.name, team=self.teams.of(namespace=pod.namespace))
                    for device_id in dev.device_ids:
                        uuid = device_id.split("::", 1)[0]  # time-slicing replicas: GPU-uuid::N
                        if all(j.key != job.key for j in by.get(uuid, [])):
                            by.setdefault(uuid, []).append(job)
        self._by_device = by  # one assignment: readers see the old or the new mapping, never half

    def holders(self, device: DeviceIdentity, mig: MigInstance | None,
                procs: list[ProcessInfo]) -> list[Holder] | None:
        jobs = self._by_device.get(mig.uuid if mig else device.uuid)
        if not jobs:
            return None
        if len(jobs) == 1:
            return _group([(jobs[0], p) for p in procs]) or [Holder(jobs[0])]
        return [Holder(j) for j in jobs]


def _pid_kw(acfg: dict, ctx: MapperContext) -> dict:
    return {"expose_user": acfg["expose_user"], "teams": ctx.teams}


register("mapper", "slurm",
         lambda a, c: SlurmCgroupMapper(c.proc_root, read_environ=a["slurm_environ"], **_pid_kw(a, c)),
         "Slurm jobs from process cgroups (v1 and v2)", auto=lambda a: True,
         schema={"proc_root": (str, "/proc", None), "slurm_environ": (bool, False, None)})
register("mapper", "slurm_environ", lambda a, c: SlurmEnvMapper(c.proc_root, **_pid_kw(a, c)),
         "Slurm jobs from process environments (SLURM_JOB_ID)")
register("mapper", "mapping_dir", lambda a, c: MappingDirMapper(a["mapping_dir"], **_pid_kw(a, c)),
         "dcgm-exporter / jobstats mapping files",
         auto=lambda a: bool(a["mapping_dir"]) and os.path.isdir(a["mapping_dir"]),
         schema={"mapping_dir": (str, None, None)})
register("mapper", "kubernetes", lambda a, c: KubernetesPodResourcesMapper(a["kubelet_socket"], teams=c.teams),
         "Kubernetes pods from the kubelet PodResources API", auto=lambda a: os.path.exists(a["kubelet_socket"]),
         schema={"kubelet_socket": (str, "/var/lib/kubelet/pod-resources/kubelet.sock", None)})
register("mapper", "kubernetes_cgroup", lambda a, c: KubernetesCgroupMapper(c.proc_root, **_pid_kw(a, c)),
         "Kubernetes pods from container cgroups (needs hostPID)")
register("mapper", "process", lambda a, c: ProcessMapper(c.proc_root, **_pid_kw(a, c)),
         "plain processes, one job per process (by user)")
