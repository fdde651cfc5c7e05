"""The production NvmlSource over the simulated pynvml-shaped library."""
import pynvml
import pytest

from gpu_carbon_exporter.sources.base import DeviceLost, SourceUnavailable
from gpu_carbon_exporter.sources.nvml import NvmlSource

from conftest import sim_nvml

FLEET = {"devices": [
    {"model": "NVIDIA H100 80GB HBM3", "power": {"pattern": "constant", "watts": 350}, "mig_instances": 2},
    {"model": "Tesla P100-PCIE-16GB", "power": {"pattern": "constant", "watts": 120}},
    {"model": "NVIDIA A100-SXM4-80GB", "power": {"pattern": "square", "period_s": 0.1, "duty": 0.5,
                                                 "high_w": 400, "low_w": 100}},
]}


@pytest.fixture
def nv(clock):
    return sim_nvml(FLEET, clock)


def test_identity_and_mig_instances(nv, clock):
    devices = NvmlSource(nv).open()
    assert [d.index for d in devices] == [0, 1, 2]
    h100, p100, _ = devices
    assert h100.name == "NVIDIA H100 80GB HBM3" and h100.uuid.startswith("GPU-")
    assert h100.pci_bus_id == "00000000:18:00.0"
    assert h100.has_energy_counter and not p100.has_energy_counter
    assert h100.mig_enabled and [m.gpu_instance_id for m in h100.mig_instances] == [1, 2]
    assert all(m.uuid.startswith("MIG-") for m in h100.mig_instances)
    assert not p100.mig_enabled


def test_readings_are_native_units(nv, clock):
    src = NvmlSource(nv)
    h100 = src.open()[0]
    clock.advance(10)
    r = src.read(h100, slow=True)
    assert r.power_mw == 350_000 and r.power_average_mw == 350_000 and r.power_instant_mw == 350_000
    assert r.energy_mj == 3_500_000
    assert r.power_limit_mw == 700_000
    assert 0 < r.gpu_util_pct <= 100 and r.memory_total_bytes == 80 * 2**30
    assert r.temperature_c > 30 and r.sm_clock_mhz > 345
    assert src.read(h100, slow=False).power_limit_mw is None  # slow values only on slow samples
    assert src.info()["driver_version"].startswith("560")


def test_instant_reading_aliases_on_a_100ms_square_wave(nv, clock):
    """A 25-ms window every 100 ms sees one phase of a 100-ms wave: the gauge is biased."""
    src = NvmlSource(nv)
    a100 = src.open()[2]
    clock.advance(5.0)
    r = src.read(a100, slow=False)
    assert r.power_average_mw == pytest.approx(250_000, rel=0.01)  # true mean
    assert r.power_instant_mw in (100_000, 400_000)  # aliased: 60 % off the mean


def test_not_supported_drops_one_metric_and_stops_asking(nv, clock):
    nv.unsupported.add((0, "nvmlDeviceGetTemperature"))
    src = NvmlSource(nv)
    h100 = src.open()[0]
    r = src.read(h100, slow=False)
    assert r.temperature_c is None and r.power_mw is not None and not r.errors
    before = nv.calls["nvmlDeviceGetTemperature"]
    src.read(h100, slow=False)
    assert nv.calls["nvmlDeviceGetTemperature"] == before


def test_pre_volta_has_no_energy_or_power_fields(nv, clock):
    src = NvmlSource(nv)
    p100 = src.open()[1]
    r = src.read(p100, slow=False)
    assert r.energy_mj is None and r.power_instant_mw is None and r.power_mw == 120_000


def test_lost_gpu_raises_device_lost_and_others_keep_reporting(nv, clock):
    src = NvmlSource(nv)
    devices = src.open()
    nv.lost.add(0)
    with pytest.raises(DeviceLost, match="GPU 0"):
        src.read(devices[0], slow=False)
    assert src.read(devices[1], slow=False).power_mw == 120_000


@pytest.mark.parametrize("code", [pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED])
def test_missing_library_or_driver_names_simulate_and_driver(nv, code):
    nv.init_error = code
    with pytest.raises(SourceUnavailable) as err:
        NvmlSource(nv).open()
    assert "--simulate" in str(err.value) and "driver" in str(err.value)


def test_real_pynvml_without_driver_gives_the_same_clear_error():
    """This machine has no NVIDIA driver: the real library fails to load."""
    with pytest.raises(SourceUnavailable, match="--simulate"):
        NvmlSource(pynvml).open()


def test_uninitialised_library_raises_real_nvml_error(nv):
    with pytest.raises(pynvml.NVMLError_Uninitialized):
        nv.nvmlDeviceGetCount()


def test_gpu_lost_before_start_is_reported_down_not_dropped(nv, clock):
    nv.lost.add(1)
    src = NvmlSource(nv)
    devices = src.open()
    assert [d.uuid for d in devices][1] == "unidentified-1"
    with pytest.raises(DeviceLost, match="restart the exporter"):
        src.read(devices[1], slow=True)
    assert src.read(devices[0], slow=True).power_mw == 350_000


def test_per_process_utilisation_is_reread_on_change_or_every_5_s(clock):
    """Two processes share a GPU: their utilisation feeds the split weights, which change slowly."""
    from gpu_carbon_exporter.sources.nvml import PROCESS_UTIL_REFRESH_S

    nv = sim_nvml({"devices": [{"model": "NVIDIA H100 80GB HBM3", "power": {"pattern": "constant", "watts": 500}}],
                   "jobs": [{"id": "1", "start_s": 0, "devices": [0], "share": 0.6},
                            {"id": "2", "start_s": 0, "devices": [0], "share": 0.4},
                            {"id": "3", "start_s": 12, "devices": [0], "share": 0.2}]}, clock)
    src = NvmlSource(nv, read_processes=True, clock=clock)
    (gpu,) = src.open()
    utils = []
    for _ in range(15):
        clock.advance(1.0)
        utils.append([p.sm_util_pct for p in src.read(gpu, slow=False).processes])
    calls = nv.calls["nvmlDeviceGetProcessUtilization"]
    # t=1 (first), t=6 and t=11 (every 5 s), t=12 (a third process appeared)
    assert PROCESS_UTIL_REFRESH_S == 5.0 and calls == 4
    assert all(u is not None for u in utils[0]) and len(utils[-1]) == 3
