"""The whole-node kind: meters of the node as a whole, whichever source reads them — a BMC
(``node.py``), an ACPI power meter or a sensor on a board's input (``hwmon.py``), a battery
(``battery.py``). Only their rest counts, what the GPUs and CPU zones did not measure on their
own, and only one of them is accounted (the meter's rules).

A module of its own, registering no plug-in: the sources that share the kind import it without
registering each other's plug-ins early, which would change the order sources are built in.
"""
from __future__ import annotations

from ..kinds import Accounting, DeviceKind, register_kind

NODE = register_kind(DeviceKind(name="node", label="node", doc="whole node (from its BMC)",
                                accounting=Accounting.REST, order=80))
