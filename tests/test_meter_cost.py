"""What a sample costs: NVML calls per GPU, and that the gauges read in turn stay complete and fresh."""
from gpu_carbon_exporter.carbon.static import StaticIntensity
from gpu_carbon_exporter.meter import Meter
from gpu_carbon_exporter.sources.nvml import GAUGES, NvmlSource

from conftest import sim_nvml

H100 = "NVIDIA H100 80GB HBM3"
SHARED = {"devices": [{"model": H100, "count": 4, "power": {"pattern": "square", "period_s": 4, "duty": 0.5,
                                                              "high_w": 600, "low_w": 200}}],
          "jobs": [{"id": f"j{k}", "devices": [k % 4], "share": 0.5} for k in range(8)]}
ONCE = ("nvmlInit", "nvmlShutdown", "nvmlSystemGetDriverVersion", "nvmlSystemGetNVMLVersion", "nvmlDeviceGetCount")


def per_sample_calls(meter, nv, clock, samples: int) -> float:
    before = sum(n for name, n in nv.calls.items() if name not in ONCE)
    for _ in range(samples):
        clock.advance(1.0)
        meter.sample()
    return (sum(n for name, n in nv.calls.items() if name not in ONCE) - before) / samples


def test_a_sample_costs_at_most_four_nvml_calls_per_gpu_with_processes(clock):
    """Power, the power fields (with the energy counter), the process list and one query more: over
    a minute, slow ticks and per-process utilisation on shared GPUs included."""
    nv = sim_nvml(SHARED, clock)
    meter = Meter([NvmlSource(nv, read_processes=True, clock=clock)], StaticIntensity("Z", 100), clock=clock)
    meter.open()
    meter.sample()  # the first sample reads everything
    assert per_sample_calls(meter, nv, clock, 60) / 4 <= 4.0
    assert all(len(d.reading.processes) == 2 for d in meter.snapshot.devices)


def test_gauges_are_complete_from_the_first_sample_and_refreshed_in_turn(clock):
    nv = sim_nvml(SHARED, clock)
    src = NvmlSource(nv, read_processes=True, clock=clock)
    gpu = src.open()[0]
    first = src.read(gpu, slow=True)
    assert None not in (first.gpu_util_pct, first.memory_used_bytes, first.temperature_c, first.sm_clock_mhz)
    assert first.power_limit_mw is not None
    reads = {name: nv.calls[name] for name in ("nvmlDeviceGetUtilizationRates", "nvmlDeviceGetMemoryInfo",
                                               "nvmlDeviceGetTemperature", "nvmlDeviceGetClockInfo")}
    for _ in range(2 * len(GAUGES) + 2):  # room for the per-process utilisation's turns
        clock.advance(1.0)
        r = src.read(gpu, slow=False)
        assert None not in (r.gpu_util_pct, r.memory_used_bytes, r.temperature_c, r.sm_clock_mhz)  # carried
    assert all(nv.calls[name] > n for name, n in reads.items())  # each gauge was read again


def test_a_gpu_back_from_lost_is_read_in_full(clock):
    nv = sim_nvml(SHARED, clock)
    src = NvmlSource(nv, read_processes=True, clock=clock)
    gpu = src.open()[0]
    src.read(gpu, slow=True)
    nv.lost.add(0)
    try:
        src.read(gpu, slow=False)
    except Exception:  # noqa: BLE001 - DeviceLost, as the meter expects
        pass
    nv.lost.discard(0)
    before = nv.calls["nvmlDeviceGetTemperature"] + nv.calls["nvmlDeviceGetClockInfo"]
    src.read(gpu, slow=True)
    assert nv.calls["nvmlDeviceGetTemperature"] + nv.calls["nvmlDeviceGetClockInfo"] == before + 2


def test_churning_processes_do_not_starve_the_gauges(clock):
    """Jobs that come and go every second change a shared GPU's process set at every sample: the
    per-process utilisation, read whenever the set changes, must not take the spare query every time
    (found in review: utilisation, memory, temperature and clocks were then never read again)."""
    churn = {"devices": [{"model": H100, "power": {"pattern": "constant", "watts": 400}}],
             "jobs": [{"id": f"c{k}", "devices": [0], "start_s": k, "end_s": k + 2} for k in range(40)]}
    nv = sim_nvml(churn, clock)
    src = NvmlSource(nv, read_processes=True, clock=clock)
    gpu = src.open()[0]
    src.read(gpu, slow=True)
    reads = {name: nv.calls[name] for name in ("nvmlDeviceGetUtilizationRates", "nvmlDeviceGetMemoryInfo",
                                               "nvmlDeviceGetTemperature", "nvmlDeviceGetClockInfo")}
    sets = set()
    for _ in range(4 * len(GAUGES)):
        clock.advance(1.0)
        sets.add(frozenset(p.pid for p in src.read(gpu, slow=False).processes))
    assert len(sets) >= 3 * len(GAUGES)  # the set did change (nearly) every sample
    assert all(nv.calls[name] > n for name, n in reads.items())  # and each gauge was read again
