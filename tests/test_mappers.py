"""Mappers against /proc and cgroup trees laid out like real Slurm and Kubernetes nodes,
mapping-file directories, and a real gRPC PodResources server on a unix socket."""
import importlib
import sys
import threading
from concurrent import futures
from pathlib import Path

import grpc
import pytest

from gpu_carbon_exporter.attribution.mappers import (KubernetesCgroupMapper, KubernetesPodResourcesMapper,
                                                     MappingDirMapper, ProcessInfo, ProcessMapper,
                                                     SlurmCgroupMapper, SlurmEnvMapper, Teams)
from gpu_carbon_exporter.sources.base import DeviceIdentity, MigInstance

GPU = DeviceIdentity(0, "GPU-aaaa1111-2222-3333-4444-555566667777", "NVIDIA H100 80GB HBM3")
MIG = MigInstance("MIG-bbbb1111-2222-3333-4444-555566667777", 3, 0, 1)


def proc(root: Path, pid: int, cgroup: str, uid: int = 1000, environ: dict | None = None) -> None:
    d = root / str(pid)
    d.mkdir(parents=True)
    (d / "cgroup").write_text(cgroup)
    (d / "status").write_text(f"Name:\tpython\nState:\tS (sleeping)\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")
    if environ is not None:
        (d / "environ").write_bytes(b"\0".join(f"{k}={v}".encode() for k, v in environ.items()) + b"\0")


SLURM_V1 = """12:pids:/slurm/uid_1234/job_81234/step_0/task_0
11:memory:/slurm/uid_1234/job_81234/step_0/task_0
5:devices:/slurm/uid_1234/job_81234/step_0
1:name=systemd:/system.slice/slurmd.service
"""
SLURM_V2 = "0::/system.slice/slurmstepd.scope/job_90001/step_batch/user/task_0\n"


def test_slurm_cgroup_v1_and_v2_with_sm_split(tmp_path):
    proc(tmp_path, 4001, SLURM_V1, uid=1234)
    proc(tmp_path, 4002, SLURM_V2, uid=1500, environ={"SLURM_JOB_ID": "90001", "SLURM_JOB_ACCOUNT": "physics"})
    proc(tmp_path, 4003, "0::/user.slice/user-1000.slice/session-3.scope\n")  # not a Slurm process
    m = SlurmCgroupMapper(tmp_path, read_environ=True, teams=Teams({}, {"physics": "team-phys"}, {}))
    holders = m.holders(GPU, None, [ProcessInfo(4001, 10**9, 30), ProcessInfo(4002, 3 * 10**9, 60),
                                    ProcessInfo(4003, 10**8, 5)])
    by = {h.job.id: h for h in holders}
    assert set(by) == {"81234", "90001"}
    assert by["81234"].sm_util == 30 and by["90001"].memory_bytes == 3 * 10**9
    assert by["90001"].job.account == "physics" and by["90001"].job.team == "team-phys"
    assert by["81234"].job.user == "" and by["90001"].job.user == ""  # privacy: no user names by default


def test_slurm_user_label_only_when_configured(tmp_path):
    proc(tmp_path, 7, SLURM_V2, uid=0)  # cgroup v2 has no uid in the path: /proc/<pid>/status has it
    holders = SlurmCgroupMapper(tmp_path, expose_user=True).holders(GPU, None, [ProcessInfo(7)])
    assert holders[0].job.user == "root"
    holders = SlurmCgroupMapper(tmp_path, expose_user=False).holders(GPU, None, [ProcessInfo(7)])
    assert holders[0].job.user == ""


def test_slurm_from_environment(tmp_path):
    proc(tmp_path, 10, "0::/\n", environ={"SLURM_JOB_ID": "555", "SLURM_JOB_USER": "ann", "PATH": "/bin"})
    proc(tmp_path, 11, "0::/\n", environ={"PATH": "/bin"})
    holders = SlurmEnvMapper(tmp_path, teams=Teams({}, {}, {"ann": "ml"})).holders(
        GPU, None, [ProcessInfo(10), ProcessInfo(11)])
    assert [(h.job.id, h.job.team, h.job.user) for h in holders] == [("555", "ml", "")]


K8S_TREES = {
    "cgroupfs-docker": "0::/kubepods/burstable/pod7f4b1c2a-9e3d-4b5a-8c7d-112233445566/"
                       "3f2a1b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708\n",
    "systemd-containerd": "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod7f4b1c2a_9e3d_4b5a_8c7d_"
                          "112233445566.slice/cri-containerd-3f2a1b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3"
                          "c4d5e6f708.scope\n",
    "systemd-crio": "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod7f4b1c2a_9e3d_4b5a_8c7d_"
                    "112233445566.slice/crio-3f2a1b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708.scope\n",
    "v1-systemd-docker": "11:memory:/kubepods.slice/kubepods-pod7f4b1c2a_9e3d_4b5a_8c7d_112233445566.slice/docker-"
                         "3f2a1b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708.scope\n",
}


@pytest.mark.parametrize("tree", sorted(K8S_TREES))
def test_kubernetes_container_cgroups(tmp_path, tree):
    proc(tmp_path, 321, K8S_TREES[tree])
    (h,) = KubernetesCgroupMapper(tmp_path).holders(GPU, None, [ProcessInfo(321, sm_util_pct=40)])
    assert h.job.id == "7f4b1c2a-9e3d-4b5a-8c7d-112233445566" and h.job.scheduler == "kubernetes"
    assert h.job.container == "3f2a1b4c5d6e"


def test_plain_process_by_uid(tmp_path):
    proc(tmp_path, 50, "0::/user.slice\n", uid=2001)
    (h,) = ProcessMapper(tmp_path).holders(GPU, None, [ProcessInfo(50)])
    assert (h.job.id, h.job.scheduler, h.job.user) == ("uid-2001", "process", "")


def test_dcgm_mapping_dir_with_shared_gpu_and_mig(tmp_path):
    (tmp_path / "0").write_text("1001\n1002\n")  # two jobs share GPU 0
    (tmp_path / "1.3").write_text("2001\n")  # GPU 1, GPU instance 3
    m = MappingDirMapper(tmp_path)
    assert [h.job.id for h in m.holders(GPU, None, [])] == ["1001", "1002"]
    gpu1 = DeviceIdentity(1, "GPU-x", "H100", mig_enabled=True, mig_instances=(MIG,))
    (h,) = m.holders(gpu1, MIG, [ProcessInfo(9, 5, 50, gpu_instance_id=3), ProcessInfo(8, 5, 50, gpu_instance_id=4)])
    assert h.job.id == "2001" and h.pids == {9}
    assert m.holders(DeviceIdentity(2, "GPU-y", "H100"), None, []) is None


def test_jobstats_mapping_dir_by_uuid(tmp_path):
    (tmp_path / GPU.uuid).write_text("424242 1500\n")
    (tmp_path / MIG.uuid).write_text("535353 1600\n")
    m = MappingDirMapper(tmp_path, expose_user=True, teams=Teams({}, {}, {"1500": "bio"}))
    (h,) = m.holders(DeviceIdentity(7, GPU.uuid, "H100"), None, [])
    assert (h.job.id, h.job.user, h.job.team) == ("424242", "1500", "bio")
    (h,) = m.holders(DeviceIdentity(7, "GPU-z", "H100"), MIG, [])
    assert h.job.id == "535353"


def test_slurm_prolog_and_epilog_write_and_remove_mapping_files(tmp_path):
    import os
    import subprocess
    root = Path(__file__).resolve().parent.parent / "deploy" / "slurm"
    work = tmp_path.parent / f"{tmp_path.name}-work"
    env = {**os.environ, "SLURM_JOB_ID": "777", "SLURM_JOB_UID": "1500", "SLURM_JOB_GPUS": "0,2",
           "GPU_CARBON_MAPPING_DIR": str(tmp_path), "GPU_CARBON_WORK_DIR": str(work)}
    subprocess.run(["bash", str(root / "prolog.sh")], env=env, check=True)
    assert (tmp_path / "0").read_text() == "777 1500\n" and (tmp_path / "2").read_text() == "777 1500\n"
    # the job's own units-of-work file: empty, owned by its user, in a directory only root writes
    st = (work / "777").stat()
    assert (st.st_uid, st.st_size, oct(st.st_mode & 0o777), oct(work.stat().st_mode & 0o777)) == \
        (1500, 0, "0o644", "0o755")
    m = MappingDirMapper(tmp_path)
    assert m.holders(DeviceIdentity(2, "GPU-q", "H100"), None, [])[0].job.id == "777"
    subprocess.run(["bash", str(root / "epilog.sh")], env=env, check=True)
    assert not any(tmp_path.iterdir())


# -- the real gRPC PodResources server ---------------------------------------------
@pytest.fixture(scope="module")
def pb(tmp_path_factory):
    """Python classes generated by protoc (grpcio-tools) from the v1 proto: an independent encoder."""
    from grpc_tools import protoc
    out = tmp_path_factory.mktemp("pb")
    proto = Path(__file__).parent / "fixtures" / "podresources_v1.proto"
    rc = protoc.main(["protoc", f"-I{proto.parent}", f"--python_out={out}", str(proto)])
    assert rc == 0
    sys.path.insert(0, str(out))
    yield importlib.import_module("podresources_v1_pb2")
    sys.path.remove(str(out))


@pytest.fixture
def kubelet(pb, tmp_path):
    resp = pb.ListPodResourcesResponse()
    p = resp.pod_resources.add(name="trainer-0", namespace="ml-research")
    c = p.containers.add(name="main")
    c.devices.add(resource_name="nvidia.com/gpu", device_ids=[GPU.uuid])
    c.devices.add(resource_name="example.com/nic", device_ids=["nic0"])
    for name in ("infer-a", "infer-b"):  # time-sliced replicas of one GPU
        q = resp.pod_resources.add(name=name, namespace="serving")
        q.containers.add(name="server").devices.add(resource_name="nvidia.com/gpu",
                                                    device_ids=[f"GPU-shared::{name[-1]}"])
    m = resp.pod_resources.add(name="notebook", namespace="ml-research")
    m.containers.add(name="jupyter").devices.add(resource_name="nvidia.com/mig-1g.10gb", device_ids=[MIG.uuid])
    calls = []
    slow, release = threading.Event(), threading.Event()

    def list_rpc(request, context):
        calls.append(request)
        if slow.is_set():
            release.wait(10)
        return resp

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    handler = grpc.method_handlers_generic_handler("v1.PodResourcesLister", {
        "List": grpc.unary_unary_rpc_method_handler(
            list_rpc, request_deserializer=pb.ListPodResourcesRequest.FromString,
            response_serializer=pb.ListPodResourcesResponse.SerializeToString)})
    server.add_generic_rpc_handlers((handler,))
    sock = tmp_path / "kubelet.sock"
    server.add_insecure_port(f"unix://{sock}")
    server.start()
    yield str(sock), calls, slow, release
    release.set()
    server.stop(0)


def test_pod_resources_over_a_real_grpc_socket(kubelet):
    sock, calls, _, _ = kubelet
    m = KubernetesPodResourcesMapper(sock, teams=Teams({"ml-research": "research"}, {}, {}))
    m.refresh()
    assert m.fetched.wait(10)
    (h,) = m.holders(GPU, None, [ProcessInfo(1, 10**9, 77)])
    assert (h.job.id, h.job.namespace, h.job.pod, h.job.container, h.job.team) == (
        "ml-research/trainer-0", "ml-research", "trainer-0", "main", "research")
    assert h.sm_util == 77 and h.pids == {1}
    shared = m.holders(DeviceIdentity(3, "GPU-shared", "H100"), None, [ProcessInfo(5), ProcessInfo(6)])
    assert sorted(h.job.pod for h in shared) == ["infer-a", "infer-b"]  # equal split: pods, not processes
    (mig,) = m.holders(DeviceIdentity(4, "GPU-parent", "H100"), MIG, [])
    assert mig.job.pod == "notebook"
    assert m.holders(DeviceIdentity(5, "GPU-other", "H100"), None, []) is None
    m.refresh()  # cached for refresh_s: no second call
    assert len(calls) == 1


def test_a_slow_kubelet_never_blocks_a_sample(kubelet):
    sock, _, slow, release = kubelet
    slow.set()
    m = KubernetesPodResourcesMapper(sock, timeout_seconds=10)
    m.refresh()  # returns at once: the kubelet is asked on the mapper's own thread
    assert not m.fetched.is_set() and m.holders(GPU, None, []) is None
    release.set()
    assert m.fetched.wait(10)
    assert m.holders(GPU, None, [])[0].job.pod == "trainer-0"


def test_pod_resources_unreachable_degrades_only_this_mapper(tmp_path, caplog):
    m = KubernetesPodResourcesMapper(str(tmp_path / "missing.sock"), timeout_seconds=0.5)
    m.refresh()
    assert m.fetched.wait(10)
    assert not m.healthy and m.holders(GPU, None, []) is None
    assert "kubelet PodResources" in caplog.text
