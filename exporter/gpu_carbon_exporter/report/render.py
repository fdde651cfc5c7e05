"""The report as text (80 columns), Markdown, self-contained HTML and JSON; the disclosure
paragraph; comparisons of jobs (or groups of runs) per unit of work, with their uncertainty."""
from __future__ import annotations

import datetime as dt
import html
import json
import math
from dataclasses import dataclass

from ..names import GRAMS_PER_KG, JOULES_PER_KWH, SECONDS_PER_HOUR, WH_PER_KWH
from .model import MEASUREMENT_REL_UNCERTAINTY, JobReport

NOT_INCLUDED = ("CPU, memory, storage and network energy", "cooling and power distribution beyond the PUE factor",
                "the manufacture of anything but the GPUs (embodied carbon, where shown, is the GPUs' share)")


def when(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def duration(s: float) -> str:
    h, rem = divmod(int(round(s)), SECONDS_PER_HOUR)
    m, sec = divmod(rem, 60)
    return f"{h}h {m:02d}m {sec:02d}s" if h else f"{m}m {sec:02d}s"


def fmt(value: float | None, unit: str, digits: int = 3) -> str:
    """``digits`` significant digits (all of an integer part that has more), thousands separated."""
    if value is None:
        return "n/a"
    if value == 0:
        return f"0 {unit}".strip()
    # The magnitude of the value once rounded: 0.09999 is 0.100, not 0.1000.
    magnitude = math.floor(math.log10(abs(float(f"{value:.{digits - 1}e}"))))
    decimals = max(digits - 1 - magnitude, 0)
    return f"{value:,.{decimals}f} {unit}".strip()


def mass(grams: float) -> str:
    return fmt(grams / GRAMS_PER_KG, "kg CO₂e") if abs(grams) >= GRAMS_PER_KG else fmt(grams, "g CO₂e")


def disclosure(r: JobReport) -> str:
    """A paragraph to paste into a paper or model card."""
    zones = (", ".join(sorted({f"{s.zone} ({s.source}, {s.signal})" for s in r.intensity_sources}))
             or "the configured zone")
    gpus = len(r.gpus)
    nodes = len(r.nodes)
    over = f" over {duration(r.duration_s)}" if r.duration_s > 0 else ""
    grid = ""
    if r.grid_intensity:
        grid = (f", PUE {r.pue:.2f} included, at an energy-weighted grid intensity of "
                f"{fmt(r.grid_intensity, 'g CO₂e/kWh')}")
    gpu_s = "s" if gpus != 1 else ""
    node_s = "s" if nodes != 1 else ""
    parts = [
        f"Job {r.job_id} used {fmt(r.kwh, 'kWh')} of GPU energy{over} on {gpus} GPU{gpu_s} ({nodes} node{node_s}) "
        f"and emitted {mass(r.grams)} (operational: {fmt(r.intensity_paid, 'g CO₂e')} per kWh of GPU energy{grid}; "
        f"grid: {zones}).",
    ]
    if r.embodied_g:
        parts.append(f"The GPUs' embodied carbon for the time held adds {mass(r.embodied_g)}, "
                     f"{mass(r.grams + r.embodied_g)} in total.")
    if r.water_l:
        parts.append(f"Its energy used about {fmt(r.water_l, 'L')} of water at the site's WUE.")
    for unit, (kwh, g) in r.per_unit().items():
        said = "declared by the job" if r.work_source == "exporter" else "as given for the report"
        parts.append(f"It did {r.work[unit]:,.0f} {unit} of work ({said}): {fmt(kwh * WH_PER_KWH, 'Wh')} and "
                     f"{fmt(g, 'g CO₂e')} per unit.")
    parts.append(f"Measured from the GPUs' {', '.join(r.methods) or 'counter'} energy readings by gpu-carbon-exporter "
                 f"{r.version}, per job and per node, read from {r.source}; within ±1 % of a simulated ground truth "
                 "in its tests, to which the energy counters' own accuracy (a few percent, not specified by NVIDIA) "
                 f"adds. Not included: {'; '.join(NOT_INCLUDED)}.")
    if r.partial:
        parts.append(f"These figures are partial: the job {r.partial_reason}.")
    return " ".join(parts)


def totals_rows(r: JobReport) -> list[tuple[str, str]]:
    rows = [("Job", f"{r.job_id} ({r.scheduler}{', cluster ' + r.cluster if r.cluster else ''})"),
            ("Owner", ", ".join(f"{k} {v}" for k, v in r.owner.items()) or "n/a"),
            ("Time", f"{when(r.start)} → {when(r.end)} ({duration(r.duration_s)})" if r.duration_s > 0 else "n/a"),
            ("Status", f"PARTIAL: the job {r.partial_reason}" if r.partial else "finished"),
            ("GPUs / nodes", f"{len(r.gpus)} / {len(r.nodes)}"),
            ("Energy (allocated)", fmt(r.kwh, "kWh")),
            ("Energy (active only)", fmt(r.active_j / JOULES_PER_KWH, "kWh")),
            ("Operational CO₂e", mass(r.grams)),
            ("Embodied CO₂e", mass(r.embodied_g) if r.embodied_g else "not configured"),
            ("Total CO₂e", mass(r.grams + r.embodied_g)),
            ("Water", fmt(r.water_l, "L") if r.water_l else "not configured"),
            ("GPU-hours", fmt(r.gpu_hours, "h")),
            ("Mean / peak power", f"{fmt(r.mean_power_w, 'W')} / {fmt(r.peak_power_w, 'W')}"),
            ("Mean GPU utilisation", fmt(100 * r.mean_utilization, "%") if r.mean_utilization is not None else "n/a"),
            ("CO₂e per GPU kWh", f"{fmt(r.intensity_paid, 'g CO₂e/kWh')} (PUE included)"),
            ("Grid intensity", f"{fmt(r.grid_intensity, 'g CO₂e/kWh')} (weighted by the job's energy)"
             if r.grid_intensity else "n/a"),
            ("PUE", f"{r.pue:.2f}" if r.pue else "n/a")]
    if r.restarts:
        rows.append(("Exporter restarts", f"{r.restarts} (counted across: docs/report.md)"))
    for s in r.intensity_sources:
        rows.append(("Intensity source", f"{s.zone}: {s.source} ({s.signal}), {100 * s.share:.0f} % of the time"))
    if r.fallback_share:
        rows.append(("On fallback", f"{100 * r.fallback_share:.0f} % of the time"))
    for unit, (kwh, g) in r.per_unit().items():
        rows.append((f"Work ({r.work_source})", f"{r.work[unit]:,.0f} {unit}"))
        rows.append((f"Per unit ({unit})", f"{fmt(kwh * WH_PER_KWH, 'Wh')}, {fmt(g, 'g CO₂e')}"))
    return rows


def node_rows(r: JobReport) -> list[list[str]]:
    return [[n.node or "-", fmt(n.energy_j / JOULES_PER_KWH, "kWh"), mass(n.grams),
             fmt(n.gpu_seconds / SECONDS_PER_HOUR, "h")] for n in r.nodes]


def gpu_rows(r: JobReport) -> list[list[str]]:
    return [[g.node or "-", g.name, fmt(g.gpu_energy_j / JOULES_PER_KWH if g.gpu_energy_j is not None else None, "kWh"),
             fmt(100 * g.mean_utilization, "%") if g.mean_utilization is not None else "n/a",
             fmt(g.peak_power_w, "W")] for g in r.gpus]


def gap_lines(r: JobReport) -> list[str]:
    return [f"no samples from {g.node or 'the node'} {when(g.start)} → {when(g.end)} ({duration(g.end - g.start)}): "
            "the totals hold what the counters counted across it; the job's power is not drawn there, and the "
            "plots shade it" for g in r.gaps]


def _shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[: (width - 1) // 2] + "…" + text[-(width - 1 - (width - 1) // 2):]


def _table(header: list[str], rows: list[list[str]], limit: int = 80) -> list[str]:
    """Columns padded to their widest cell; over ``limit``, the widest column (node names) is
    shortened in the middle (the full names are in the other formats)."""
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    excess = sum(widths) + 2 * (len(widths) - 1) - limit
    if excess > 0:
        i = widths.index(max(widths))
        widths[i] = max(widths[i] - excess, 8)
        rows = [[_shorten(str(c), widths[i]) if j == i else c for j, c in enumerate(r)] for r in rows]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def wrap(text: str, width: int = 78) -> list[str]:
    out, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            out.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return out + ([line] if line else [])


def text(r: JobReport) -> str:
    """The terminal report, within 80 columns."""
    out = [f"GPU carbon report — job {r.job_id}", ""]
    for k, v in totals_rows(r):
        lines = wrap(v, 80 - 22) or [""]
        out += [f"{k:<22}{lines[0]}", *(" " * 22 + line for line in lines[1:])]
    out += ["", "Per node", *_table(["node", "energy", "CO₂e", "GPU-h"], node_rows(r))]
    out += ["", "Per GPU (whole GPU over the job's time)",
            *_table(["node", "gpu", "energy", "util", "peak"], gpu_rows(r))]
    if r.gaps:
        out += ["", "Gaps", *(w for g in gap_lines(r) for w in wrap(g))]
    out += ["", "Disclosure", *wrap(disclosure(r))]
    return "\n".join(out) + "\n"


def markdown(r: JobReport, images: dict[str, str] | None = None) -> str:
    out = [f"# GPU carbon report — job {r.job_id}", "", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in totals_rows(r)]
    out += ["", "## Per node", "", "| node | energy | CO₂e | GPU-hours |", "|---|---|---|---|"]
    out += ["| " + " | ".join(row) + " |" for row in node_rows(r)]
    out += ["", "## Per GPU (whole GPU over the job's time)", "", "| node | GPU | energy | utilisation | peak power |",
            "|---|---|---|---|---|"]
    out += ["| " + " | ".join(row) + " |" for row in gpu_rows(r)]
    if r.gaps:
        out += ["", "## Gaps", ""] + [f"- {g}" for g in gap_lines(r)]
    out += ["", "## Disclosure", "", disclosure(r)]
    for name, path in (images or {}).items():
        out += ["", f"![{name}]({path})"]
    return "\n".join(out) + "\n"


CSS = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
       "table{border-collapse:collapse;margin:1rem 0}td,th{border:1px solid #ccc;padding:.3rem .6rem;text-align:left}"
       "th{background:#f3f3f3}.fields th{font-weight:normal}"
       ".partial{color:#a40}.disclosure{background:#f6f8fa;padding:1rem;border-left:4px solid #2a7}"
       "img{max-width:100%}")


def html_page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            + "".join(body) + "</body></html>\n")


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "<thead><tr>" + "".join(f"<th scope=\"col\">{html.escape(h)}</th>" for h in header) + "</tr></thead>"
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}<tbody>{body}</tbody></table>"


def _html_fields(rows: list[tuple[str, str]]) -> str:
    """Name-value rows: each name a row header, no column headers (there is nothing to name)."""
    body = "".join(f"<tr><th scope=\"row\">{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table class=\"fields\"><tbody>{body}</tbody></table>"


def html_report(r: JobReport, images: dict[str, str] | None = None) -> str:
    """Self-contained: ``images`` are data: URIs."""
    body = [f"<h1>GPU carbon report — job {html.escape(r.job_id)}</h1>"]
    if r.partial:
        body.append(f"<p class=\"partial\">Partial: the job {html.escape(r.partial_reason)}.</p>")
    body.append(_html_fields(totals_rows(r)))
    body.append("<h2>Per node</h2>" + _html_table(["node", "energy", "CO₂e", "GPU-hours"], node_rows(r)))
    body.append("<h2>Per GPU (whole GPU over the job's time)</h2>"
                + _html_table(["node", "GPU", "energy", "utilisation", "peak power"], gpu_rows(r)))
    if r.gaps:
        body.append("<h2>Gaps</h2><ul>" + "".join(f"<li>{html.escape(g)}</li>" for g in gap_lines(r)) + "</ul>")
    body.append(f"<h2>Disclosure</h2><p class=\"disclosure\">{html.escape(disclosure(r))}</p>")
    for name, uri in (images or {}).items():
        body.append(f"<h2>{html.escape(name)}</h2><img alt=\"{html.escape(name)}\" src=\"{uri}\">")
    return html_page(f"GPU carbon report — job {r.job_id}", body)


def json_report(r: JobReport) -> str:
    return json.dumps({"report": r.to_json(), "disclosure": disclosure(r)}, indent=2, default=str) + "\n"


# -- comparisons ---------------------------------------------------------------------
@dataclass
class Variant:
    """One or several runs of the same variant (e.g. the fp16 model), compared per unit of work."""

    name: str
    runs: list[JobReport]

    def per_unit(self, unit: str) -> tuple[float, float, float, float] | None:
        """(kWh per unit, g per unit, relative uncertainty of each): the measurement's and, with
        several runs, the standard error of their mean, in quadrature."""
        values = [r.per_unit().get(unit) for r in self.runs]
        if not values or any(v is None for v in values):
            return None
        out = []
        for i in (0, 1):
            xs = [v[i] for v in values]
            mean = sum(xs) / len(xs)
            sem = (math.sqrt(sum((x - mean) ** 2 for x in xs) / (len(xs) - 1)) / math.sqrt(len(xs))
                   if len(xs) > 1 else 0.0)
            rel = math.hypot(MEASUREMENT_REL_UNCERTAINTY, sem / mean if mean else 0.0)  # the bound is not random
            out += [mean, rel]
        return out[0], out[2], out[1], out[3]


def common_unit(variants: list[Variant]) -> str | None:
    units = None
    for v in variants:
        for r in v.runs:
            units = set(r.work) if units is None else units & set(r.work)
    return sorted(units)[0] if units else None


def comparison_rows(variants: list[Variant]) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, rows (one per variant) and sentences: totals, per unit of work, and each variant's
    ratio to the first, with its 1-sigma uncertainty."""
    unit = common_unit(variants)
    header = ["variant", "runs", "energy", "CO₂e", "duration", "mean power", "kWh/GPU-h"]
    if unit:
        header += [f"Wh/{unit}", f"g/{unit}"]
    rows, notes = [], []
    base = variants[0].per_unit(unit) if unit else None
    for v in variants:
        n = len(v.runs)
        kwh = sum(r.kwh for r in v.runs) / n
        grams = sum(r.grams for r in v.runs) / n
        dur = sum(r.duration_s for r in v.runs) / n
        gpu_h = sum(r.gpu_hours for r in v.runs) / n
        row = [v.name, str(n), fmt(kwh, "kWh"), mass(grams), duration(dur),
               fmt(kwh * JOULES_PER_KWH / dur if dur else None, "W"), fmt(kwh / gpu_h if gpu_h else None, "")]
        pu = v.per_unit(unit) if unit else None
        if unit:
            row += [fmt(pu[0] * WH_PER_KWH, "") if pu else "n/a", fmt(pu[1], "") if pu else "n/a"]
        rows.append(row)
        if pu and base and v is not variants[0]:
            for i, what in ((0, "energy"), (1, "CO₂e")):
                ratio = pu[i] / base[i]
                rel = math.hypot(pu[2 + i], base[2 + i])
                notes.append(f"{v.name} / {variants[0].name}, {what} per unit of work ({unit}): {ratio:.3f} ± "
                             f"{ratio * rel:.3f} (1σ)")
    if not unit:
        notes.append("no unit of work common to every job: declare it (docs/report.md) or pass --work/--work-unit")
    return header, rows, notes


def comparison_text(variants: list[Variant]) -> str:
    """One column per variant, so that two to four fit in 80 columns."""
    header, rows, notes = comparison_rows(variants)
    transposed = [[h, *(row[i] for row in rows)] for i, h in enumerate(header) if i > 0]
    out = ["GPU carbon comparison", "", *_table(["", *(row[0] for row in rows)], transposed), ""]
    out += [w for n in notes for w in wrap(n)]
    partial = [r.job_id for v in variants for r in v.runs if r.partial or r.gaps]
    if partial:
        out += ["", *wrap(f"Partial or with gaps: {', '.join(partial)} (see each job's report).")]
    out += ["", *wrap("Uncertainty: ±1 % per variant (the bound held against ground truth in the tests; not "
                      "reduced by repeating runs) and, with several runs, the standard error of their mean, in "
                      "quadrature; ratios add both variants' in quadrature. The energy counters' own bias cancels "
                      "on identical GPUs only.")]
    return "\n".join(out) + "\n"


def comparison_markdown(variants: list[Variant]) -> str:
    header, rows, notes = comparison_rows(variants)
    out = ["# GPU carbon comparison", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join([*out, "", *(f"- {n}" for n in notes)]) + "\n"


def comparison_html(variants: list[Variant], images: dict[str, str] | None = None) -> str:
    header, rows, notes = comparison_rows(variants)
    body = ["<h1>GPU carbon comparison</h1>", _html_table(header, rows)]
    body += [f"<p>{html.escape(n)}</p>" for n in notes]
    for name, uri in (images or {}).items():
        body.append(f"<h2>{html.escape(name)}</h2><img alt=\"{html.escape(name)}\" src=\"{uri}\">")
    return html_page("GPU carbon comparison", body)


def comparison_json(variants: list[Variant]) -> str:
    header, rows, notes = comparison_rows(variants)
    unit = common_unit(variants)
    data = {"unit": unit, "variants": [{"name": v.name, "jobs": [r.job_id for r in v.runs],
                                        "per_unit": (dict(zip(("kwh", "g", "kwh_rel_u", "g_rel_u"), v.per_unit(unit)))
                                                     if unit and v.per_unit(unit) else None),
                                        "reports": [r.to_json()["totals"] for r in v.runs]} for v in variants],
            "table": {"header": header, "rows": rows}, "notes": notes}
    return json.dumps(data, indent=2) + "\n"
