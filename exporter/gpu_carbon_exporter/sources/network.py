"""Estimated energy of moving this node's data through the network (``method="estimated"``,
``scope="network"``): bytes per interface (``/proc/net/dev``, received + sent) × the energy
intensity of data transmission.

That energy is spent **outside this node**, in the network's equipment: the rules and dashboards
never add it to the node's measured energy, the meter never subtracts it from a whole-node meter's
reading, and neither the site's PUE nor its water applies. Its emissions use this node's grid
intensity, an approximation: the network's grids are not known. It is kept as a cumulative
counter (bytes since the interface appeared × J/byte), so no byte is lost between samples or while
the exporter is down. Traffic between two nodes that both run the estimate is counted at both ends,
and traffic inside a data centre is priced like Internet traffic: a fleet sum over-states it.

Default intensity: 0.06 kWh/GB, Aslan, Mayers, Koomey and France, "Electricity Intensity of
Internet Data Transmission: Untangling the Estimates", Journal of Industrial Ecology 22(4), 2018,
for 2015 (access and core networks, excluding data centres and user devices). They found it
halving about every two years, so for today's networks it is likely an over-estimate: set
``sources.network.kwh_per_gb`` to the figure you trust (docs/accuracy.md).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..kinds import Accounting, DeviceKind, register_kind
from ..names import JOULES_PER_KWH
from ..plugins import SourceContext, register
from ..schema import names, positive
from .base import DeviceIdentity, DeviceLost, DeviceReading, DeviceSource, SourceUnavailable

# Spent outside this node: never in its total, never taken out of a whole-node meter's reading.
NETWORK = register_kind(DeviceKind(name="network", label="network", doc="network", accounting=Accounting.EVERY,
                                   inside_node=False, estimate=True, legend="network", order=70))
DEFAULT_KWH_PER_GB = 0.06


def read_bytes(proc_net_dev: Path) -> dict[str, int]:
    """Interface -> bytes received + sent, from ``/proc/net/dev``."""
    out = {}
    for line in proc_net_dev.read_text().splitlines()[2:]:
        name, _, rest = line.partition(":")
        fields = rest.split()
        if len(fields) >= 16:
            out[name.strip()] = int(fields[0]) + int(fields[8])
    return out


class NetworkEstimate(DeviceSource):
    name = "network"
    noun = "network interface (estimated)"

    def __init__(self, root: str | Path = "/", kwh_per_gb: float = DEFAULT_KWH_PER_GB,
                 include: tuple[str, ...] = (), exclude: tuple[str, ...] = (), clock=time.monotonic) -> None:
        self.root, self.include, self.exclude, self.clock = Path(root), include, exclude, clock
        self.j_per_byte = kwh_per_gb * JOULES_PER_KWH / 1e9
        self._last: dict[str, tuple[int, float]] = {}

    def _physical(self, name: str) -> bool:
        """A real NIC: listed in /sys/class/net and not under devices/virtual (bridges, veth, lo, …)."""
        link = self.root / "sys/class/net" / name
        try:
            return link.exists() and "/virtual/" not in str(link.resolve())
        except OSError:
            return False

    def open(self) -> list[DeviceIdentity]:
        names = read_bytes(self.root / "proc/net/dev")
        chosen = [n for n in sorted(names) if n in self.include] if self.include else \
            [n for n in sorted(names) if n != "lo" and n not in self.exclude and self._physical(n)]
        if not chosen:
            raise SourceUnavailable("no network interface to estimate (lo and virtual ones are excluded by default)")
        # A cumulative counter (bytes since the interface appeared × J/byte): the meter takes its
        # deltas, so no byte is lost between samples or while the exporter is down, and a counter
        # reset (the interface recreated) is a reset.
        return [DeviceIdentity(index=i, uuid=f"net:{n}", name=n, kind=NETWORK.name, has_energy_counter=True,
                               counter_method="estimated", fast_integration=False,
                               labels=(("interface", n), ("scope", "network")))
                for i, n in enumerate(chosen)]

    def read_power_mw(self, device: DeviceIdentity) -> int | None:
        return None  # a counter: the meter integrates nothing

    def read(self, device: DeviceIdentity, *, slow: bool) -> DeviceReading:
        name = device.name
        try:
            total = read_bytes(self.root / "proc/net/dev")[name]
        except (OSError, KeyError, ValueError) as err:
            raise DeviceLost(f"interface {name}: {err!r}") from err
        now = self.clock()
        last = self._last.get(name)
        self._last[name] = (total, now)
        power = None
        if last is not None and now > last[1] and total >= last[0]:
            power = int((total - last[0]) * self.j_per_byte / (now - last[1]) * 1000)
        return DeviceReading(power_mw=power, energy_mj=total * self.j_per_byte * 1000)


def _from_config(section: dict[str, Any], ctx: SourceContext) -> list[DeviceSource]:
    if not section["enabled"]:
        return []
    return [NetworkEstimate(section["root"], section["kwh_per_gb"], tuple(section["include"] or ()),
                            tuple(section["exclude"] or ()))]


register("source", "network", _from_config, "estimated energy of this node's network traffic (outside the node)",
         kept_in_simulation=True,  # the host's own counters: a simulated node carries them too
         schema={"enabled": (bool, False, None), "root": (str, "/", None),
                 "kwh_per_gb": (float, DEFAULT_KWH_PER_GB, positive(100)),
                 "include": (list, None, names("interface names")), "exclude": (list, None, names("interface names"))})
