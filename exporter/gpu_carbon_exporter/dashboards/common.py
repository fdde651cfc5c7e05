"""Shared pieces of the dashboards: the datasource and target-label variables, and panels that
always carry a datasource, a unit and a description (grafana-foundation-sdk builders)."""
from __future__ import annotations

import re

from grafana_foundation_sdk.builders import dashboard, heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.models.dashboard import (
    DashboardLinkType, DataSourceRef, DynamicConfigValue, GridPos, Threshold, ThresholdsMode, VariableRefresh,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from ..names import BUILD_INFO, JOB_INFO, JOULES_PER_KWH

DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
TARGETS = 'cluster=~"$cluster", fleet=~"$fleet", site=~"$site"'  # every fleet query filters by these
NODES = TARGETS + ', node=~"$node"'


def number(x: float) -> str:
    """A constant as the dashboards' PromQL spells it: Python's shortest form with a bare exponent
    (``3600``, ``0.5``, ``2.5e7`` where Python writes ``2.5e+07``). The rule files keep Python's
    spelling (mixin/recording.py): each committed artefact stays as it was."""
    return re.sub(r"e\+?(-?)0*(\d)", r"e\1\2", f"{x:g}")


def kwh(joules: str) -> str:
    """An expression in J, in kWh."""
    return f"{joules} / {number(JOULES_PER_KWH)}"


def variables(board: dashboard.Dashboard, node: bool = True, fleet: str | None = None,
              single_cluster: bool = False, cluster_only: bool = False) -> dashboard.Dashboard:
    """The ``datasource`` variable (no ``__inputs``: files provision and import as they are) and the
    target labels, multi-valued with All (``.*``, so a label a target does not carry matches).
    ``fleet``: a dashboard for one fleet (edge) has no fleet variable and lists only its sites and
    nodes. ``single_cluster``: one cluster at a time (a job id is unique within its cluster only);
    ``cluster_only``: no fleet, site or node (job dashboards select by job)."""
    board = datasource_only(board)
    fleet_sel = f'fleet="{fleet}"' if fleet else 'fleet=~"$fleet"'
    specs = [("cluster", f"label_values({BUILD_INFO}, cluster)")]
    if fleet is None and not cluster_only:
        specs.append(("fleet", f'label_values({BUILD_INFO}{{cluster=~"$cluster"}}, fleet)'))
    if not cluster_only:
        specs.append(("site", f'label_values({BUILD_INFO}{{cluster=~"$cluster", {fleet_sel}}}, site)'))
    if node and not cluster_only:
        specs.append(("node", f'label_values({BUILD_INFO}{{cluster=~"$cluster", {fleet_sel}, '
                              f'site=~"$site"}}, node)'))
    for name, query in specs:
        board = board.with_variable(query_variable(name, name.capitalize(), query,
                                                   multi=not (single_cluster and name == "cluster")))
    return board


def query_variable(name: str, label: str, query: str, multi: bool = True) -> dashboard.QueryVariable:
    """A variable from a ``label_values`` query, reloaded with the time range; multi-valued with
    All (``.*``, so a label a target does not carry matches) unless ``multi`` is off."""
    var = (dashboard.QueryVariable(name).label(label).datasource(DS).query(query)
           .refresh(VariableRefresh.ON_TIME_RANGE_CHANGED))
    return var.multi(True).include_all(True).all_value(".*") if multi else var


def datasource_only(board: dashboard.Dashboard) -> dashboard.Dashboard:
    """Only the ``datasource`` variable (budgets are not per cluster, fleet or site)."""
    return board.with_variable(dashboard.DatasourceVariable("datasource").label("Prometheus").type("prometheus"))


def query(expr: str, legend: str = "", instant: bool = False, ref: str = "A") -> prometheus.Dataquery:
    """A Prometheus query with its legend (instant for stats and tables, range for time series)."""
    q = prometheus.Dataquery().expr(expr).ref_id(ref).legend_format(legend)
    return q.instant() if instant else q.range()


def _place(panel, x: int, y: int, w: int, h: int):
    return panel.grid_pos(GridPos(h=h, w=w, x=x, y=y))


def steps(*levels: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    """Absolute thresholds: (None, base colour), then (value, colour) from that value up."""
    return dashboard.ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(
        [Threshold(value=v, color=c) for v, c in levels])


# Shares where more is worse (budgets used, waste) and where less is worse (devices up); other
# stats are plain figures, in the text colour (Grafana's default would turn anything from 80 red).
PLAIN = steps((None, "text"))
USED = steps((None, "green"), (0.8, "orange"), (1.0, "red"))
UP = steps((None, "red"), (0.9, "orange"), (1.0, "green"))
# Counts where any is a problem (devices down, counter resets, providers on fallback).
ANY = steps((None, "green"), (1, "red"))


def stat_panel(title: str, description: str, expr: str, unit: str, pos: tuple[int, int, int, int],
               decimals: int | None = None, thresholds: dashboard.ThresholdsConfig | None = None,
               legend: str = "") -> stat.Panel:
    p = stat.Panel().title(title).description(description).datasource(DS).unit(unit)
    p = p.thresholds(thresholds if thresholds is not None else PLAIN)
    p = p.with_target(query(expr, legend, instant=True))
    if decimals is not None:
        p = p.decimals(decimals)
    return _place(p, *pos)


def series_panel(title: str, description: str, exprs: list[tuple[str, str]], unit: str,
                 pos: tuple[int, int, int, int], links: list | None = None) -> timeseries.Panel:
    p = timeseries.Panel().title(title).description(description).datasource(DS).unit(unit)
    if links:
        p = p.data_links(links)
    for i, (expr, legend) in enumerate(exprs):
        p = p.with_target(query(expr, legend, ref=chr(ord("A") + i)))
    return _place(p, *pos)


def table_panel(title: str, description: str, expr: str, unit: str, pos: tuple[int, int, int, int],
                thresholds: dashboard.ThresholdsConfig | None = None, links: list | None = None) -> table.Panel:
    """An instant query as a table; with thresholds, its value cells are coloured by them."""
    p = table.Panel().title(title).description(description).datasource(DS).unit(unit)
    if links:
        p = p.data_links(links)
    if thresholds is not None:
        p = p.thresholds(thresholds).override_by_field_type(
            "number", [DynamicConfigValue("custom.cellOptions", {"type": "color-background"})])
    return _place(p.with_target(query(expr, instant=True).format(PromQueryFormat.TABLE)), *pos)


def team_variable() -> dashboard.QueryVariable:
    """Teams, from the jobs' owners (multi, All matches jobs without a team too)."""
    return query_variable("team", "Team", f'label_values({JOB_INFO}{{cluster=~"$cluster"}}, team)')


def data_link(title: str, uid: str, params: str) -> dashboard.DashboardLink:
    """A click-through from a table cell or a series to another of these dashboards: the time range,
    the cluster and the clicked row's or series' labels (``params``: e.g. ``var-job=${__data.fields.job_id}``)."""
    return dashboard.DashboardLink(title).url(f"/d/{uid}?${{__url_time_range}}&${{cluster:queryparam}}&{params}")


def link(title: str, uid: str) -> dashboard.DashboardLink:
    """A link to another of these dashboards, carrying the time range and the variables."""
    return (dashboard.DashboardLink(title).type(DashboardLinkType.LINK).url(f"/d/{uid}")
            .include_vars(True).keep_time(True))


def job_variable(name: str, label: str) -> dashboard.QueryVariable:
    """A job picker (searchable in Grafana's dropdown), from the job ids exposed in the dashboard's
    range, narrowed by the team variable."""
    return query_variable(name, label, f'label_values({JOB_INFO}{{cluster=~"$cluster", team=~"$team"}}, job_id)',
                          multi=False)


def heatmap_panel(title: str, description: str, expr: str, legend: str, unit: str,
                  pos: tuple[int, int, int, int]) -> heatmap.Panel:
    """One row per series (calculate off): e.g. each GPU's power over time."""
    p = heatmap.Panel().title(title).description(description).datasource(DS).unit(unit).calculate(False)
    p = p.show_tooltip()
    return _place(p.with_target(query(expr, legend)), *pos)
