"""A minimal client for the kubelet PodResources v1 API (``v1.PodResourcesLister/List``).

Decodes the documented protobuf messages by hand (wire format), so the exporter needs
``grpcio`` only, not protobuf-generated code:

    ListPodResourcesResponse { repeated PodResources pod_resources = 1; }
    PodResources { string name = 1; string namespace = 2; repeated ContainerResources containers = 3; }
    ContainerResources { string name = 1; repeated ContainerDevices devices = 2; ... }
    ContainerDevices { string resource_name = 1; repeated string device_ids = 2; ... }
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator

METHOD = "/v1.PodResourcesLister/List"


@dataclass
class ContainerDevices:
    resource_name: str = ""
    device_ids: list[str] = field(default_factory=list)


@dataclass
class ContainerResources:
    name: str = ""
    devices: list[ContainerDevices] = field(default_factory=list)


@dataclass
class PodResources:
    name: str = ""
    namespace: str = ""
    containers: list[ContainerResources] = field(default_factory=list)


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    shift = value = 0
    while True:
        b = buf[i]
        i += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, i
        shift += 7


def _fields(buf: bytes) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of a message; skips what it does not need."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 2:
            n, i = _varint(buf, i)
            value, i = buf[i:i + n], i + n
        elif wire == 1:
            value, i = buf[i:i + 8], i + 8
        elif wire == 5:
            value, i = buf[i:i + 4], i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield num, wire, value


def decode_list_response(buf: bytes) -> list[PodResources]:
    pods = []
    for num, _, pod_buf in _fields(buf):
        if num != 1:
            continue
        pod = PodResources()
        for pnum, _, pval in _fields(pod_buf):
            if pnum == 1:
                pod.name = pval.decode()
            elif pnum == 2:
                pod.namespace = pval.decode()
            elif pnum == 3:
                c = ContainerResources()
                for cnum, _, cval in _fields(pval):
                    if cnum == 1:
                        c.name = cval.decode()
                    elif cnum == 2:
                        d = ContainerDevices()
                        for dnum, _, dval in _fields(cval):
                            if dnum == 1:
                                d.resource_name = dval.decode()
                            elif dnum == 2:
                                d.device_ids.append(dval.decode())
                        c.devices.append(d)
                pod.containers.append(c)
        pods.append(pod)
    return pods


def list_pod_resources(socket_path: str, timeout_seconds: float = 5.0) -> list[PodResources]:
    """Call ``List`` on the kubelet's unix socket."""
    import grpc

    target = socket_path if socket_path.startswith("unix:") else f"unix://{socket_path}"
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(METHOD, request_serializer=lambda _: b"",
                                   response_deserializer=decode_list_response)
        return call(None, timeout=timeout_seconds)
