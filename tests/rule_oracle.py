"""An independent oracle for the recording rules: a small fleet of constant-power devices
whose counters grow linearly, and the figure every rule must give, computed by plain sums
(watts × seconds), never from PromQL. ``cases()`` turns it into promtool test cases."""
from __future__ import annotations

from dataclasses import dataclass, field

NODES = {
    "a": {"cluster": "c1", "site": "s1", "fleet": "datacenter", "zone": "DE", "g_per_j": 1e-4},
    "b": {"cluster": "c1", "site": "s2", "fleet": "datacenter", "zone": "FR", "g_per_j": 1e-5},
    "e": {"cluster": "c1", "site": "s3", "fleet": "edge", "zone": "DE", "g_per_j": 1e-4},
}
INFO = {"7": {"team": "nlp", "account": "acc1", "namespace": "ml", "user": "ann"},
        "8": {"team": "cv", "account": "acc2", "namespace": "ml", "user": "bob"},
        "9": {"team": "nlp", "account": "acc1", "namespace": "ml", "user": "cat"}}
LINGER = 300.0  # a finished job stays exposed, flat, for attribution.linger_seconds (at least one sample)
EMBODIED_G_PER_S = 0.001  # per GPU
WATER_L_PER_J = 1e-6  # WUE 3.6 L/kWh
LEVELS = {"node": ("cluster", "site", "fleet", "node"), "site": ("cluster", "site", "fleet"), "fleet": ("fleet",),
          "job": ("cluster", "scheduler", "job_id"), "team": ("cluster", "team"), "zone": ("zone",),
          "vendor": ("fleet", "vendor"), "model": ("fleet", "vendor", "name")}
# A mixed fleet: each GPU's model (gpu_carbon_gpu_info's `name`), by uuid.
MODELS = {"GPU-a0": "NVIDIA H100 80GB HBM3", "GPU-a1": "NVIDIA H100 80GB HBM3", "amdgpu-b0": "AMD Instinct MI300X"}


@dataclass
class Fact:
    """One counter-bearing device or job share: constant watts from ``start`` seconds on (to ``end``:
    a finished job, whose counters stay flat while it lingers and then disappear)."""
    kind: str  # gpu, board, cpu, cpu_core, node_rest, rail, job, unallocated, idle, unattributed
    node: str
    watts: float
    labels: dict = field(default_factory=dict)
    start: float = 0.0
    gpu_seconds: float = 0.0  # jobs: GPU-seconds per second
    end: float | None = None

    def seen(self, since: float) -> bool:
        """Whether the series has samples after ``since`` (a finished job's vanish after its linger)."""
        return self.end is None or self.end + LINGER > since

    def lab(self) -> dict:
        n = NODES[self.node]
        out = {"cluster": n["cluster"], "site": n["site"], "fleet": n["fleet"], "node": self.node, **self.labels}
        if self.kind == "job":
            out.update(INFO[self.labels["job_id"]])
        return out

    @property
    def accounted(self) -> bool:
        return self.kind in ("gpu", "board", "cpu", "node_rest")

    def per_s(self, q: str) -> float:
        g = NODES[self.node]["g_per_j"]
        return {"energy": self.watts, "grams": self.watts * g if self.kind != "cpu_core" else 0.0,
                "embodied": EMBODIED_G_PER_S * (self.gpu_seconds if self.kind == "job" else 1.0),
                "water": self.watts * WATER_L_PER_J, "gpu_seconds": self.gpu_seconds}[q]


def facts(job8_start: float, job9: tuple[float, float]) -> list[Fact]:
    """``job9``: (start, end) of a job that finishes within the windows: its flat end must count
    exactly (increase() extrapolated past it)."""
    return [
        Fact("gpu", "a", 300, {"gpu": "0", "uuid": "GPU-a0", "vendor": "nvidia", "method": "counter"}),
        Fact("gpu", "a", 100, {"gpu": "1", "uuid": "GPU-a1", "vendor": "nvidia", "method": "counter"}),
        Fact("gpu", "b", 200, {"gpu": "0", "uuid": "amdgpu-b0", "vendor": "amd", "method": "counter"}),
        Fact("job", "a", 150, {"job_id": "7", "scheduler": "slurm"}, gpu_seconds=1.0),
        Fact("job", "b", 50, {"job_id": "7", "scheduler": "slurm"}, gpu_seconds=1.0),
        Fact("job", "a", 100, {"job_id": "8", "scheduler": "slurm"}, start=job8_start, gpu_seconds=0.5),
        Fact("job", "b", 70, {"job_id": "9", "scheduler": "slurm"}, start=job9[0], end=job9[1], gpu_seconds=1.0),
        Fact("unallocated", "a", 150, {"gpu": "0", "uuid": "GPU-a0", "vendor": "nvidia"}),
        Fact("idle", "a", 60, {"gpu": "0", "uuid": "GPU-a0", "vendor": "nvidia"}),
        Fact("unattributed", "a", 20, {"gpu": "0", "uuid": "GPU-a0", "vendor": "nvidia"}),
        Fact("unallocated", "a", 0, {"gpu": "1", "uuid": "GPU-a1", "vendor": "nvidia"}),
        Fact("idle", "a", 30, {"gpu": "1", "uuid": "GPU-a1", "vendor": "nvidia"}),
        Fact("unattributed", "a", 0, {"gpu": "1", "uuid": "GPU-a1", "vendor": "nvidia"}),
        Fact("unallocated", "b", 150, {"gpu": "0", "uuid": "amdgpu-b0", "vendor": "amd"}),
        Fact("idle", "b", 40, {"gpu": "0", "uuid": "amdgpu-b0", "vendor": "amd"}),
        Fact("unattributed", "b", 0, {"gpu": "0", "uuid": "amdgpu-b0", "vendor": "amd"}),
        Fact("cpu", "a", 80, {"zone": "intel-rapl:0", "domain": "package", "method": "counter"}),
        Fact("cpu_core", "a", 30, {"zone": "intel-rapl:0:0", "domain": "core", "method": "counter"}),
        Fact("node_rest", "a", 50, {"source": "redfish"}),
        Fact("board", "e", 20, {"model": "orin", "method": "counter"}),
        Fact("rail", "e", 8, {"sensor": "ina3221", "rail": "VDD_GPU", "method": "integrated"}),
        Fact("rail", "e", 5, {"sensor": "ina3221", "rail": "VDD_CPU", "method": "integrated"}),
    ]


def _series_labels(f: Fact) -> dict:
    return {k: v for k, v in f.lab().items() if k not in ("team", "account", "namespace", "user")}


def _fmt(labels: dict, name: str = "") -> str:
    return name + "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()) if v != "") + "}"


def input_series(fs: list[Fact], step_s: int, steps: int) -> list[dict]:
    """Counters growing linearly from 0 at each fact's start, sampled every ``step_s``."""
    names = {"gpu": "gpu_carbon_gpu", "board": "gpu_carbon_board", "cpu": "gpu_carbon_cpu",
             "cpu_core": "gpu_carbon_cpu", "rail": "gpu_carbon_rail", "node_rest": "gpu_carbon_node_rest"}
    out = []

    def timeline(f: Fact) -> tuple[int, int, int]:
        """Blank steps before, steps running (from 0), steps lingering flat after (finished jobs)."""
        skip = int(f.start // step_s)
        if f.end is None:
            return skip, steps - skip, 0
        return skip, int((f.end - f.start) // step_s), max(1, int(LINGER // step_s))

    def add(name: str, lab: dict, per_s: float, f: Fact) -> None:
        skip, run, linger = timeline(f)
        values = (f"_x{skip} " if skip else "") + f"0+{per_s * step_s!r}x{run}"
        if linger:
            rest = steps - skip - run - linger
            final = 0.0
            for _ in range(run):  # promtool's own sum, so the flat end repeats its last value exactly
                final += per_s * step_s
            values += f" {final!r}+0x{linger - 1}" + (f" _x{rest}" if rest else "")
        out.append({"series": _fmt(lab, name), "values": values})

    for f in fs:
        lab = _series_labels(f)
        if f.kind in names:
            add(f"{names[f.kind]}_energy_joules_total", lab, f.watts, f)
        if f.kind in ("gpu", "board", "cpu"):
            plain = {k: v for k, v in lab.items() if k != "method"}
            add(f"{names[f.kind]}_emissions_grams_total", plain, f.per_s("grams"), f)
        if f.kind == "node_rest":
            add("gpu_carbon_node_emissions_grams_total", lab, f.per_s("grams"), f)
        if f.kind == "gpu":
            plain = {k: v for k, v in lab.items() if k != "method"}
            add("gpu_carbon_gpu_embodied_emissions_grams_total", plain, f.per_s("embodied"), f)
            add("gpu_carbon_gpu_water_liters_total", plain, f.per_s("water"), f)
            info = {**plain, "name": MODELS[lab["uuid"]], "pci_bus_id": "", "mig_mode": "disabled"}
            out.append({"series": _fmt(info, "gpu_carbon_gpu_info"), "values": f"1+0x{steps}"})
        if f.kind in ("unallocated", "idle", "unattributed"):
            add(f"gpu_carbon_gpu_{f.kind}_energy_joules_total", lab, f.watts, f)
        if f.kind == "job":
            for view in ("allocated", "active"):
                w = f.watts if view == "allocated" else f.watts / 2
                add("gpu_carbon_job_energy_joules_total", {**lab, "view": view}, w, f)
                add("gpu_carbon_job_emissions_grams_total", {**lab, "view": view},
                    w * NODES[f.node]["g_per_j"], f)
            add("gpu_carbon_job_embodied_emissions_grams_total", lab, f.per_s("embodied"), f)
            add("gpu_carbon_job_water_liters_total", lab, f.per_s("water"), f)
            add("gpu_carbon_job_gpu_seconds_total", lab, f.per_s("gpu_seconds"), f)
            info = {**lab, **INFO[lab["job_id"]], "pod": ""}
            skip, run, linger = timeline(f)
            rest = steps - skip - run - linger
            out.append({"series": _fmt(info, "gpu_carbon_job_info"),
                        "values": (f"_x{skip} " if skip else "") + f"1x{run + linger}"
                                  + (f" _x{rest}" if rest else "")})
    for node, n in NODES.items():
        lab = {"cluster": n["cluster"], "site": n["site"], "fleet": n["fleet"], "node": node, "zone": n["zone"]}
        out.append({"series": _fmt(lab, "gpu_carbon_grid_intensity_grams_per_kwh"),
                    "values": f"{n['g_per_j'] * 3.6e6!r}x{steps}"})
    return out

# metric (the middle of a rule name) -> (kinds summed, quantity, divisor)
KWH = 3.6e6
NODE_METRICS = {
    "gpu_carbon_gpu_power_watts": (("gpu",), "energy", 1), "gpu_carbon_power_watts":
        (("gpu", "board", "cpu", "node_rest"), "energy", 1),
    "gpu_carbon_gpu_emission_rate_grams_per_second": (("gpu",), "grams", 1),
    "gpu_carbon_emission_rate_grams_per_second": (("gpu", "board", "cpu", "node_rest"), "grams", 1),
    "gpu_carbon_board_power_watts": (("board",), "energy", 1),
    "gpu_carbon_board_emission_rate_grams_per_second": (("board",), "grams", 1),
    "gpu_carbon_cpu_power_watts": (("cpu",), "energy", 1),
    "gpu_carbon_cpu_emission_rate_grams_per_second": (("cpu",), "grams", 1),
    "gpu_carbon_energy_kwh": (("gpu", "board", "cpu", "node_rest"), "energy", KWH),
    "gpu_carbon_emissions_grams": (("gpu", "board", "cpu", "node_rest"), "grams", 1),
    "gpu_carbon_embodied_emissions_grams": (("gpu",), "embodied", 1),
    "gpu_carbon_water_liters": (("gpu",), "water", 1),
    "gpu_carbon_gpu_energy_kwh": (("gpu",), "energy", KWH),
    "gpu_carbon_board_energy_kwh": (("board",), "energy", KWH),
    "gpu_carbon_board_emissions_grams": (("board",), "grams", 1),
    "gpu_carbon_cpu_energy_kwh": (("cpu",), "energy", KWH),
    "gpu_carbon_cpu_emissions_grams": (("cpu",), "grams", 1),
    "gpu_carbon_rail_power_watts": (("rail",), "energy", 1),
    "gpu_carbon_job_power_watts": (("job",), "energy", 1),
    "gpu_carbon_job_emission_rate_grams_per_second": (("job",), "grams", 1),
    "gpu_carbon_job_energy_kwh": (("job",), "energy", KWH),
    "gpu_carbon_job_emissions_grams": (("job",), "grams", 1),
    "gpu_carbon_job_embodied_emissions_grams": (("job",), "embodied", 1),
    "gpu_carbon_job_water_liters": (("job",), "water", 1),
    "gpu_carbon_job_gpu_hours": (("job",), "gpu_seconds", 3600),
}


def _window_s(ops: str, tile_s: float) -> float | None:
    """Seconds a windowed rule integrates over; None for a rate. A window longer than a day sums
    the tiles that ended within it, so it reaches back one tile further."""
    for prefix in ("weighted_increase", "increase", "ratio", "tile"):
        if ops.startswith(prefix):
            w = ops[len(prefix):]
            seconds = float(w[:-1]) * {"m": 60, "h": 3600, "d": 86400}[w[-1]]
            return seconds + tile_s if prefix != "tile" and seconds > 86400 else seconds
    return None


def _amount(f: Fact, q: str, t: float, window: float | None) -> float:
    if window is None:
        return f.per_s(q) if t - 300 >= f.start else 0.0  # a 5-m rate fully inside the series
    end = t if f.end is None else min(t, f.end)  # a finished job's flat end adds nothing
    return f.per_s(q) * max(0.0, end - max(f.start, t - window))


def _grouped(fs: list[Fact], kinds, q, div, level_labels, t, window, extra=()) -> dict[tuple, float]:
    out: dict[tuple, float] = {}
    for f in fs:
        # a series with no sample in the window (a job gone before it) records nothing
        if f.kind in kinds and (window is not None or t >= f.start + 300) and f.seen(t - (window or 300)):
            lab = f.lab()
            if "zone" in level_labels:  # the node's grid zone, joined from its intensity series
                lab["zone"] = NODES[f.node]["zone"]
            key = tuple((k, lab.get(k, "")) for k in (*level_labels, *extra))
            out[key] = out.get(key, 0.0) + _amount(f, q, t, window) / div
    return out


def expected(record: str, fs: list[Fact], t: float, tile_s: float = 300.0) -> dict[tuple, float] | None:
    """The oracle's value of a recording rule at ``t`` seconds, per label set; None: not modelled."""
    level, metric, ops = record.split(":")
    window = _window_s(ops, tile_s)
    labels = LEVELS.get(level)
    if metric in NODE_METRICS and level in ("node", "site", "fleet", "job", "team", "zone"):
        kinds, q, div = NODE_METRICS[metric]
        extra = ("sensor", "rail") if metric == "gpu_carbon_rail_power_watts" else ()
        return _grouped(fs, kinds, q, div, labels, t, window, extra)
    if level == "gpu" and ops.startswith(("rate", "irate")):  # constant power: "now" equals the average
        q = "energy" if "power" in metric else "grams"
        drop = () if q == "energy" else ("method",)  # the emissions counter has no method label
        return {tuple(sorted((k, v) for k, v in _series_labels(f).items() if v and k not in drop)): f.per_s(q)
                for f in fs if f.kind == "gpu"}
    if metric.endswith("_total_emissions_grams"):
        base = metric.replace("_total_emissions", "_emissions")
        op, emb = (expected(f"{level}:{base}:{ops}", fs, t, tile_s),
                   expected(f"{level}:{base.replace('_emissions', '_embodied_emissions')}:{ops}", fs, t, tile_s))
        return {k: v + emb.get(k, 0.0) for k, v in op.items()}
    if metric.endswith("_energy_ratio"):  # waste: a part's share of GPU energy
        part = metric.split("_")[3]
        num = _grouped(fs, (part,), "energy", 1, labels, t, None)
        den = _grouped(fs, ("gpu",), "energy", 1, labels, t, None)
        return {k: num.get(k, 0.0) / v for k, v in den.items()}
    if record.startswith("model:") and metric == "gpu_carbon_gpu_energy_per_gpu_hour_kwh":
        # Each model's mean power per GPU in kW: its kWh per GPU-hour.
        kw: dict[tuple, list[float]] = {}
        for f in fs:
            if f.kind == "gpu":
                lab = {**f.lab(), "name": MODELS[f.labels["uuid"]]}
                kw.setdefault(tuple((k, lab[k]) for k in labels), []).append(_amount(f, "energy", t, None) / 1000)
        return {k: sum(v) / len(v) for k, v in kw.items()}
    if metric == "gpu_carbon_impact_score":
        pre = "gpu_carbon_job_" if level in ("job", "team") else "gpu_carbon_"
        get = lambda m: expected(f"{level}:{pre}{m}:{ops.replace('weighted_', '')}", fs, t, tile_s)  # noqa: E731
        e, g, b, w = get("energy_kwh"), get("emissions_grams"), get("embodied_emissions_grams"), get("water_liters")
        return {k: 1.0 * v + g[k] / 1000 + b.get(k, 0.0) / 1000 + 0.01 * w.get(k, 0.0) for k, v in e.items()}
    if metric == "gpu_carbon_job_energy_per_gpu_hour_kwh":
        e = expected(f"team:gpu_carbon_job_energy_kwh:increase{ops[5:]}", fs, t, tile_s)
        h = expected(f"team:gpu_carbon_job_gpu_hours:increase{ops[5:]}", fs, t, tile_s)
        return {k: v / h[k] for k, v in e.items() if h.get(k)}
    if metric == "gpu_carbon_intensity_paid_grams_per_kwh":
        e = expected(f"team:gpu_carbon_job_energy_kwh:increase{ops[5:]}", fs, t, tile_s)
        g = expected(f"team:gpu_carbon_job_emissions_grams:increase{ops[5:]}", fs, t, tile_s)
        return {k: g[k] / v for k, v in e.items() if v}
    if record == "job:gpu_carbon_job_info:dedup":
        return {tuple(sorted({"cluster": "c1", "scheduler": "slurm", "job_id": j, **i}.items())): 1.0
                for j, i in INFO.items()
                if any(f.kind == "job" and f.labels["job_id"] == j and f.start <= t and f.seen(t) for f in fs)}
    if record == "node:gpu_carbon_job_info:count":  # job_info series per node
        out: dict[tuple, float] = {}
        for f in fs:
            if f.kind == "job" and f.start <= t and f.seen(t):
                key = tuple((k, f.lab()[k]) for k in LEVELS["node"])
                out[key] = out.get(key, 0.0) + 1
        return out
    if record == "node:gpu_carbon_grid_intensity_grams_per_kwh:topk1":
        return {tuple((k, n[k] if k != "node" else name) for k in (*LEVELS["node"], "zone")): n["g_per_j"] * 3.6e6
                for name, n in NODES.items()}
    return None


def cases(records: list[str], fs: list[Fact], t: float, tile_s: float, tol: float = 1e-9) -> dict:
    """A promtool test: each rule's every label set within ``tol`` (relative) of the oracle."""
    tests, modelled = [], []
    for record in records:
        exp = expected(record, fs, t, tile_s)
        if exp is None:
            continue
        modelled.append(record)
        for key, value in exp.items():
            labels = {k: v for k, v in key if v != ""}
            sel = _fmt(labels, record)
            bound = max(abs(value) * tol, 1e-12)
            tests.append({"expr": f"abs({sel} - {value!r}) <= bool {bound!r}", "eval_time": f"{int(t)}s",
                          "exp_samples": [{"labels": _fmt(labels), "value": 1}]})
        # and no label set beyond the oracle's
        tests.append({"expr": f"count({record}) or vector(0)", "eval_time": f"{int(t)}s",
                      "exp_samples": [{"labels": "{}", "value": len(exp)}]})
    return {"tests": tests, "modelled": modelled}
