"""Device kinds: what a device is, and every rule that follows from it, declared once.

A kind is the ``DeviceIdentity.kind`` of a device and the prefix of its metric families
(``gpu_carbon_<kind>_...``). Everything that treats kinds differently reads the kind's record
here: the meter's double-count rules, the recording rules' selectors and sums, the health
alerts and the dashboards. A source module declares the kinds it reports beside its source:

    NETWORK = register_kind(DeviceKind(name="network", label="network", doc="network",
                                       accounting=Accounting.EVERY, inside_node=False, ...))

as node_exporter's collectors register themselves: a new kind is a new source module, and
nothing else lists kinds. The generated rules and dashboards list kinds by ``order`` (then
name), never by import order, so they come out the same whichever module registers first.

A bottom module: it imports nothing of the package at import time (``kinds()`` loads the
built-in plug-ins on first use, from ``plugins``, itself a bottom module).
"""
from __future__ import annotations

import enum
from dataclasses import dataclass


class Accounting(enum.Enum):
    """How the energy of a kind's devices enters the node's total (the meter's emissions and the
    rules' sums alike)."""

    EVERY = "every"  # every device is accounted: its energy counts as measured (GPUs, boards)
    # Only devices with an emissions counter count: the others are parts of another device (RAPL
    # core inside package) or measured already by a whole-node meter (estimated disks).
    MARKED = "marked"
    REST = "rest"  # a whole-node meter: only its rest, what the parts measured on their own did not count
    NEVER = "never"  # parts of another device only (Jetson rails, inside the board's total)


@dataclass(frozen=True)
class DeviceKind:
    """One kind of device and its policy. ``name`` is the metric prefix, so it is a label-safe word."""

    name: str
    label: str  # how logs name one device ("CPU zone")
    doc: str  # how HELP texts name one device ("CPU power zone")
    accounting: Accounting
    # False: the energy is spent outside this node (the network's equipment): no PUE or water, never
    # part of a node's total, never taken out of a whole-node meter's reading.
    inside_node: bool = True
    # An estimate of a part that a whole-node meter measures already (disks): where such a meter is
    # accounted, these devices are exposed but not accounted.
    covered_by_node_meter: bool = False
    # Estimated (method="estimated"), not measured: shown apart on the dashboards, and left out of
    # GpuCarbonCounterReset, which watches the measured energy counters for a lost state.
    estimate: bool = False
    # How a dashboard legend names the kind's devices together ("disks"); the name if empty.
    legend: str = ""
    # Position in every generated list (rule selectors, alerts, dashboards); ties go by name.
    order: int = 100

    @property
    def in_node_total(self) -> bool:
        """Whether any of its energy is part of the node's (and so the site's and fleet's) total."""
        return self.inside_node and self.accounting is not Accounting.NEVER


_KINDS: dict[str, DeviceKind] = {}


def register_kind(kind: DeviceKind) -> DeviceKind:
    """Declare a kind; returns it, so a source module keeps it as a constant. A second kind of the
    same name is a programming error (two modules would disagree on its rules)."""
    if not kind.name.isidentifier() or kind.name != kind.name.lower():
        raise ValueError(f"device kind {kind.name!r}: a metric prefix must be a lower-case word")
    if kind.name in _KINDS:
        raise ValueError(f"device kind {kind.name!r} registered twice")
    _KINDS[kind.name] = kind
    return kind


def unregister_kind(name: str) -> None:
    """Forget a kind (tests that register one of their own)."""
    _KINDS.pop(name, None)


def kinds() -> list[DeviceKind]:
    """Every registered kind, the built-in ones included, in ``order`` then name."""
    _load_builtins()
    return sorted(_KINDS.values(), key=lambda k: (k.order, k.name))


def lookup(name: str) -> DeviceKind:
    """The kind of that name. A kind nobody registered (a plug-in's own) is inside the node and
    accounted as its devices say, its name standing for its label and doc: never an error in a scrape."""
    kind = _KINDS.get(name)
    if kind is None:
        _load_builtins()  # a device of a built-in kind built by a test without importing its source
        kind = _KINDS.get(name)
    return kind if kind is not None else DeviceKind(str(name), str(name), str(name), Accounting.EVERY)


def kind_doc(name: str) -> str:
    """How HELP texts name a device of a kind."""
    return lookup(name).doc


def kind_label(name: str) -> str:
    """How logs name a device of a kind."""
    return lookup(name).label


def outside_node(name: str) -> bool:
    """The meter's rule: energy spent outside this node (no PUE, no water, not a part of the node)."""
    return not lookup(name).inside_node


def whole_node(name: str) -> bool:
    """The meter's rule: a whole-node meter (BMC, ACPI meter, battery, a plug-in's PDU outlet), whose
    emissions are its rest only: what the node's own measured parts (GPUs, CPUs) did not count."""
    return lookup(name).accounting is Accounting.REST


def covered_by_node_meter(name: str) -> bool:
    """The meter's rule: an estimate that an accounted whole-node meter measures already."""
    return lookup(name).covered_by_node_meter


def _load_builtins() -> None:
    # Deferred: the built-in source modules declare the built-in kinds, and they import this module.
    from .plugins import load_builtins

    load_builtins()
