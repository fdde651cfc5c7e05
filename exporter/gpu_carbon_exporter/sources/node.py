"""Whole-node power from the BMC: Redfish over HTTPS, or ``ipmitool dcmi power reading``.

BMC readings are slow (tens to hundreds of ms), so these devices are sampled at the
full sampling interval only and integrated there (``fast_integration=False``).
"""
from __future__ import annotations

import logging
import re
import subprocess
from typing import Any

from ..plugins import SourceContext, register
from ..schema import HOUR, between, positive
from ..secret import read_secret
from .base import DeviceIdentity, DeviceLost, DeviceReading, DeviceSource, SourceUnavailable
from .whole_node import NODE

log = logging.getLogger(__name__)


def _node_identity(source: str, key: str, name: str) -> DeviceIdentity:
    return DeviceIdentity(index=0, uuid=f"{source}:{key}", name=name, kind=NODE.name, has_energy_counter=False,
                          fast_integration=False, labels=(("source", source),))


class RedfishSource(DeviceSource):
    """``Chassis/{id}/EnvironmentMetrics`` ``PowerWatts.Reading``, else ``Chassis/{id}/Power``
    ``PowerControl[0].PowerConsumedWatts``. Basic auth; TLS verification on by default."""

    name = "redfish"

    def __init__(self, url: str, username: str | None = None, password: str | None = None, *,
                 verify: bool | str = True, timeout_seconds: float = 5.0, chassis: str | None = None) -> None:
        self.base, self.chassis, self.timeout_seconds = url.rstrip("/"), chassis, timeout_seconds
        import requests

        self._requests = requests
        self.session = requests.Session()
        self.session.verify = verify
        if username:
            self.session.auth = (username, password or "")
        self._power_url: str | None = None
        self._kind = ""

    def _get(self, path: str) -> Any:
        url = path if path.startswith("http") else f"{self.base}{path}"
        try:
            # verify per request: requests lets REQUESTS_CA_BUNDLE override the session's ca_file
            r = self.session.get(url, timeout=self.timeout_seconds, verify=self.session.verify)
        except self._requests.RequestException as err:
            raise DeviceLost(f"Redfish {url}: {type(err).__name__}: {err}") from err
        if r.status_code != 200:
            raise DeviceLost(f"Redfish {url}: HTTP {r.status_code}")
        try:
            return r.json()
        except ValueError as err:
            raise DeviceLost(f"Redfish {url}: not JSON") from err

    def open(self) -> list[DeviceIdentity]:
        try:
            members = self._get("/redfish/v1/Chassis").get("Members", [])
            for m in members:
                path = m.get("@odata.id", "")
                if self.chassis and path.rstrip("/").rsplit("/", 1)[-1] != self.chassis:
                    continue
                chassis = self._get(path)
                for key, kind in (("EnvironmentMetrics", "environment"), ("Power", "power")):
                    link = (chassis.get(key) or {}).get("@odata.id")
                    if link and self._watts(self._get(link), kind) is not None:
                        self._power_url, self._kind = link, kind
                        log.info("Redfish node power from %s", link)
                        return [_node_identity("redfish", path.rstrip("/").rsplit("/", 1)[-1],
                                               chassis.get("Name", "chassis"))]
        except DeviceLost as err:
            raise SourceUnavailable(str(err)) from err
        raise SourceUnavailable(f"Redfish {self.base}: no chassis reports power")

    @staticmethod
    def _watts(doc: Any, kind: str) -> float | None:
        try:
            if kind == "environment":
                value = doc["PowerWatts"]["Reading"]
            else:
                value = next(c["PowerConsumedWatts"] for c in doc["PowerControl"]
                             if c.get("PowerConsumedWatts") is not None)
        except (KeyError, TypeError, StopIteration):
            return None
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    def read_power_mw(self, device: DeviceIdentity) -> int | None:
        watts = self._watts(self._get(self._power_url), self._kind)
        if watts is None:
            raise DeviceLost(f"Redfish {self._power_url}: no power reading in the response")
        return int(watts * 1000)

    def read(self, device: DeviceIdentity, *, slow: bool) -> DeviceReading:
        return DeviceReading(power_mw=self.read_power_mw(device))


_DCMI = re.compile(r"Instantaneous power reading:\s*(\d+(?:\.\d+)?)\s*Watts", re.I)


def parse_dcmi(text: str) -> float:
    """Watts from ``ipmitool dcmi power reading`` output; raises ValueError."""
    if re.search(r"Power reading state is:\s*deactivated", text, re.I):
        raise ValueError("DCMI power reading is deactivated on this BMC")
    m = _DCMI.search(text)
    if not m:
        raise ValueError("no 'Instantaneous power reading' line in ipmitool output")
    return float(m.group(1))


class IpmiSource(DeviceSource):
    name = "ipmi"

    def __init__(self, command: list[str] | None = None, timeout_seconds: float = 5.0) -> None:
        self.command = (command or ["ipmitool"]) + ["dcmi", "power", "reading"]
        self.timeout_seconds = timeout_seconds

    def _run(self) -> float:
        try:
            out = subprocess.run(self.command, capture_output=True, text=True, timeout=self.timeout_seconds)
        except FileNotFoundError as err:
            raise SourceUnavailable(f"{self.command[0]} not found: install ipmitool") from err
        except subprocess.TimeoutExpired as err:
            raise DeviceLost(f"ipmitool timed out after {self.timeout_seconds:g}s") from err
        if out.returncode != 0:
            first = (out.stderr or out.stdout).strip().splitlines()[:1]
            raise DeviceLost(f"ipmitool exited {out.returncode}: {first[0] if first else ''}")
        try:
            return parse_dcmi(out.stdout)
        except ValueError as err:
            raise DeviceLost(f"ipmitool: {err}") from err

    def open(self) -> list[DeviceIdentity]:
        try:
            self._run()
        except DeviceLost as err:
            raise SourceUnavailable(str(err)) from err
        return [_node_identity("ipmi", "bmc", "BMC")]

    def read_power_mw(self, device: DeviceIdentity) -> int | None:
        return int(self._run() * 1000)

    def read(self, device: DeviceIdentity, *, slow: bool) -> DeviceReading:
        return DeviceReading(power_mw=self.read_power_mw(device))


def _redfish(section: dict, ctx: SourceContext) -> list[DeviceSource]:
    if not section["url"]:
        return []
    from .polled import polled

    password = read_secret(section, "password_env", "password_file", "sources.redfish") \
        if section["password_env"] or section["password_file"] else None
    verify: bool | str = False if section["insecure_skip_verify"] else (section["ca_file"] or True)
    return [polled(RedfishSource(section["url"], section["username"], password, verify=verify,
                                 timeout_seconds=section["timeout_seconds"], chassis=section["chassis"]), section)]


def _ipmi(section: dict, ctx: SourceContext) -> list[DeviceSource]:
    if not section["enabled"]:
        return []
    import shlex

    from .polled import polled

    return [polled(IpmiSource(shlex.split(section["command"]), section["timeout_seconds"]), section)]


_POLLING = {"timeout_seconds": (float, 5.0, positive(300)), "poll_interval_seconds": (float, 5.0, between(0.1, HOUR))}
register("source", "redfish", _redfish, "whole-node power from the BMC over Redfish", schema={
    "url": (str, None, None), "username": (str, None, None), "password_env": (str, None, None),
    "password_file": (str, None, None), "ca_file": (str, None, None), "insecure_skip_verify": (bool, False, None),
    "chassis": (str, None, None), **_POLLING})
register("source", "ipmi", _ipmi, "whole-node power from `ipmitool dcmi power reading`", schema={
    "enabled": (bool, False, None), "command": (str, "ipmitool", None), **_POLLING})
