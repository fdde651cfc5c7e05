"""The report's plots (matplotlib, the `report` extra), as PNG and SVG: power per GPU over the
job's life, cumulative energy and emissions, grid intensity with the job's power overlaid, and
side-by-side bars for comparisons."""
from __future__ import annotations

import base64
from pathlib import Path

from .model import J_PER_KWH, JobReport


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

    return plt


def _minutes(points: list[tuple[float, float]], t0: float) -> tuple[list[float], list[float]]:
    return [(t - t0) / 60 for t, _ in points], [v for _, v in points]


def _shade_gaps(ax, r: JobReport) -> None:
    """Where a node sent no samples: Prometheus's range queries carry its last value across."""
    for i, g in enumerate(r.gaps):
        ax.axvspan((g.start - r.start) / 60, (g.end - r.start) / 60, color="grey", alpha=0.25,
                   label="no samples" if i == 0 else None)


def _save(fig, out: Path, name: str) -> Path:
    fig.tight_layout()
    png = out / f"{name}.png"
    fig.savefig(png, dpi=110)
    fig.savefig(out / f"{name}.svg")
    _plt().close(fig)
    return png


def job_plots(r: JobReport, out: Path) -> dict[str, Path]:
    """Title -> PNG path (an SVG beside each)."""
    plt = _plt()
    out.mkdir(parents=True, exist_ok=True)
    plots: dict[str, Path] = {}
    if r.gpu_power:
        fig, ax = plt.subplots(figsize=(8, 3.2))
        for name, points in sorted(r.gpu_power.items()):
            ax.plot(*_minutes(points, r.start), label=name, linewidth=1)
        _shade_gaps(ax, r)
        ax.set(xlabel="minutes since the job started", ylabel="W", title="Power per GPU (whole GPU)")
        ax.legend(fontsize="small", ncol=2)
        plots["Power per GPU"] = _save(fig, out, f"job-{_safe(r.job_id)}-power")
    if r.cumulative:
        fig, ax = plt.subplots(figsize=(8, 3.2))
        xs = [(t - r.start) / 60 for t, _, _ in r.cumulative]
        ax.plot(xs, [j / J_PER_KWH for _, j, _ in r.cumulative], color="tab:blue", label="energy (kWh)")
        ax.set(xlabel="minutes since the job started", ylabel="kWh", title="Cumulative energy and emissions")
        ax2 = ax.twinx()
        ax2.plot(xs, [g for _, _, g in r.cumulative], color="tab:green", linestyle="--", label="CO₂e (g)")
        ax2.set_ylabel("g CO₂e")
        fig.legend(loc="upper left", fontsize="small")
        plots["Cumulative energy and emissions"] = _save(fig, out, f"job-{_safe(r.job_id)}-cumulative")
    if r.intensity:
        fig, ax = plt.subplots(figsize=(8, 3.2))
        for name, points in sorted(r.intensity.items()):
            ax.step(*_minutes(points, r.start), where="post", label=f"intensity, {name}")
        _shade_gaps(ax, r)
        ax.set(xlabel="minutes since the job started", ylabel="g CO₂e/kWh", title="Grid intensity and the job's power")
        if r.power:
            ax2 = ax.twinx()
            ax2.plot(*_minutes(r.power, r.start), color="black", alpha=0.6, label="job power")
            ax2.set_ylabel("W")
        fig.legend(loc="upper left", fontsize="small")
        plots["Grid intensity and the job's power"] = _save(fig, out, f"job-{_safe(r.job_id)}-intensity")
    return plots


def comparison_plot(names: list[str], kwh: list[float], grams: list[float], per_unit: list[float] | None,
                    unit: str | None, out: Path) -> dict[str, Path]:
    plt = _plt()
    out.mkdir(parents=True, exist_ok=True)
    panels = [("energy (kWh)", kwh), ("operational CO₂e (g)", grams)]
    if per_unit and unit:
        panels.append((f"Wh per {unit}", per_unit))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.2))
    for ax, (title, values) in zip(axes, panels):
        ax.bar(names, values, color=["tab:blue", "tab:orange", "tab:green", "tab:purple"][:len(values)])
        ax.set_title(title, fontsize="medium")
        ax.tick_params(axis="x", labelrotation=20)
    return {"Side by side": _save(fig, out, "comparison")}


def data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
