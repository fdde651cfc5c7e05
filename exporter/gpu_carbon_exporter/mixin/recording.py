"""Recording rules: power and emission rates, kWh and g CO₂e windows, waste, efficiency, impact.

Rates come from the energy and emission counters, never from power gauges. Windows and tiles
are the counters' exact growth (``promql.growth``: last sample minus the last one before, no
extrapolation), so a finished job reads what it used. Energy windows are in kWh, emissions in
grams, water in litres (docs/rules.md).
"""
from __future__ import annotations

from ..names import (
    GPU_IDLE_ENERGY_JOULES_TOTAL, GPU_INFO, GPU_UNALLOCATED_ENERGY_JOULES_TOTAL, GPU_UNATTRIBUTED_ENERGY_JOULES_TOTAL,
    GRAMS_PER_KG, GRID_INTENSITY_GRAMS_PER_KWH, JOB__JOB_INFO__DEDUP as JOB_INFO, JOB_GPU_SECONDS_TOTAL,
    JOB_INFO as JOB_INFO_FAMILY, NODE__GRID_INTENSITY_GRAMS_PER_KWH__TOPK1, NODE__JOB_INFO__COUNT, SECONDS_PER_HOUR,
)
from .promql import (
    BOARD_ENERGY, BOARD_GRAMS, CPU_GRAMS, GPU_EMBODIED, GPU_ENERGY, GPU_GRAMS, GPU_WATER,
    JOB_EMBODIED, JOB_ENERGY, JOB_GRAMS, JOB_WATER, JOULES_PER_KWH, RAIL_ENERGY, accounted_energy, all_grams, by,
    cpu_accounted, growth, node_zone, on, zero_if_absent,
)
from .settings import FLEET, GAP_LOOKBACK, JOB, JOB_INFO_LABELS, NODE, SITE, Settings, lookback

Rule = dict[str, object]


def _r(record: str, expr: str) -> Rule:
    return {"record": record, "expr": expr}


def _rollups(metric: str, ops: str) -> list[Rule]:
    """Site and fleet sums of a node-level rule (sums of rates and of increases add up)."""
    node = f"node:{metric}:{ops}"
    return [_r(f"site:{metric}:{ops}", f"{by(SITE)} ({node})"),
            _r(f"fleet:{metric}:{ops}", f"{by(FLEET)} ({node})")]


def rate_ops(fn: str, w: str) -> str:
    """The operations part of a rate rule's name: ``rate5m`` (a 5-minute average, for curves) or
    ``irate`` (the last two samples: "now", whatever look-back ``w`` holds them)."""
    return "irate" if fn == "irate" else f"{fn}{w}"


def _node_rates(fn: str, w: str) -> list[Rule]:
    ops = f"sum_{rate_ops(fn, w)}"
    sums = {
        "gpu_carbon_gpu_power_watts": f"{fn}({GPU_ENERGY}[{w}])",
        "gpu_carbon_gpu_emission_rate_grams_per_second": f"{fn}({GPU_GRAMS}[{w}])",
        "gpu_carbon_power_watts": accounted_energy(fn, w),
        "gpu_carbon_emission_rate_grams_per_second": f"{fn}({all_grams()}[{w}])",
        "gpu_carbon_board_power_watts": f"{fn}({BOARD_ENERGY}[{w}])",
        "gpu_carbon_board_emission_rate_grams_per_second": f"{fn}({BOARD_GRAMS}[{w}])",
        "gpu_carbon_cpu_power_watts": cpu_accounted(fn, w),
        "gpu_carbon_cpu_emission_rate_grams_per_second": f"{fn}({CPU_GRAMS}[{w}])",
    }
    rules: list[Rule] = []
    for metric, expr in sums.items():
        rules.append(_r(f"node:{metric}:{ops}", f"{by(NODE)} ({expr})"))
        rules += _rollups(metric, ops)
    rules.append(_r(f"node:gpu_carbon_rail_power_watts:{ops}",
                    f"{by((*NODE, 'sensor', 'rail'))} ({fn}({RAIL_ENERGY}[{w}]))"))
    return rules


def _zone_join() -> Rule:
    return _r(NODE__GRID_INTENSITY_GRAMS_PER_KWH__TOPK1,
              f"max by ({', '.join((*NODE, 'zone'))}) "
              f"(topk by ({', '.join(NODE)}) (1, {GRID_INTENSITY_GRAMS_PER_KWH}))")


def _zone_rates(fn: str, w: str) -> list[Rule]:
    ops = f"sum_{rate_ops(fn, w)}"
    return [_r(f"zone:{metric}:{ops}",
               f"sum by (zone) (node:{metric}:{ops} * {on(NODE)} group_left (zone) {node_zone()})")
            for metric in ("gpu_carbon_power_watts", "gpu_carbon_emission_rate_grams_per_second")]


def job_labels(scope: str, source: str, window: str | None = None, at: str = "") -> str:
    """A join table: one ``scope`` label per job, even where the job's labels changed within the
    window or two nodes disagree (a many-to-many join would fail every team's rule at once)."""
    shift = f" offset {at}" if at and at != "0s" else ""
    series = f"last_over_time({source}[{window}]{shift})" if window else source
    return f"topk by ({', '.join(JOB)}) (1, max by ({', '.join((*JOB, scope))}) ({series}))"


def _job_joins() -> list[Rule]:
    info_labels = ", ".join((*JOB, *JOB_INFO_LABELS))
    return [
        # Jobs a node exposes: the unattributed alert looks a day back on this small series, not on job_info.
        _r(NODE__JOB_INFO__COUNT, f"count by ({', '.join(NODE)}) ({JOB_INFO_FAMILY})"),
        # One label set per job even if two nodes disagree, so joins never fail on duplicates.
        _r(JOB_INFO, f"max by ({info_labels}) (topk by ({', '.join(JOB)}) (1, {JOB_INFO_FAMILY}))"),
    ]


def _job_rates(fn: str, w: str) -> list[Rule]:
    ops = f"sum_{rate_ops(fn, w)}"
    rules = [
        # A multi-node job is the sum of every node's share.
        _r(f"job:gpu_carbon_job_power_watts:{ops}", f"{by(JOB)} ({fn}({JOB_ENERGY}[{w}]))"),
        _r(f"job:gpu_carbon_job_emission_rate_grams_per_second:{ops}", f"{by(JOB)} ({fn}({JOB_GRAMS}[{w}]))"),
    ]
    for metric in ("gpu_carbon_job_power_watts", "gpu_carbon_job_emission_rate_grams_per_second"):
        rules.append(_r(f"team:{metric}:{ops}", f"sum by (cluster, team) (job:{metric}:{ops} * "
                                                f"{on(JOB)} group_left (team) {job_labels('team', JOB_INFO)})"))
    return rules


def _waste(w: str) -> list[Rule]:
    """Unallocated (allocated view), idle and unattributed (active view) shares of GPU energy."""
    rules: list[Rule] = []
    for part, family in (("unallocated", GPU_UNALLOCATED_ENERGY_JOULES_TOTAL), ("idle", GPU_IDLE_ENERGY_JOULES_TOTAL),
                         ("unattributed", GPU_UNATTRIBUTED_ENERGY_JOULES_TOTAL)):
        for level, labels in (("node", NODE), ("fleet", FLEET)):
            expr = (f"{by(labels)} (rate({family}[{w}])) / "
                    f"{by(labels)} (rate({GPU_ENERGY}[{w}]))")
            rules.append(_r(f"{level}:gpu_carbon_gpu_{part}_energy_ratio:rate{w}", expr))
    return rules + _vendors(w)


def _vendors(w: str) -> list[Rule]:
    """Vendors side by side (the dashboards): each vendor's waste shares, and each GPU model's mean
    power per GPU in kW, which is its kWh per GPU-hour (a GPU that is down counts its hours at 0 W).
    Small: a few series per fleet, however many GPUs. The totals never split by vendor: a joule is a
    joule, and every rule above sums all vendors' GPUs alike."""
    labels = (*FLEET, "vendor")
    rules = [_r(f"vendor:gpu_carbon_gpu_{part}_energy_ratio:rate{w}",
                f"{by(labels)} (rate({family}[{w}])) / {by(labels)} (rate({GPU_ENERGY}[{w}]))")
             for part, family in (("unallocated", GPU_UNALLOCATED_ENERGY_JOULES_TOTAL),
                                  ("idle", GPU_IDLE_ENERGY_JOULES_TOTAL))]
    # The model is gpu_info's `name`, joined one to one by the GPU's uuid on its node.
    per_gpu = f"rate({GPU_ENERGY}[{w}]) * {on((*NODE, 'uuid'))} group_left (name) {GPU_INFO}"
    rules.append(_r(f"model:gpu_carbon_gpu_energy_per_gpu_hour_kwh:avg_rate{w}",
                    f"avg by ({', '.join((*labels, 'name'))}) ({per_gpu}) / {JOULES_PER_KWH / SECONDS_PER_HOUR:g}"))
    return rules


def _rates(fn: str, w: str) -> list[Rule]:
    ops = rate_ops(fn, w)
    gpu = [_r(f"gpu:gpu_carbon_power_watts:{ops}", f"{fn}({GPU_ENERGY}[{w}])"),
           _r(f"gpu:gpu_carbon_emission_rate_grams_per_second:{ops}", f"{fn}({GPU_GRAMS}[{w}])")]
    job = _job_rates(fn, w)
    if fn == "rate":  # the joins once, before the first rules that read them
        return [*gpu, *_node_rates(fn, w), _zone_join(), *_zone_rates(fn, w), *job[:2], *_job_joins(), *job[2:]]
    return [*gpu, *_node_rates(fn, w), *_zone_rates(fn, w), *job]


def power_group(s: Settings) -> dict:
    """Rates from the energy and emission counters, twice: 5-minute averages (``…rate5m``, smooth
    curves) and "now" (``…irate``: the last two samples, so a step shows two scrapes later). The waste
    ratios, rates over an hour, are in the windows group (every minute)."""
    rules = [*_rates("rate", s.rate_window), *_rates("irate", s.now_window)]
    return {"name": "gpu_carbon_power", "rules": rules}


def _kwh(expr: str) -> str:
    return f"{expr} / {JOULES_PER_KWH:g}"


def _job_window_exprs(W: str, back: str | None = None, at: str = "") -> dict[str, str]:
    """Per job (a multi-node job summed over its nodes): metric -> exact growth over ``W`` (ending
    ``at`` ago), looking ``back`` (default ``lookback(W)``) before it for each counter's value. Job
    counters start at 0."""
    def g(sel: str) -> str:
        return f"{by(JOB)} ({growth(sel, W, back or lookback(W), from_zero=True, at=at)})"

    return {
        "gpu_carbon_job_energy_kwh": _kwh(g(JOB_ENERGY)),
        "gpu_carbon_job_emissions_grams": g(JOB_GRAMS),
        "gpu_carbon_job_embodied_emissions_grams": g(JOB_EMBODIED),
        "gpu_carbon_job_water_liters": g(JOB_WATER),
        "gpu_carbon_job_gpu_hours": f"{g(JOB_GPU_SECONDS_TOTAL)} / {SECONDS_PER_HOUR}",
    }


def _node_window_exprs(W: str, back: str | None = None, at: str = "") -> dict[str, str]:
    """Per node: metric -> exact growth over ``W`` (every accounted device unless the name says which)."""
    def grow(sel: str, window: str) -> str:
        return growth(sel, window, back or lookback(window), from_zero=False, at=at)

    def g(sel: str) -> str:
        return f"{by(NODE)} ({grow(sel, W)})"

    return {
        "gpu_carbon_energy_kwh": _kwh(f"{by(NODE)} ({accounted_energy(grow, W)})"),
        "gpu_carbon_emissions_grams": g(all_grams()),
        "gpu_carbon_embodied_emissions_grams": g(GPU_EMBODIED),
        "gpu_carbon_water_liters": g(GPU_WATER),
        "gpu_carbon_gpu_energy_kwh": _kwh(g(GPU_ENERGY)),
        "gpu_carbon_board_energy_kwh": _kwh(g(BOARD_ENERGY)),
        "gpu_carbon_board_emissions_grams": g(BOARD_GRAMS),
        "gpu_carbon_cpu_energy_kwh": _kwh(f"{by(NODE)} ({cpu_accounted(grow, W)})"),
        "gpu_carbon_cpu_emissions_grams": g(CPU_GRAMS),
    }


def job_window(metric: str, W: str) -> Rule:
    """``job:<metric>:increase<W>`` for a metric of ``_job_window_exprs``."""
    return _r(f"job:{metric}:increase{W}", _job_window_exprs(W)[metric])


def scope_window(scope: str, metric: str, ops: str, recorded: bool = True) -> Rule:
    """A job window summed per ``scope`` (team, account, namespace, user): each job joined to its
    label as last seen in the window, so jobs that finished long ago still count. ``recorded``:
    read the job-level rule; else compute the jobs' windows inline, recording none per job."""
    W = ops.removeprefix("increase")
    jobs = f"job:{metric}:{ops}" if recorded else f"({_job_window_exprs(W)[metric]})"
    return _r(f"{scope}:{metric}:{ops}", f"sum by (cluster, {scope}) ({jobs} * {on(JOB)} group_left ({scope}) "
                                         f"{job_labels(scope, JOB_INFO, W)})")


def scope_tile(scope: str, metric: str, tile: str, delay: str = "") -> Rule:
    """``scope``'s growth over the last tile, its jobs joined to the exposed job_info of that tile
    (raw series only: promtool can backfill tiles in one pass). Each tile is the counters' last
    value minus the one before the tile, both ``delay`` ago, so consecutive tiles add up exactly."""
    return _r(f"{scope}:{metric}:tile{tile}",
              f"sum by (cluster, {scope}) (({_job_window_exprs(tile, GAP_LOOKBACK, delay)[metric]}) "
              f"* {on(JOB)} group_left ({scope}) "
              f"{job_labels(scope, 'gpu_carbon_job_info', tile, delay)})")


def job_tile(metric: str, tile: str, job_ids: str, delay: str = "") -> Rule:
    """The tiles of the jobs ``job_ids`` (a regex) only: budgets on single jobs read them, and tiles
    of every job would keep a month of per-job series."""
    expr = _job_window_exprs(tile, GAP_LOOKBACK, delay)[metric].replace("_total{", f'_total{{job_id=~"{job_ids}",')
    return _r(f"job:{metric}:tile{tile}", expr)


def node_tile(metric: str, tile: str, delay: str = "") -> Rule:
    return _r(f"node:{metric}:tile{tile}", _node_window_exprs(tile, GAP_LOOKBACK, delay)[metric])


def tiled_window(level: str, metric: str, W: str, tile: str) -> Rule:
    """The sum of the tiles that ended within the last ``W`` (so up to one tile more than ``W``)."""
    return _r(f"{level}:{metric}:increase{W}", f"sum_over_time({level}:{metric}:tile{tile}[{W}])")


def node_window(metric: str, W: str, tile: str | None = None) -> list[Rule]:
    """``node:<metric>:increase<W>`` for a metric of ``_node_window_exprs`` (from tiles if ``tile``),
    with its site and fleet sums."""
    node = tiled_window("node", metric, W, tile) if tile else _r(f"node:{metric}:increase{W}",
                                                                   _node_window_exprs(W)[metric])
    return [node, *_rollups(metric, f"increase{W}")]


def _total(level: str, prefix: str, W: str) -> Rule:
    """Operational plus embodied emissions (embodied 0 where not configured)."""
    op, emb = f"{level}:{prefix}emissions_grams:increase{W}", f"{level}:{prefix}embodied_emissions_grams:increase{W}"
    return _r(f"{level}:{prefix}total_emissions_grams:increase{W}", f"{op} + {zero_if_absent(emb, op)}")


def _job_windows(W: str) -> list[Rule]:
    return [job_window(m, W) for m in _job_window_exprs(W)] + [_total("job", "gpu_carbon_job_", W)]


TEAM_METRICS = tuple(f"gpu_carbon_job_{m}" for m in ("energy_kwh", "emissions_grams", "embodied_emissions_grams",
                                                      "water_liters", "gpu_hours"))


def _team_windows(W: str, s: Settings) -> list[Rule]:
    if s.tiled(W):
        rules = [tiled_window("team", m, W, s.tile) for m in TEAM_METRICS]
    else:
        rules = [scope_window("team", m, f"increase{W}", s.records_jobs(W)) for m in TEAM_METRICS]
    rules.append(_total("team", "gpu_carbon_job_", W))
    energy, grams = f"team:gpu_carbon_job_energy_kwh:increase{W}", f"team:gpu_carbon_job_emissions_grams:increase{W}"
    rules.append(_r(f"team:gpu_carbon_job_energy_per_gpu_hour_kwh:ratio{W}",
                    f"{energy} / team:gpu_carbon_job_gpu_hours:increase{W}"))
    # Intensity actually paid: emissions ÷ energy, PUE included (g CO₂e per IT kWh).
    rules.append(_r(f"team:gpu_carbon_intensity_paid_grams_per_kwh:ratio{W}", f"{grams} / {energy}"))
    return rules


def _node_windows(W: str, s: Settings) -> list[Rule]:
    tile = s.tile if s.tiled(W) else None
    rules = [r for m in _node_window_exprs(W) for r in node_window(m, W, tile)]
    total = _total("node", "gpu_carbon_", W)
    return rules + [total, *_rollups("gpu_carbon_total_emissions_grams", f"increase{W}")]


def _impact(W: str, s: Settings) -> list[Rule]:
    """Composite impact score Σ wᵢ·eᵢ over kWh, kg operational, kg embodied and litres of water."""
    wt = s.impact_weights
    rules = []
    levels = (("job", "gpu_carbon_job_"),) if s.records_jobs(W) else ()
    for level, prefix in (*levels, ("team", "gpu_carbon_job_"), ("node", "gpu_carbon_"),
                          ("site", "gpu_carbon_"), ("fleet", "gpu_carbon_")):
        name = lambda m: f"{level}:{prefix}{m}:increase{W}"  # noqa: E731
        energy = name("energy_kwh")
        expr = (f"{wt.energy_kwh:g} * {energy}"
                f" + {wt.operational_kg:g} * {name('emissions_grams')} / {GRAMS_PER_KG}"
                f" + {wt.embodied_kg:g} * {zero_if_absent(name('embodied_emissions_grams'), energy)} / {GRAMS_PER_KG}"
                f" + {wt.water_liters:g} * {zero_if_absent(name('water_liters'), energy)}")
        rules.append(_r(f"{level}:gpu_carbon_impact_score:weighted_increase{W}", expr))
    return rules


def window_rules(W: str, s: Settings) -> list[Rule]:
    jobs = _job_windows(W) if s.records_jobs(W) else []
    return jobs + _team_windows(W, s) + _node_windows(W, s) + _impact(W, s)


def tile_group(s: Settings) -> dict:
    """Growth over one tile, every tile: what the windows longer than a day sum up."""
    rules = [node_tile(m, s.tile, s.tile_delay) for m in _node_window_exprs(s.tile)]
    rules += [scope_tile("team", m, s.tile, s.tile_delay) for m in TEAM_METRICS]
    return {"name": "gpu_carbon_tiles", "interval": s.tile, "rules": rules}


def window_groups(s: Settings) -> list[dict]:
    """Windows under a day every ``window_interval``; 1d and longer in their own, slower group."""
    # The waste ratios are rates over an hour: a minute's freshness is plenty, and every 15 s they
    # read more samples than all the 5-minute rates together (docs/scale.md).
    short = [r for W in s.short_windows() for r in window_rules(W, s)] + _waste(s.waste_window)
    long = [r for W in s.long_windows() for r in window_rules(W, s)]
    tiles = [tile_group(s)] if any(s.tiled(W) for W in s.windows) else []
    return [{"name": "gpu_carbon_windows", "interval": s.window_interval, "rules": short}, *tiles,
            {"name": "gpu_carbon_windows_long", "interval": s.long_interval, "rules": long}]
