"""AMD GPUs through the amdgpu driver's sysfs: the gpu_metrics table of each supported revision,
packed here independently with ``struct`` from the kernel's struct definitions; the built-in AMD
scenarios through the production source and meter against their patterns' exact integrals; the
32-bit accumulator's wrap; and bad input — each degrading that card only, visibly, never backwards."""
from __future__ import annotations

import logging
import re
import struct
import subprocess
import sys

import pytest

from gpu_carbon_exporter.carbon.static import StaticIntensity
from gpu_carbon_exporter.meter import Meter
from gpu_carbon_exporter.sim.amdgpu import AmdgpuSimulator
from gpu_carbon_exporter.sim.scenario import ScenarioError, load_scenario, parse_scenario
from gpu_carbon_exporter.sources import gpu_metrics
from gpu_carbon_exporter.sources.amdgpu import WRAP_32_MJ, AmdgpuSource
from gpu_carbon_exporter.sources.base import SourceUnavailable
from gpu_carbon_exporter.sources.gpu_metrics import BadTable
from gpu_carbon_exporter.sources.hwmon import HwmonSource

from conftest import ManualClock

COUNT_J = 2.0**-16  # one count of energy_accumulator ("15.259uJ (2^-16) units")

# --- The kernel's structs (kgd_pp_interface.h), field by field, as struct codes ------------------------
# Native mode ("@") aligns each field as the C compiler does; "0Q" aligns to 8 where a nested struct
# holding u64s starts; the struct's own trailing padding is added in pack(). Arrays are "<n><code>".
HDR = [("structure_size", "H"), ("format_revision", "B"), ("content_revision", "B")]
V1_0 = HDR + [("system_clock_counter", "Q"), ("temperatures", "6H"), ("activity", "3H"), ("average_socket_power", "H"),
              ("energy_accumulator", "I"), ("clocks", "14H"), ("throttle_status", "I"), ("current_fan_speed", "H"),
              ("pcie_link", "2B")]
V1_1 = HDR + [("temperatures", "6H"), ("activity", "3H"), ("average_socket_power", "H"), ("energy_accumulator", "Q"),
              ("system_clock_counter", "Q"), ("clocks", "14H"), ("throttle_status", "I"), ("current_fan_speed", "H"),
              ("pcie_link", "2H"), ("padding", "H"), ("activity_acc", "2I"), ("temperature_hbm", "4H")]
V1_2 = V1_1 + [("firmware_timestamp", "Q")]
V1_3 = V1_2 + [("voltages", "3H"), ("padding1", "H"), ("indep_throttle_status", "Q")]
MI300_HEAD = HDR + [("temperatures", "3H"), ("curr_socket_power", "H"), ("activity", "2H")]
LINKS = [("link_width_speed", "4H"), ("activity_acc", "2I"), ("pcie_acc", "5Q")]
CLOCKS = [("current_clocks", "21H")]  # gfxclk[8], socclk[4], vclk0[4], dclk0[4], uclk
V1_4 = MI300_HEAD + [("vcn_activity", "4H"), ("energy_accumulator", "Q"), ("system_clock_counter", "Q"),
                     ("throttle_status", "I"), ("gfxclk_lock_status", "I")] + LINKS + [
    ("xgmi_acc", "16Q"), ("firmware_timestamp", "Q")] + CLOCKS + [("padding", "H")]
V1_5 = MI300_HEAD + [("vcn_activity", "4H"), ("jpeg_activity", "32H"), ("energy_accumulator", "Q"),
                     ("system_clock_counter", "Q"), ("throttle_status", "I"), ("gfxclk_lock_status", "I")] + LINKS + [
    ("pcie_nak", "2I"), ("xgmi_acc", "16Q"), ("firmware_timestamp", "Q")] + CLOCKS + [("padding", "H")]
XCP_V1_0 = [("gfx_busy_inst", "8I"), ("jpeg_busy", "32H"), ("vcn_busy", "4H"), ("gfx_busy_acc", "8Q")]
XCP_V1_1 = XCP_V1_0 + [("gfx_below_host_limit_acc", "8Q")]
XCP_V1_2 = [("gfx_busy_inst", "8I"), ("jpeg_busy", "40H"), ("vcn_busy", "4H"), ("gfx_busy_acc", "8Q"),
            ("gfx_below_host_limits", "32Q")]  # ppt, thm, low utilisation, total: 4 x u64[8]


def mi300_v1_6_on(xcp: list, v1_7: bool) -> list:
    head = MI300_HEAD + ([("mem_max_bandwidth", "Q")] if v1_7 else [])
    status = [("xgmi_link_status", "8H"), ("padding", "H")] if v1_7 else []
    return head + [("energy_accumulator", "Q"), ("system_clock_counter", "Q"), ("residencies", "6I"),
                   ("gfxclk_lock_status", "I")] + LINKS + [("pcie_nak", "2I"), ("xgmi_acc", "16Q")] + status + [
        ("firmware_timestamp", "Q")] + CLOCKS + [("num_partition", "H"), ("xcp_align", "0Q")] + xcp * 8 + [
        ("pcie_lc_perf_other_end_recovery", "I")]


KERNEL = {"1.0": V1_0, "1.1": V1_1, "1.2": V1_2, "1.3": V1_3, "1.4": V1_4, "1.5": V1_5,
          "1.6": mi300_v1_6_on(XCP_V1_0, False), "1.7": mi300_v1_6_on(XCP_V1_1, True),
          "1.8": mi300_v1_6_on(XCP_V1_2, True)}
# sizeof() of each struct, from the kernel (and the research notes' ctypes check).
SIZES = {"1.0": 80, "1.1": 96, "1.2": 104, "1.3": 120, "1.4": 288, "1.5": 360, "1.6": 1664, "1.7": 2208, "1.8": 3872}


def pack(revision: str, **values: int) -> bytes:
    """One table as the driver writes it: every field all ones (its 0xFF fill) but those given."""
    fields = KERNEL[revision]
    fmt = "@" + "".join(code for _, code in fields)
    size = struct.calcsize(fmt)
    size += -size % 8  # trailing padding: these structs hold u64s
    args: list[int] = []
    for name, code in fields:
        count, kind = int(code[:-1] or 1), code[-1]
        ones = (1 << 8 * struct.calcsize(kind)) - 1
        frev, crev = revision.split(".")
        value = {"structure_size": size, "format_revision": int(frev), "content_revision": int(crev)}.get(name, ones)
        args += [values.get(name, value)] * count
    data = struct.pack(fmt, *args)
    return data + b"\xff" * (size - len(data))


# --- The table ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("revision", sorted(KERNEL))
def test_each_supported_revision_parses_from_an_independently_packed_table(revision):
    data = pack(revision, energy_accumulator=0xDEAD_BEEF, system_clock_counter=123_456_789_012)
    assert len(data) == SIZES[revision]
    table = gpu_metrics.parse(data)
    assert (table.revision, table.energy_count, table.clock_ns) == (revision, 0xDEAD_BEEF, 123_456_789_012)
    assert table.energy_bits == (32 if revision == "1.0" else 64)
    assert table.energy_mj == pytest.approx(0xDEAD_BEEF * COUNT_J * 1000, rel=1e-15)
    big = 0x0123_4567_89AB_CDEF if revision != "1.0" else 0xFFFF_FFFE
    assert gpu_metrics.parse(pack(revision, energy_accumulator=big)).energy_count == big


@pytest.mark.parametrize("revision", sorted(KERNEL))
def test_an_accumulator_left_all_ones_is_not_available(revision):
    assert gpu_metrics.parse(pack(revision, system_clock_counter=5)).energy_count is None  # RDNA4 leaves it so


def test_the_simulator_writes_what_the_kernel_layout_holds():
    from gpu_carbon_exporter.sim.amdgpu import gpu_metrics_table

    for revision in KERNEL:
        written = gpu_metrics_table(revision, energy_count=77, clock_ns=99, power_w=300, busy_pct=50, hotspot_c=60)
        expected = pack(revision, energy_accumulator=77, system_clock_counter=99)
        assert len(written) == len(expected) == SIZES[revision]
        table = gpu_metrics.parse(written)
        assert (table.energy_count, table.clock_ns) == (77, 99)


@pytest.mark.parametrize("data, reason", [
    (pack("1.8")[:2] + bytes([1, 12]) + pack("1.8")[4:], "unknown revision 1.12"),
    (pack("1.8")[:1000], "truncated: 1000 bytes, the v1_8 header says 3872"),
    (pack("1.3") + b"\0" * 8, "longer than its header says"),
    (struct.pack("=HBB", 384, 1, 6) + b"\xff" * 380, "revision 1.6 of 384 bytes; its known layout has 1664"),
    (b"\x00\x01", "truncated: 2 bytes, not even a header"),
    (bytes(range(256)) * 3, "revision 2.3 of 256 bytes; its known layout has 152"),  # garbage
    (b"\xde\xad\xbe\xef" * 100, "unknown revision 190.239 (400 bytes)"),  # garbage
    (b"", "not even a header"),
])
def test_a_table_of_no_known_layout_is_refused_with_its_reason(data, reason):
    with pytest.raises(BadTable, match=re.escape(reason)):
        gpu_metrics.parse(data)


def test_an_apu_table_has_no_accumulator():
    apu = struct.pack("=HBB", 120, 2, 1) + b"\xff" * 116  # gpu_metrics_v2_1 (power only)
    table = gpu_metrics.parse(apu)
    assert table.energy_count is None and table.revision == "2.1"


# --- Cards in sysfs ----------------------------------------------------------------------------------
def cards(entries: list[dict]):
    """Scenario devices from scenario entries."""
    return parse_scenario({"devices": entries}, "<test>").devices


def mi300x(count=1, **kw):
    return {"model": "AMD Instinct MI300X", "count": count, "power": {"pattern": "constant", "watts": 500}, **kw}


def node(tmp_path, devices, clock=None, xcp_partitions=1):
    sim = AmdgpuSimulator(tmp_path, cards(devices), xcp_partitions=xcp_partitions)
    return sim, AmdgpuSource(tmp_path, clock=clock or ManualClock())


def test_each_physical_card_once_never_a_partition_or_another_vendor(tmp_path):
    sim, src = node(tmp_path, [mi300x(2),
                               {"model": "AMD Instinct MI100", "power": {"pattern": "constant", "watts": 200}},
                               {"model": "AMD Radeon RX 9070 XT", "power": {"pattern": "constant", "watts": 150}}],
                    xcp_partitions=4)
    assert len(list((tmp_path / "sys/class/drm").glob("card*"))) == 1 + 4 + 3 * 4  # BMC VGA, cards, partitions
    devices = src.open()
    assert [d.name for d in devices] == ["AMD Instinct MI300X"] * 2 + ["AMD Instinct MI100", "AMD Radeon RX 9070 XT"]
    assert [d.index for d in devices] == [0, 1, 2, 3] and {d.kind for d in devices} == {"gpu"}
    assert {d.vendor for d in devices} == {"amd"}
    assert [d.pci_bus_id for d in devices] == ["0000:11:00.0", "0000:31:00.0", "0000:51:00.0", "0000:71:00.0"]
    assert devices[0].uuid == "amdgpu-5e3a000000000000"
    mi, _, mi100, radeon = devices
    assert mi.has_energy_counter and mi.energy_wrap_mj is None  # MI300: a 64-bit accumulator
    assert mi100.has_energy_counter and mi100.energy_wrap_mj == WRAP_32_MJ == 65_536_000  # 2^32 counts
    assert not radeon.has_energy_counter and radeon.method_without_counter == "integrated"  # all ones
    reading = src.read(mi, slow=True)
    assert reading.power_mw == 500_000 and reading.power_instant_mw == 500_000
    assert reading.memory_total_bytes == 192 * 2**30 and 0 <= reading.gpu_util_pct <= 100
    assert reading.power_limit_mw == 750_000 and reading.temperature_c and reading.sm_clock_mhz
    assert src.read(mi100, slow=False).power_average_mw == 200_000  # MI100: power1_average only
    assert src.info() == {"driver_version": "6.12.0-sim"}
    assert AmdgpuSource(tmp_path, exclude_pci=("0000:11:00.0",)).open()[0].pci_bus_id == "0000:31:00.0"


def test_no_amd_card_is_source_unavailable(tmp_path):
    with pytest.raises(SourceUnavailable, match="no AMD GPU"):
        AmdgpuSource(tmp_path).open()


def test_the_generic_hwmon_source_leaves_amdgpu_to_this_source(tmp_path):
    node(tmp_path, [mi300x()])
    assert (tmp_path / "sys/class/hwmon/hwmon2/name").read_text().strip() == "amdgpu"
    with pytest.raises(SourceUnavailable):  # denied by default: no card counted twice
        HwmonSource(tmp_path).open()
    assert len(HwmonSource(tmp_path, allow=("amdgpu",)).open()) == 1  # it is there to be denied


# --- Energy against the exact truth ------------------------------------------------------------------
def run(meter: Meter, sim: AmdgpuSimulator, clock: ManualClock, seconds: float, hz: float = 10.0,
        each_sample=None) -> list[list[float]]:
    """Samples every second, integration at ``hz`` between them; the energy of every device after each sample."""
    steps = round(seconds * hz)
    seen = []
    for step in range(1, steps + 1):
        clock.advance(1.0 / hz)
        sim.update(clock.sim)
        if step % round(hz) == 0:
            meter.sample()
            seen.append([d.counters.energy_j for d in meter.snapshot.devices])
            if each_sample is not None:
                each_sample(step // round(hz))
        else:
            meter.integrate()
    return seen


def start(tmp_path, devices, at=0.0, **kw):
    clock = ManualClock()
    clock.advance(at)
    sim = AmdgpuSimulator(tmp_path, devices if not isinstance(devices[0], dict) else cards(devices), **kw)
    sim.update(clock.sim)
    meter = Meter([AmdgpuSource(tmp_path, clock=clock)], StaticIntensity("Z", 300.0), clock=clock)
    meter.open()
    meter.sample()
    return sim, meter, clock


def never_backwards(seen: list[list[float]]) -> None:
    for before, after in zip(seen, seen[1:]):
        assert all(b <= a for b, a in zip(before, after)), (before, after)


def test_mi300x_scenario_counts_within_one_count_of_the_truth(tmp_path):
    """The built-in mi300x scenario, 8 cards on gpu_metrics v1_8, over its idle start and its training
    steps (t = 60-150 s): each card's energy is its pattern's integral within one count, 2^-16 J."""
    scenario = load_scenario("mi300x")
    sim, meter, clock = start(tmp_path, scenario.devices, at=60.0)
    seen = run(meter, sim, clock, 90.0, hz=1.0)
    never_backwards(seen)
    worst = 0.0
    for dev, snap in zip(scenario.devices, meter.snapshot.devices):
        assert snap.method == "counter" and snap.identity.uuid == dev.uuid
        truth = dev.pattern.energy(150.0) - dev.pattern.energy(60.0)
        worst = max(worst, abs(snap.counters.energy_j - truth))
        assert abs(snap.counters.energy_j - truth) <= COUNT_J + 1e-9, (dev.index, snap.counters.energy_j, truth)
    print(f"mi300x: 8 cards over 90 s, worst |counted - truth| {worst * 1e6:.1f} µJ "
          f"(one count: {COUNT_J * 1e6:.1f} µJ)")


RADEON_BOUND = 0.005  # integrated: the measured worst over the scenario's bursts, with margin (docs/gpus.md)


def test_radeon_scenario_integrates_hwmon_power_within_its_bound(tmp_path):
    """The built-in radeon scenario: no usable accumulator (all ones), so hwmon power1_input is
    integrated at 10 Hz. Over its bursts (t = 0-400 s) and the idle tail (400-600 s)."""
    scenario = load_scenario("radeon")
    sim, meter, clock = start(tmp_path, scenario.devices)
    (dev,) = scenario.devices
    errors = []

    def check(second: int) -> None:
        if second % 100 == 0:
            got, truth = meter.snapshot.devices[0].counters.energy_j, dev.pattern.energy(float(second))
            errors.append((second, got, truth, got / truth - 1))

    never_backwards(run(meter, sim, clock, 600.0, each_sample=check))
    assert meter.snapshot.devices[0].method == "integrated"
    for second, got, truth, rel in errors:
        print(f"radeon t={second:3d} s: integrated {got:9.1f} J, truth {truth:9.1f} J, error {rel:+.3%}")
    assert all(abs(rel) <= RADEON_BOUND for *_, rel in errors)


def test_a_32_bit_accumulator_wraps_without_a_step_backwards(tmp_path):
    """MI100: v1_3 over the firmware's u32 accumulator, started 5 J before its wrap (2^32 counts),
    at 300 W: it wraps within the first second, and again every 218 s."""
    mi100 = {"model": "AMD Instinct MI100", "power": {"pattern": "constant", "watts": 300},
             "energy_offset_mj": 65_536_000 - 5_000}
    sim, meter, clock = start(tmp_path, [mi100])
    first = gpu_metrics.parse((sim.cards[0] / "gpu_metrics").read_bytes()).energy_count
    seen = run(meter, sim, clock, 230.0, hz=1.0)
    last = gpu_metrics.parse((sim.cards[0] / "gpu_metrics").read_bytes()).energy_count
    assert last < first  # the table did wrap (twice)
    never_backwards(seen)
    (snap,) = meter.snapshot.devices
    assert snap.method == "counter"
    assert abs(snap.counters.energy_j - 300.0 * 230.0) <= COUNT_J + 1e-9


# --- Bad input: each degrades that card only, visibly, never backwards -------------------------------
GARBAGE = {"unknown revision": pack("1.8")[:2] + bytes([1, 12]) + pack("1.8")[4:],
           "truncated": pack("1.8")[:1000],
           "garbage": bytes(range(256)) * 3}


@pytest.mark.parametrize("what", sorted(GARBAGE))
def test_a_bad_table_at_start_falls_back_to_integration_for_that_card(tmp_path, caplog, what):
    sim = AmdgpuSimulator(tmp_path, cards([mi300x(2)]))
    sim.break_file(1, "gpu_metrics", GARBAGE[what])
    clock = ManualClock()
    meter = Meter([AmdgpuSource(tmp_path, clock=clock)], StaticIntensity("Z", 300.0), clock=clock)
    with caplog.at_level(logging.INFO):
        meter.open()
        meter.sample()
    good, bad = meter.snapshot.devices
    assert good.method == "counter" and bad.method == "integrated"
    line = next(r.getMessage() for r in caplog.records if "integrating hwmon power1_input" in r.getMessage())
    assert "AMD GPU 1 (0000:31:00.0, card2)" in line and "card2/device/gpu_metrics" in line
    assert "method=\"integrated\"" in line
    seen = run(meter, sim, clock, 10.0)
    never_backwards(seen)
    assert [d.counters.energy_j for d in meter.snapshot.devices] == pytest.approx([5000.0, 5000.0], rel=1e-6)


def test_a_table_that_turns_bad_marks_the_card_down_and_counts_the_gap_when_it_reads_again(tmp_path, caplog):
    sim, meter, clock = start(tmp_path, [mi300x(2)])
    seen = run(meter, sim, clock, 5.0, hz=1.0)
    with caplog.at_level(logging.ERROR):
        sim.break_file(0, "gpu_metrics", GARBAGE["truncated"])
        seen += run(meter, sim, clock, 5.0, hz=1.0)
    down, other = meter.snapshot.devices
    assert not down.up and other.up
    assert any("card1/device/gpu_metrics: truncated" in r.getMessage() for r in caplog.records)
    sim.heal(0, "gpu_metrics")
    seen += run(meter, sim, clock, 40.0, hz=1.0)  # retried after lost_device_retry_seconds (30 s)
    never_backwards(seen)
    assert all(d.up for d in meter.snapshot.devices)
    assert [d.counters.energy_j for d in meter.snapshot.devices] == pytest.approx([500.0 * 50] * 2, abs=2 * COUNT_J)


def test_missing_hwmon(tmp_path, caplog):
    """A counting card without hwmon keeps its energy (its power gauge follows the counter); an
    integrating one cannot be measured: it shows down, named with its directory; the others go on."""
    radeon = {"model": "AMD Radeon RX 9070 XT", "power": {"pattern": "constant", "watts": 150}}
    sim = AmdgpuSimulator(tmp_path, cards([mi300x(), radeon, radeon]))
    import shutil
    shutil.rmtree(sim.hwmon[0])
    shutil.rmtree(sim.hwmon[1])
    sim.hwmon[0].mkdir(parents=True)  # the simulator keeps writing there: nothing the source looks at
    sim.hwmon[1].mkdir(parents=True)
    clock = ManualClock()
    meter = Meter([AmdgpuSource(tmp_path, clock=clock)], StaticIntensity("Z", 300.0), clock=clock)
    with caplog.at_level(logging.INFO):
        meter.open()
        meter.sample()
        seen = run(meter, sim, clock, 10.0)
    never_backwards(seen)
    counting, lost, fine = meter.snapshot.devices
    assert counting.up and counting.method == "counter" and counting.counters.energy_j == pytest.approx(5000.0)
    assert counting.reading.power_mw == pytest.approx(500_000, rel=1e-3)
    assert not lost.up and lost.counters.energy_j == 0
    assert any("AMD GPU 1" in r.getMessage() and "no hwmon power1_input or power1_average" in r.getMessage()
               for r in caplog.records)
    assert fine.up and fine.counters.energy_j == pytest.approx(1500.0, rel=1e-6)


def test_zero_power_counts_nothing_and_nothing_negative(tmp_path):
    radeon = {"model": "AMD Radeon RX 9070 XT", "power": {"pattern": "constant", "watts": 0}}
    sim, meter, clock = start(tmp_path, [radeon, mi300x(power={"pattern": "constant", "watts": 0})])
    never_backwards(run(meter, sim, clock, 5.0))
    assert [d.counters.energy_j for d in meter.snapshot.devices] == [0.0, 0.0]
    assert all(d.up and d.reading.power_mw == 0 for d in meter.snapshot.devices)


def test_a_vanished_card_goes_down_alone(tmp_path, caplog):
    sim, meter, clock = start(tmp_path, [mi300x(2)])
    seen = run(meter, sim, clock, 3.0, hz=1.0)
    with caplog.at_level(logging.ERROR):
        sim.vanish(1)
        seen += run(meter, sim, clock, 3.0, hz=1.0)
    never_backwards(seen)
    here, gone = meter.snapshot.devices
    assert here.up and not gone.up
    assert gone.counters.energy_j == pytest.approx(1500.0, abs=COUNT_J)  # kept, not lost or rolled back
    assert any("AMD GPU 1" in r.getMessage() and "is gone" in r.getMessage() for r in caplog.records)


def test_a_firmware_reset_of_a_64_bit_accumulator_counts_from_the_new_zero(tmp_path):
    sim, meter, clock = start(tmp_path, [mi300x()])
    seen = run(meter, sim, clock, 3.0, hz=1.0)
    sim.reset_counter(0, clock.sim + 0.5)  # the firmware restarts half a second before the next sample
    seen += run(meter, sim, clock, 3.0, hz=1.0)
    never_backwards(seen)
    # what the new counter counted since its reset is kept; the half second before it is lost
    assert meter.snapshot.devices[0].counters.energy_j == pytest.approx(500.0 * 5.5, abs=2 * COUNT_J)


# --- The scenarios as users run them ----------------------------------------------------------------
@pytest.mark.parametrize("name, family", [
    ("mi300x", 'gpu_carbon_gpu_energy_joules_total{gpu="7",method="counter",uuid="amdgpu-5e3a000000000007",'
               'vendor="amd"}'),
    ("radeon", 'gpu_carbon_gpu_energy_joules_total{gpu="0",method="integrated",uuid="amdgpu-5e3a000000000000",'
               'vendor="amd"}'),
])
def test_builtin_amd_scenarios_run(name, family):
    out = subprocess.run([sys.executable, "-m", "gpu_carbon_exporter", "--simulate", name, "--once",
                          "--once.duration", "1"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert family in out.stdout


def test_a_mixed_node_reads_each_vendor_through_its_own_source(tmp_path):
    from gpu_carbon_exporter.config import parse_config
    from gpu_carbon_exporter.sim.hardware import simulated_hardware
    from gpu_carbon_exporter.startup import _simulated_sources

    scenario = parse_scenario({"devices": [
        {"model": "NVIDIA H100 80GB HBM3", "power": {"pattern": "constant", "watts": 300}},
        mi300x()]}, "<mixed>")
    hardware = simulated_hardware(scenario, lambda: 0.0)
    assert list(hardware.sections) == ["nvml", "amdgpu"]
    sources = _simulated_sources(parse_config({}, "<test>"), hardware, read_processes=False)
    found = {s.name: s.open() for s in sources}
    assert [(d.uuid, d.vendor) for d in found["nvml"]] == [(scenario.devices[0].uuid, "nvidia")]
    assert [(d.uuid, d.vendor) for d in found["amdgpu"]] == [(scenario.devices[1].uuid, "amd")]


def test_scenario_keys_for_amd_cards():
    (dev,) = parse_scenario({"devices": [mi300x(gpu_metrics="1.5")]}, "<t>").devices
    assert dev.model.amd.gpu_metrics == "1.5" and dev.model.vendor == "amd"
    (own,) = parse_scenario({"devices": [{"model": "AMD Instinct MI210", "vendor": "amd", "idle_w": 40,
                                          "max_w": 300, "power": {"pattern": "constant", "watts": 90}}]}, "<t>").devices
    assert own.model.amd is not None and own.uuid.startswith("amdgpu-")
    for entry, message in (({**mi300x(), "gpu_metrics": "1.9"}, "gpu_metrics: must be one of 1.0"),
                           ({"model": "NVIDIA H200", "gpu_metrics": "1.3",
                             "power": {"pattern": "constant", "watts": 1}}, "only for AMD models"),
                           ({**mi300x(), "vendor": "nvidia"}, "AMD Instinct MI300X is an amd model"),
                           ({**mi300x(), "mig_instances": 2}, "only for NVIDIA models")):
        with pytest.raises(ScenarioError, match=message):
            parse_scenario({"devices": [entry]}, "<t>")

