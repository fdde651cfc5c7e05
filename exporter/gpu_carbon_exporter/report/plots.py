"""The report's plots (matplotlib, the `report` extra), as PNG and SVG: power per GPU over the
job's life, cumulative energy and emissions, grid intensity with the job's power overlaid, and
side-by-side bars for comparisons."""
from __future__ import annotations

import base64
from pathlib import Path

from ..names import JOULES_PER_KWH
from .model import JobReport


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # Text stays text in the SVGs (searchable, and measurable in a browser: tests/test_report.py).
    plt.rcParams["svg.fonttype"] = "none"
    return plt


def _figure(title: str, *ylabels: str):
    """A figure whose title, ticks and legend never overlap: constrained layout, the legend
    (_legend) below the plots, outside them; one panel per y label, sharing the time axis. The parts
    carry ids that the SVG keeps."""
    fig, axes = _plt().subplots(len(ylabels), 1, figsize=(8, 1.2 + 2.4 * len(ylabels)), sharex=True,
                                layout="constrained", squeeze=False)
    axes = [row[0] for row in axes]
    for ax, ylabel in zip(axes, ylabels):
        ax.set_ylabel(ylabel)
        ax.patch.set_gid("plot-area")
    axes[-1].set_xlabel("minutes since the job started")
    axes[0].set_title(title).set_gid("title")
    return fig, axes


def _legend(fig, *axes) -> None:
    entries: dict[str, object] = {}  # label -> handle: a shaded gap in every panel listed once
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    if entries:
        fig.legend(list(entries.values()), list(entries), loc="outside lower center", ncol=min(len(entries), 3),
                   fontsize="small", frameon=False).set_gid("legend")


def _minutes(points: list[tuple[float, float]], t0: float) -> tuple[list[float], list[float]]:
    return [(t - t0) / 60 for t, _ in points], [v for _, v in points]


def _stairs(bins: list[tuple[float, float, float]], t0: float) -> tuple[list[float], list[float]]:
    """(from, to, W) bins as a step line for ``ax.plot``: each bin's level drawn across it, a break
    (NaN) where bins are not contiguous (a gap)."""
    xs: list[float] = []
    ys: list[float] = []
    for i, (a, b, w) in enumerate(bins):
        if i and a > bins[i - 1][1]:
            xs.append(float("nan"))
            ys.append(float("nan"))
        xs += [(a - t0) / 60, (b - t0) / 60]
        ys += [w, w]
    return xs, ys


# Two series closer than this share of the larger one's peak, at every time, draw as one line.
OVERLAP = 0.005


def overlapping(series: dict[str, list[tuple[float, float]]]) -> list[tuple[str, list[tuple[float, float]]]]:
    """Series that one line would hide drawn once, named together in the legend ("a/0, b/0
    (overlapping)"): else the legend lists a line nobody can see."""
    groups: list[tuple[list[str], list[tuple[float, float]]]] = []
    for name, points in sorted(series.items()):
        for names, seen in groups:
            top = max((abs(v) for _, v in [*seen, *points]), default=0.0)
            if [t for t, _ in seen] == [t for t, _ in points] and all(
                    abs(v1 - v2) <= OVERLAP * top for (_, v1), (_, v2) in zip(seen, points)):
                names.append(name)
                break
        else:
            groups.append(([name], points))
    return [(names[0] if len(names) == 1 else ", ".join(names) + " (overlapping)", points) for names, points in groups]


def _scaled(xs: list[float], ys: list[float]) -> list[tuple[float, float]]:
    """A line as its own axis draws it: from its lowest to its highest value."""
    lo, hi = min(ys, default=0.0), max(ys, default=0.0)
    return [(x, (y - lo) / (hi - lo) if hi > lo else 0.0) for x, y in zip(xs, ys)]


def _shade_gaps(ax, r: JobReport) -> None:
    """Where a node sent no samples: Prometheus's range queries carry its last value across."""
    for i, g in enumerate(r.gaps):
        ax.axvspan((g.start - r.start) / 60, (g.end - r.start) / 60, color="grey", alpha=0.25,
                   label="no samples" if i == 0 else None)


def _save(fig, out: Path, name: str) -> Path:
    png = out / f"{name}.png"
    fig.savefig(png, dpi=110)
    fig.savefig(out / f"{name}.svg")
    _plt().close(fig)
    return png


def job_plots(r: JobReport, out: Path) -> dict[str, Path]:
    """Title -> PNG path (an SVG beside each). Gauges (a GPU's power, the intensity) hold their value
    until the next sample, and the job's power is a mean per bin: all are drawn as steps."""
    out.mkdir(parents=True, exist_ok=True)
    plots: dict[str, Path] = {}
    if r.gpu_power:
        fig, (ax,) = _figure("Power per GPU (whole GPU)", "W")
        for name, points in overlapping(r.gpu_power):
            ax.step(*_minutes(points, r.start), where="post", label=name, linewidth=1)
        _shade_gaps(ax, r)
        _legend(fig, ax)
        plots["Power per GPU"] = _save(fig, out, f"job-{_safe(r.job_id)}-power")
    if r.cumulative:
        fig, (ax,) = _figure("Cumulative energy and emissions", "kWh")
        xs = [(t - r.start) / 60 for t, _, _ in r.cumulative]
        kwh = [j / JOULES_PER_KWH for _, j, _ in r.cumulative]
        grams = [g for _, _, g in r.cumulative]
        # Each axis spans its own line, so at a constant intensity the two lie on top of each other.
        same = len(overlapping({"kwh": _scaled(xs, kwh), "g": _scaled(xs, grams)})) == 1
        ax.plot(xs, kwh, color="tab:blue", label="energy (kWh)")
        ax2 = ax.twinx()
        ax2.plot(xs, grams, color="tab:green", linestyle="--",
                 label="CO₂e (g): on the energy line (a constant intensity)" if same else "CO₂e (g)")
        ax2.set_ylabel("g CO₂e")
        _legend(fig, ax, ax2)
        plots["Cumulative energy and emissions"] = _save(fig, out, f"job-{_safe(r.job_id)}-cumulative")
    if r.intensity:
        # Two panels, not two y axes over one: on twin axes, lines of different units can lie on top of
        # each other and hide one another.
        fig, axes = _figure("Grid intensity and the job's power", *(["W"] if r.power else []), "g CO₂e/kWh")
        if r.power:
            xs, ys = _stairs(r.power, r.start)
            if not r.partial and r.power[-1][1] >= r.end:  # finished: its power drops to 0 at its end
                xs, ys = xs + [xs[-1]], ys + [0.0]
            axes[0].plot(xs, ys, color="black", label="job power (W)")
            axes[0].set_ylim(bottom=0)
        for name, points in overlapping(r.intensity):
            axes[-1].step(*_minutes(points, r.start), where="post", label=f"intensity, {name}")
        for ax in axes:
            _shade_gaps(ax, r)
        _legend(fig, *axes)
        plots["Grid intensity and the job's power"] = _save(fig, out, f"job-{_safe(r.job_id)}-intensity")
    return plots


def comparison_plot(names: list[str], kwh: list[float], grams: list[float], per_unit: list[float] | None,
                    unit: str | None, out: Path) -> dict[str, Path]:
    plt = _plt()
    out.mkdir(parents=True, exist_ok=True)
    panels = [("energy (kWh)", kwh), ("operational CO₂e (g)", grams)]
    if per_unit and unit:
        panels.append((f"Wh per {unit}", per_unit))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2), layout="constrained")
    for ax, (title, values) in zip(axes, panels):
        ax.bar(names, values, color=["tab:blue", "tab:orange", "tab:green", "tab:purple"][:len(values)])
        ax.set_title(title, fontsize="medium")
        ax.tick_params(axis="x", labelrotation=20)
    return {"Side by side": _save(fig, out, "comparison")}


def data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
