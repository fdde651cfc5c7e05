"""Small PromQL builders shared by the recording rules, alerts and budgets."""
from __future__ import annotations

from typing import Callable, Iterable, Union

from .. import names
from ..kinds import Accounting, kinds
from ..names import JOULES_PER_KWH  # noqa: F401 - the rules read it here
from .settings import DURATION_SECONDS, seconds

# Short names of the families the rules read most (names.py defines them).
GPU_ENERGY = names.GPU_ENERGY_JOULES_TOTAL
GPU_GRAMS = names.GPU_EMISSIONS_GRAMS_TOTAL
GPU_EMBODIED = names.GPU_EMBODIED_EMISSIONS_GRAMS_TOTAL
GPU_WATER = names.GPU_WATER_LITERS_TOTAL
JOB_ENERGY = f'{names.JOB_ENERGY_JOULES_TOTAL}{{view="allocated"}}'
JOB_GRAMS = f'{names.JOB_EMISSIONS_GRAMS_TOTAL}{{view="allocated"}}'
JOB_EMBODIED = names.JOB_EMBODIED_EMISSIONS_GRAMS_TOTAL
JOB_WATER = names.JOB_WATER_LITERS_TOTAL
BOARD_ENERGY = names.BOARD.energy
BOARD_GRAMS = names.BOARD.emissions
RAIL_ENERGY = names.RAIL.energy
CPU_GRAMS = names.CPU.emissions


# A range function by name ("rate", "increase") or a builder of the whole expression from a
# selector and a window (``growth``'s partials): the accounted-energy helpers take either.
RangeFn = Union[str, Callable[[str, str], str]]


def growth(sel: str, window: str, lookback: str, from_zero: bool, at: str = "") -> str:
    """The exact growth of the counters ``sel`` over ``window`` (ending ``at`` ago), per series, with
    no extrapolation: the last sample in the window minus the last sample before it (looked for
    ``lookback`` back). A finished job's flat end and a series' first sample count exactly, scrape
    gaps inside the window lose nothing. A series with no sample before the window began in it:
    job counters start at 0 with their job (``from_zero``), so their growth is their last value;
    a device counter falls back to ``increase()``, and so does a reset (the difference < 0) of a
    device counter; a reset job counter counts from its reset (never more than it used).
    docs/rules.md argues the choice."""
    at = at if at and seconds(at) else ""
    shift = f" offset {at}" if at else ""
    last = f"last_over_time({sel}[{window}]{shift})"
    before = f"last_over_time({sel}[{lookback}] offset {_plus(window, at)})"
    fallback = last if from_zero else f"increase({sel}[{window}]{shift})"
    return f"({last} - {before} >= 0 or {fallback})"


def _plus(a: str, b: str) -> str:
    """The sum of two durations, in the larger unit that is exact (``5m`` + ``10s`` = ``310s``)."""
    total = seconds(a) + (seconds(b) if b else 0)
    for unit, size in sorted(DURATION_SECONDS.items(), key=lambda u: -u[1]):
        if total % size == 0:
            return f"{total // size}{unit}"
    raise AssertionError(total)


def _call(fn: RangeFn, sel: str, window: str) -> str:
    return f"{fn}({sel}[{window}])" if isinstance(fn, str) else fn(sel, window)


def by(labels: Iterable[str]) -> str:
    return f"sum by ({', '.join(labels)})"


def on(labels: Iterable[str]) -> str:
    return f"on ({', '.join(labels)})"


def _sel(metric: str, matchers: str) -> str:
    return f"{metric}{{{matchers}}}" if matchers else metric


def kinds_selector(names: Iterable[str], suffix: str, matchers: str = "") -> str:
    """One selector of a family over several kinds: ``{__name__=~"gpu_carbon_(gpu|board)_<suffix>"}``."""
    extra = f", {matchers}" if matchers else ""
    return f'{{__name__=~"gpu_carbon_({"|".join(names)})_{suffix}"{extra}}}'


def all_grams(matchers: str = "") -> str:
    """Every emissions counter in a node's total (kinds.py: ``in_node_total``): each accounted joule
    is in exactly one of them. The network's (spent outside the node) never is."""
    return kinds_selector((k.name for k in kinds() if k.in_node_total), "emissions_grams_total", matchers)


def _marked(kind: str, fn: RangeFn, window: str, matchers: str) -> str:
    """A kind's devices that are accounted (those with an emissions counter, ``Accounting.MARKED``)."""
    families = names.kind_families(kind)
    energy, grams = families.energy, families.emissions
    return f"({_call(fn, _sel(energy, matchers), window)} and ignoring (method) {_sel(grams, matchers)})"


def cpu_accounted(fn: RangeFn, window: str, matchers: str = "") -> str:
    """CPU zones that are accounted (those with an emissions counter), never core inside package."""
    return _marked("cpu", fn, window, matchers)


def accounted_energy(fn: RangeFn, window: str, matchers: str = "") -> str:
    """``fn`` (rate or increase) of every accounted device's energy, as each kind's ``accounting``
    says (kinds.py): every device of some kinds (GPUs, boards, hwmon sensors), the accounted devices
    of others (CPU zones, estimated disks no whole-node meter covers), the rest of a whole-node meter
    (BMC, ACPI meter, battery) — never a kind outside the node (the network's).
    ``matchers``: label matchers added to every selector (dashboards filter by target labels)."""
    total = [k for k in kinds() if k.in_node_total]
    every = [k.name for k in total if k.accounting is Accounting.EVERY]
    parts = [_call(fn, kinds_selector(every, "energy_joules_total", matchers), window)] if every else []
    parts += [_marked(k.name, fn, window, matchers) for k in total if k.accounting is Accounting.MARKED]
    parts += [_call(fn, _sel(names.rest_family(k.name), matchers), window)
              for k in total if k.accounting is Accounting.REST]
    return " or ".join(parts)


def zero_if_absent(expr: str, like: str) -> str:
    """``expr``, or 0 with the label set of ``like`` where ``expr`` has no series."""
    return f"({expr} or {like} * 0)"


def node_zone() -> str:
    """One zone per node, as a 1-valued join table (a node reports one grid zone)."""
    return f"({names.NODE__GRID_INTENSITY_GRAMS_PER_KWH__TOPK1} * 0 + 1)"

