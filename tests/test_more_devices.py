"""More devices and the rest of the footprint: generic hwmon sensors (ina2xx, ACPI power meters),
battery-powered devices, estimated network and storage energy — each over a sysfs/procfs tree laid
out as the real drivers lay theirs out, through the production sources and the meter."""
from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import pytest

from gpu_carbon_exporter.carbon.static import StaticIntensity
from gpu_carbon_exporter.config import ConfigError, parse_config
from gpu_carbon_exporter.meter import Meter
from gpu_carbon_exporter.sources.base import DeviceLost, SourceUnavailable
from gpu_carbon_exporter.sources.battery import BatterySource
from gpu_carbon_exporter.sources.hwmon import HwmonSource
from gpu_carbon_exporter.sources.network import J_PER_KWH, NetworkEstimate
from gpu_carbon_exporter.sources.storage import StorageEstimate


def write(root: Path, rel: str, value: object) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")


def hwmon_tree(root: Path) -> None:
    """ina219 (ina2xx driver: in0/in1 mV, curr1 mA, power1 µW), an ina226 wired so that only its
    shunt voltage and current channels are there, an ACPI power meter (power1_average µW), a
    Jetson's ina3221 and RAPL's amd_energy (covered by their own sources), and a board with an
    energy channel (µJ)."""
    write(root, "sys/class/hwmon/hwmon0/name", "ina219")
    write(root, "sys/class/hwmon/hwmon0/in1_input", 5000)
    write(root, "sys/class/hwmon/hwmon0/curr1_input", 800)
    write(root, "sys/class/hwmon/hwmon0/power1_input", 4_000_000)  # 4 W
    write(root, "sys/class/hwmon/hwmon1/name", "ina226")
    write(root, "sys/class/hwmon/hwmon1/in1_input", 12000)  # 12 V
    write(root, "sys/class/hwmon/hwmon1/curr1_input", 500)  # 0.5 A
    write(root, "sys/class/hwmon/hwmon2/name", "acpi_power_meter")
    write(root, "sys/class/hwmon/hwmon2/power1_average", 250_000_000)  # 250 W, the whole node
    write(root, "sys/class/hwmon/hwmon3/name", "ina3221")
    write(root, "sys/class/hwmon/hwmon3/in1_input", 5000)
    write(root, "sys/class/hwmon/hwmon3/power1_input", 9_000_000)
    write(root, "sys/class/hwmon/hwmon4/name", "amd_energy")
    write(root, "sys/class/hwmon/hwmon4/energy1_input", 123_000_000)
    write(root, "sys/class/hwmon/hwmon5/name", "smartpower")
    write(root, "sys/class/hwmon/hwmon5/energy1_input", 1_000_000)  # µJ
    write(root, "sys/class/hwmon/hwmon5/power1_input", 3_000_000)
    write(root, "sys/class/hwmon/hwmon5/energy1_label", "board")


def test_hwmon_channels_units_and_no_double_counting(tmp_path):
    hwmon_tree(tmp_path)
    src = HwmonSource(tmp_path, pairs=({"driver": "ina226", "voltage": "in1", "current": "curr1", "label": "12V"},))
    devices = {d.uuid: d for d in src.open()}
    # ina3221 (Jetson) and amd_energy (RAPL) are left to their sources; smartpower's power channel
    # is not a second device beside its energy counter
    assert sorted(devices) == ["hwmon:hwmon0:power1", "hwmon:hwmon1:in1*curr1", "hwmon:hwmon2:power1",
                               "hwmon:hwmon5:energy1"]
    assert src.read(devices["hwmon:hwmon0:power1"], slow=True).power_mw == 4000
    assert src.read(devices["hwmon:hwmon1:in1*curr1"], slow=True).power_mw == 6000  # 12 V × 0.5 A
    meter_node = devices["hwmon:hwmon2:power1"]
    assert meter_node.kind == "node" and not meter_node.fast_integration  # a whole-node meter, like a BMC
    assert src.read(meter_node, slow=True).power_mw == 250_000
    board = devices["hwmon:hwmon5:energy1"]
    assert board.has_energy_counter and src.read(board, slow=True).energy_mj == 1000.0
    assert dict(devices["hwmon:hwmon0:power1"].labels) == {"sensor": "hwmon0", "driver": "ina219",
                                                           "channel": "power1", "label": "power1"}
    only = HwmonSource(tmp_path, allow=("ina3221",)).open()  # an allow list overrides the default deny
    assert [d.uuid for d in only] == ["hwmon:hwmon3:power1"]


def test_hwmon_faults_degrade_the_sensor_only(tmp_path):
    hwmon_tree(tmp_path)
    src = HwmonSource(tmp_path)
    devices = {d.uuid: d for d in src.open()}
    write(tmp_path, "sys/class/hwmon/hwmon0/power1_input", "garbage")  # a read error
    with pytest.raises(DeviceLost):
        src.read(devices["hwmon:hwmon0:power1"], slow=True)
    import shutil
    shutil.rmtree(tmp_path / "sys/class/hwmon/hwmon5")  # a sensor that disappears (unplugged, unbound)
    with pytest.raises(DeviceLost):
        src.read(devices["hwmon:hwmon5:energy1"], slow=True)
    assert src.read(devices["hwmon:hwmon2:power1"], slow=True).power_mw == 250_000
    with pytest.raises(SourceUnavailable):
        HwmonSource(tmp_path / "empty").open()


def test_hwmon_config_is_checked():
    with pytest.raises(ConfigError, match="sources.hwmon.pairs"):
        parse_config({"sources": {"hwmon": {"pairs": [{"driver": "ina226", "voltage": "curr1", "current": "in1"}]}}})
    with pytest.raises(ConfigError, match="sources.hwmon.deny_drivers"):
        parse_config({"sources": {"hwmon": {"deny_drivers": "ina3221"}}})


def test_hwmon_energy_through_the_meter(tmp_path, clock):
    """Counter channel: exact deltas; power channel: integrated; 10 s of both."""
    hwmon_tree(tmp_path)
    src = HwmonSource(tmp_path, deny=("ina3221", "amd_energy", "acpi_power_meter", "ina226"), clock=clock)
    meter = Meter([src], StaticIntensity("Z", 400.0), clock=clock)
    meter.open()
    meter.sample()
    for i in range(100):
        clock.advance(0.1)
        write(tmp_path, "sys/class/hwmon/hwmon5/energy1_input", 1_000_000 + 300_000 * (i + 1))  # 3 W
        meter.integrate()
    meter.sample()
    energy = {d.identity.uuid: d.counters.energy_j for d in meter.snapshot.devices}
    assert energy["hwmon:hwmon5:energy1"] == pytest.approx(30.0, rel=1e-6)
    assert energy["hwmon:hwmon0:power1"] == pytest.approx(40.0, rel=0.02)


def battery_tree(root: Path) -> None:
    """A laptop battery with power_now (µW), a handheld's with current_now (µA) × voltage_now
    (µV), and the AC adapter (type Mains), which is not a battery."""
    write(root, "sys/class/power_supply/BAT0/type", "Battery")
    write(root, "sys/class/power_supply/BAT0/status", "Discharging")
    write(root, "sys/class/power_supply/BAT0/power_now", 14_500_000)  # 14.5 W
    write(root, "sys/class/power_supply/BAT1/type", "Battery")
    write(root, "sys/class/power_supply/BAT1/status", "Discharging")
    write(root, "sys/class/power_supply/BAT1/current_now", -1_200_000)  # signed by some drivers
    write(root, "sys/class/power_supply/BAT1/voltage_now", 7_400_000)  # 1.2 A × 7.4 V = 8.88 W
    write(root, "sys/class/power_supply/AC/type", "Mains")
    write(root, "sys/class/power_supply/AC/online", 0)


def test_battery_discharge_power_charging_and_removal(tmp_path, clock):
    battery_tree(tmp_path)
    src = BatterySource(tmp_path, clock=clock)
    devices = {d.uuid: d for d in src.open()}
    assert sorted(devices) == ["battery:BAT0", "battery:BAT1"]
    assert src.read(devices["battery:BAT0"], slow=True).power_mw == 14_500
    assert src.read(devices["battery:BAT1"], slow=True).power_mw == 8_880
    meter = Meter([src], StaticIntensity("Z", 400.0), clock=clock)
    meter.open()
    meter.sample()
    for _ in range(100):  # 10 s on battery
        clock.advance(0.1)
        meter.integrate()
    meter.sample()
    for status in ("Charging", "Full"):  # 5 s on the wall each: the battery supplies nothing
        write(tmp_path, "sys/class/power_supply/BAT0/status", status)
        for _ in range(50):
            clock.advance(0.1)
            meter.integrate()
        meter.sample()
    energy = {d.identity.uuid: d.counters.energy_j for d in meter.snapshot.devices}
    assert energy["battery:BAT0"] == pytest.approx(145.0, rel=0.02)  # only the 10 s on battery
    import shutil
    shutil.rmtree(tmp_path / "sys/class/power_supply/BAT1")  # removed
    with pytest.raises(DeviceLost):
        src.read(devices["battery:BAT1"], slow=True)


def test_network_estimate_over_real_loopback_traffic():
    """A loopback-only traffic generator, read through the real /proc/net/dev: the estimate is the
    bytes that crossed lo (each counted received and sent) × the intensity."""
    src = NetworkEstimate("/", kwh_per_gb=0.06, include=("lo",))
    (lo,) = src.open()
    assert dict(lo.labels) == {"interface": "lo", "scope": "network"} and lo.method_without_counter == "estimated"
    src.read(lo, slow=True)  # primes the counter
    payload = b"x" * (8 << 20)
    server = socket.create_server(("127.0.0.1", 0))
    received = []

    def sink() -> None:
        conn, _ = server.accept()
        with conn:
            while chunk := conn.recv(1 << 20):
                received.append(len(chunk))

    t = threading.Thread(target=sink)
    t.start()
    with socket.create_connection(server.getsockname()) as c:
        c.sendall(payload)
    t.join(10)
    server.close()
    prev_total, prev_t = src._last["lo"]
    mw = src.read(lo, slow=True).power_mw
    joules = mw / 1000 * (src._last["lo"][1] - prev_t)
    want = 2 * len(payload) * 0.06 * J_PER_KWH / 1e9  # rx + tx of every byte on lo
    assert sum(received) == len(payload)
    assert want * 0.98 <= joules <= want * 1.25  # TCP/IP headers and other loopback traffic on top


def netdev(root: Path, counters: dict[str, tuple[int, int]]) -> None:
    lines = ["Inter-|   Receive                                                |  Transmit",
             " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls "
             "carrier compressed"]
    lines += [f"{n:>6}: {rx} 0 0 0 0 0 0 0 {tx} 0 0 0 0 0 0 0" for n, (rx, tx) in counters.items()]
    write(root, "proc/net/dev", "\n".join(lines))


def test_network_excludes_loopback_and_virtual_interfaces(tmp_path, clock):
    netdev(tmp_path, {"lo": (10, 10), "eth0": (1000, 500), "veth12ab": (77, 77), "ib0": (0, 0)})
    for name, target in (("eth0", "devices/pci0000:00/0000:00:03.0/net/eth0"), ("ib0", "devices/pci0000:00/ib0"),
                         ("veth12ab", "devices/virtual/net/veth12ab"), ("lo", "devices/virtual/net/lo")):
        (tmp_path / "sys" / target).mkdir(parents=True)
        (tmp_path / "sys/class/net").mkdir(parents=True, exist_ok=True)
        os.symlink(tmp_path / "sys" / target, tmp_path / "sys/class/net" / name)
    src = NetworkEstimate(tmp_path, kwh_per_gb=1.0, exclude=("ib0",), clock=clock)
    (eth0,) = src.open()
    assert eth0.name == "eth0"
    assert src.read(eth0, slow=True).power_mw == 0
    clock.advance(2.0)
    netdev(tmp_path, {"lo": (10, 10), "eth0": (1000 + 10**6, 500 + 10**6), "veth12ab": (77, 77), "ib0": (0, 0)})
    assert src.read(eth0, slow=True).power_mw == int(2e6 * 3.6e6 / 1e9 / 2.0 * 1000)  # 2 MB in 2 s at 1 kWh/GB


def disks(root: Path, busy: dict[str, int]) -> None:
    lines = [f"   8       0 {n} 100 0 800 10 200 0 1600 20 0 {ms} 30 0 0 0 0" for n, ms in busy.items()]
    write(root, "proc/diskstats", "\n".join(lines))


def disk_tree(root: Path) -> None:
    for name, rotational in (("sda", 1), ("nvme0n1", 0), ("sdb", 0)):
        write(root, f"sys/block/{name}/queue/rotational", rotational)
        (root / f"sys/block/{name}/device").mkdir(parents=True)
    for name in ("loop0", "dm-0", "md0"):  # virtual: on the same disks, or none
        write(root, f"sys/block/{name}/queue/rotational", 0)
    disks(root, {"sda": 0, "sda1": 0, "nvme0n1": 0, "sdb": 0, "loop0": 0, "dm-0": 0, "md0": 0})


def test_storage_estimate_by_class_and_busy_time(tmp_path, clock):
    disk_tree(tmp_path)
    src = StorageEstimate(tmp_path, watts={"nvme": (2.0, 10.0)}, clock=clock)
    devices = {d.name: d for d in src.open()}
    assert {n: dict(d.labels)["class"] for n, d in devices.items()} == {"sda": "hdd", "nvme0n1": "nvme", "sdb": "ssd"}
    for d in devices.values():
        src.read(d, slow=True)
    clock.advance(1.0)
    disks(tmp_path, {"sda": 250, "sda1": 250, "nvme0n1": 1000, "sdb": 0, "loop0": 9, "dm-0": 9, "md0": 9})
    power = {n: src.read(d, slow=True).power_mw for n, d in devices.items()}
    assert power == {"sda": int((5 + 3 * 0.25) * 1000), "nvme0n1": 10_000, "sdb": 500}


def test_storage_is_accounted_only_without_a_whole_node_meter(tmp_path, clock):
    disk_tree(tmp_path)
    hwmon_tree(tmp_path)
    alone = Meter([StorageEstimate(tmp_path, clock=clock)], StaticIntensity("Z", 400.0), clock=clock)
    alone.open()
    alone.sample()
    assert [d.identity.accounted for d in alone.snapshot.devices] == [True, True, True]
    with_node = Meter([StorageEstimate(tmp_path, clock=clock), HwmonSource(tmp_path, allow=("acpi_power_meter",))],
                      StaticIntensity("Z", 400.0), clock=clock)
    with_node.open()
    with_node.sample()
    kinds = {d.identity.kind: d.identity.accounted for d in with_node.snapshot.devices}
    assert kinds == {"storage": False, "node": True}  # the ACPI meter measures the disks already


def test_network_energy_is_never_taken_out_of_a_whole_node_reading(tmp_path, clock):
    """The node's own 250 W is its rest once its parts are taken out: the network's energy, spent
    outside the node, is not one of its parts."""
    hwmon_tree(tmp_path)
    netdev(tmp_path, {"eth0": (0, 0)})
    (tmp_path / "sys/devices/pci/eth0").mkdir(parents=True)
    (tmp_path / "sys/class/net").mkdir(parents=True)
    os.symlink(tmp_path / "sys/devices/pci/eth0", tmp_path / "sys/class/net/eth0")
    net = NetworkEstimate(tmp_path, kwh_per_gb=1.0, clock=clock)
    meter = Meter([HwmonSource(tmp_path, allow=("acpi_power_meter",)), net], StaticIntensity("Z", 400.0), clock=clock)
    meter.open()
    meter.sample()
    for i in range(10):
        clock.advance(1.0)
        netdev(tmp_path, {"eth0": (10**5 * (i + 1), 0)})  # 100 kB/s at 1 kWh/GB: 360 W, outside
        meter.sample()
    snap = {d.identity.kind: d for d in meter.snapshot.devices}
    assert snap["network"].counters.energy_j == pytest.approx(3600.0, rel=0.15)
    assert snap["network"].counters.emissions_g > 0  # its own emissions, at this node's intensity
    assert snap["node"].counters.rest_energy_j == pytest.approx(snap["node"].counters.energy_j, rel=1e-9)


@pytest.mark.parametrize("kind", ["rpi", "laptop"])
def test_simulated_raspberry_pi_and_laptop_against_ground_truth(tmp_path, clock, kind):
    """The fleet's new simulated devices (scenarios edge-rpi and edge-laptop): the production
    hwmon or battery source over the simulated tree, integrated at 10 Hz, against the pattern's
    exact integral."""
    from gpu_carbon_exporter.sim.patterns import Square
    from gpu_carbon_exporter.sim.sysfs import EdgeBoard, SysfsSimulator

    pattern = Square(3.0, 0.5, 9.0, 3.0) if kind == "rpi" else Square(4.0, 0.25, 45.0, 6.0)
    sim = SysfsSimulator(tmp_path, EdgeBoard(kind, pattern))
    src = HwmonSource(tmp_path, clock=clock) if kind == "rpi" else BatterySource(tmp_path, clock=clock)
    meter = Meter([src], StaticIntensity("Z", 300.0), clock=clock)
    t = 0.0
    meter.open()
    meter.sample()
    for i in range(1, 301):  # 30 s
        t = i * 0.1
        clock.advance(0.1)
        sim.update(t)
        meter.integrate()
        if i % 10 == 0:
            meter.sample()
    (dev,) = meter.snapshot.devices
    assert dev.identity.kind == ("hwmon" if kind == "rpi" else "battery")
    assert dev.counters.energy_j == pytest.approx(pattern.energy(30.0) - pattern.energy(0.0), rel=0.02)


def test_builtin_edge_scenarios_for_the_new_devices_run(tmp_path):
    import subprocess
    import sys

    for name, family in (("edge-rpi", "gpu_carbon_hwmon_energy_joules_total"),
                         ("edge-laptop", "gpu_carbon_battery_energy_joules_total")):
        out = subprocess.run([sys.executable, "-m", "gpu_carbon_exporter", "--simulate", name, "--once",
                              "--once.duration", "1"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert family in out.stdout, name
