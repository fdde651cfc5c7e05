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
from gpu_carbon_exporter.meter import Meter
from gpu_carbon_exporter.names import JOULES_PER_KWH
from gpu_carbon_exporter.sources.base import DeviceLost
from gpu_carbon_exporter.sources.battery import BatterySource
from gpu_carbon_exporter.sources.hwmon import HwmonSource
from gpu_carbon_exporter.sources.network import NetworkEstimate
from gpu_carbon_exporter.sources.storage import StorageEstimate


def write(root: Path, rel: str, value: object) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")


def hwmon_tree(root: Path) -> None:
    """As the drivers lay them out: ina219 (ina2xx: in0/in1 mV, curr1 mA, power1 µW) behind i2c
    device 1-0040; the ACPI power meter (driver "power_meter", on the old registration: its name and
    power1_average µW under hwmonN/device/); a Jetson's ina3221 (voltage and current channels only;
    covered by the Jetson source); amd_energy (RAPL's registers again); a board with an energy channel
    (µJ) beside its power channel."""
    write(root, "sys/bus/i2c/devices/1-0040/name", "ina219")
    (root / "sys/class/hwmon/hwmon0").mkdir(parents=True)
    os.symlink(root / "sys/bus/i2c/devices/1-0040", root / "sys/class/hwmon/hwmon0/device")
    write(root, "sys/class/hwmon/hwmon0/name", "ina219")
    write(root, "sys/class/hwmon/hwmon0/in1_input", 5000)
    write(root, "sys/class/hwmon/hwmon0/curr1_input", 800)
    write(root, "sys/class/hwmon/hwmon0/power1_input", 4_000_000)  # 4 W
    acpi = root / "sys/devices/LNXSYSTM:00/LNXSYBUS:00/ACPI000D:00"
    write(acpi, "name", "power_meter")
    write(acpi, "power1_average", 250_000_000)  # 250 W, the whole node
    (root / "sys/class/hwmon/hwmon2").mkdir(parents=True)
    os.symlink(acpi, root / "sys/class/hwmon/hwmon2/device")
    write(root, "sys/class/hwmon/hwmon3/name", "ina3221")
    write(root, "sys/class/hwmon/hwmon3/in1_input", 12000)  # 12 V
    write(root, "sys/class/hwmon/hwmon3/curr1_input", 500)  # 0.5 A
    write(root, "sys/class/hwmon/hwmon4/name", "amd_energy")
    write(root, "sys/class/hwmon/hwmon4/energy1_input", 123_000_000)
    write(root, "sys/class/hwmon/hwmon5/name", "smartpower")
    write(root, "sys/class/hwmon/hwmon5/energy1_input", 1_000_000)  # µJ
    write(root, "sys/class/hwmon/hwmon5/power1_input", 3_000_000)
    write(root, "sys/class/hwmon/hwmon5/energy1_label", "board")


def test_hwmon_channels_units_and_no_double_counting(tmp_path):
    hwmon_tree(tmp_path)
    pairs = ({"driver": "ina219", "voltage": "in1", "current": "curr1"},  # ignored: it has a power channel
             {"driver": "ina3221", "voltage": "in1", "current": "curr1", "label": "12V"})
    src = HwmonSource(tmp_path, pairs=pairs)
    devices = {d.uuid: d for d in src.open()}
    # ina3221 (Jetson) and amd_energy (RAPL) are left to their sources; smartpower's power channel
    # is not a second device beside its energy counter; ina219's pair is not one beside its power
    assert sorted(devices) == ["hwmon:ina219:1-0040:power1", "hwmon:power_meter:ACPI000D:00:power1",
                               "hwmon:smartpower:hwmon5:energy1"]
    ina = devices["hwmon:ina219:1-0040:power1"]  # keyed by the i2c device, not the hwmon number
    assert src.read(ina, slow=True).power_mw == 4000
    assert dict(ina.labels) == {"sensor": "hwmon0", "driver": "ina219", "channel": "power1", "label": "power1"}
    meter_node = devices["hwmon:power_meter:ACPI000D:00:power1"]
    assert meter_node.kind == "node" and dict(meter_node.labels) == {"source": "power_meter"}
    assert not meter_node.fast_integration and src.read(meter_node, slow=True).power_mw == 250_000
    board = devices["hwmon:smartpower:hwmon5:energy1"]
    assert board.has_energy_counter and src.read(board, slow=True).energy_mj == 1000.0
    jetson = HwmonSource(tmp_path, allow=("ina3221",), pairs=pairs)
    only = {d.uuid: d for d in jetson.open()}
    assert list(only) == ["hwmon:ina3221:hwmon3:in1*curr1"]  # an allow list overrides the default deny
    assert jetson.read(only["hwmon:ina3221:hwmon3:in1*curr1"], slow=True).power_mw == 6000  # 12 V × 0.5 A
    (whole,) = HwmonSource(tmp_path, allow=("ina219",), whole_device=("ina219",)).open()
    assert whole.kind == "node" and dict(whole.labels) == {"source": "ina219"}  # on a board's input


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
    (dev,) = src.open()  # both batteries together: one whole-device meter, like a BMC
    assert dev.kind == "node" and dict(dev.labels) == {"source": "battery"}
    assert src.read(dev, slow=True).power_mw == 14_500 + 8_880
    write(tmp_path, "sys/class/power_supply/BAT1/status", "Full")  # the second one idle
    meter = Meter([src], StaticIntensity("Z", 400.0), clock=clock)
    meter.open()
    meter.sample()
    for _ in range(10):  # 10 s on battery
        clock.advance(1.0)
        meter.sample()
    for status in ("Charging", "Full"):  # 5 s on the wall each: the battery supplies nothing
        write(tmp_path, "sys/class/power_supply/BAT0/status", status)
        for _ in range(5):
            clock.advance(1.0)
            meter.sample()
    (snap,) = meter.snapshot.devices
    assert snap.counters.energy_j == pytest.approx(145.0, abs=14.5 / 2 + 1)  # 10 s at 14.5 W (one step's trapezoid)
    write(tmp_path, "sys/class/power_supply/BAT0/status", "Discharging")
    import shutil
    shutil.rmtree(tmp_path / "sys/class/power_supply/BAT1")  # the second one removed: the first still counts
    assert src.read(dev, slow=True).power_mw == 14_500
    shutil.rmtree(tmp_path / "sys/class/power_supply/BAT0")  # none left
    with pytest.raises(DeviceLost):
        src.read(dev, slow=True)
    write(tmp_path, "sys/class/power_supply/BAT0/type", "Battery")  # a garbled reading
    write(tmp_path, "sys/class/power_supply/BAT0/status", "Discharging")
    write(tmp_path, "sys/class/power_supply/BAT0/power_now", "n/a")
    with pytest.raises(DeviceLost):
        src.read_power_mw(dev)


def test_a_battery_is_a_whole_device_meter_the_cpu_is_inside(tmp_path, clock):
    """A laptop: RAPL measures the CPU, the battery the whole device. The CPU is accounted, the
    battery only for the rest, as for a BMC: no joule twice."""
    from gpu_carbon_exporter.sim.patterns import Constant
    from gpu_carbon_exporter.sim.sysfs import SysfsSimulator
    from gpu_carbon_exporter.sources.rapl import RaplSource

    battery_tree(tmp_path)
    write(tmp_path, "sys/class/power_supply/BAT1/status", "Full")
    SysfsSimulator(tmp_path, rapl=Constant(5.0)).update(0.0)
    meter = Meter([RaplSource(tmp_path, clock=clock), BatterySource(tmp_path, clock=clock)],
                  StaticIntensity("Z", 400.0), clock=clock)
    meter.open()
    meter.sample()
    sim = SysfsSimulator(tmp_path, rapl=Constant(5.0))
    for i in range(1, 11):
        clock.advance(1.0)
        sim.update(float(i))
        meter.sample()
    devices = {d.identity.uuid: d for d in meter.snapshot.devices}
    node = devices["battery"].counters
    cpu = sum(d.counters.energy_j for d in devices.values() if d.identity.kind == "cpu" and d.identity.accounted)
    assert cpu > 0 and node.rest_energy_j == pytest.approx(node.energy_j - cpu, rel=0.05)


def test_network_estimate_over_real_loopback_traffic():
    """A loopback-only traffic generator, read through the real /proc/net/dev: the estimate is the
    bytes that crossed lo (each counted received and sent) × the intensity."""
    src = NetworkEstimate("/", kwh_per_gb=0.06, include=("lo",))
    (lo,) = src.open()
    assert dict(lo.labels) == {"interface": "lo", "scope": "network"} and lo.counter_method == "estimated"
    first = src.read(lo, slow=True).energy_mj
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
    joules = (src.read(lo, slow=True).energy_mj - first) / 1000  # the cumulative estimate's rise
    want = 2 * len(payload) * 0.06 * JOULES_PER_KWH / 1e9  # rx + tx of every byte on lo
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
    netdev(tmp_path, {"lo": (10, 10), "eth0": (1000, 500), "veth12ab": (77, 77), "ib0": (0, 0), "docker0": (5, 5)})
    src = NetworkEstimate(tmp_path, kwh_per_gb=1.0, exclude=("ib0",), clock=clock)
    (eth0,) = src.open()  # not lo, veth (virtual), ib0 (excluded) nor docker0 (not in /sys/class/net)
    assert eth0.name == "eth0" and eth0.has_energy_counter and eth0.counter_method == "estimated"
    first = src.read(eth0, slow=True)
    assert first.power_mw is None and first.energy_mj == pytest.approx(1500 * 3.6e6 / 1e9 * 1000)
    clock.advance(2.0)
    netdev(tmp_path, {"lo": (10, 10), "eth0": (1000 + 10**6, 500 + 10**6), "veth12ab": (77, 77), "ib0": (0, 0),
                      "docker0": (5, 5)})
    assert src.read(eth0, slow=True).power_mw == int(2e6 * 3.6e6 / 1e9 / 2.0 * 1000)  # 2 MB in 2 s at 1 kWh/GB


def disks(root: Path, busy: dict[str, int], uptime: float = 1000.0) -> None:
    lines = [f"   8       0 {n} 100 0 800 10 200 0 1600 20 0 {ms} 30 0 0 0 0" for n, ms in busy.items()]
    write(root, "proc/diskstats", "\n".join(lines))
    write(root, "proc/uptime", f"{uptime:.2f} 1800.00")


def disk_tree(root: Path) -> None:
    for name, rotational in (("sda", 1), ("nvme0n1", 0), ("sdb", 0)):
        write(root, f"sys/block/{name}/queue/rotational", rotational)
        (root / f"sys/block/{name}/device").mkdir(parents=True)
    for name in ("loop0", "dm-0", "md0"):  # virtual: on the same disks, or none
        write(root, f"sys/block/{name}/queue/rotational", 0)
    write(root, "sys/block/sdc/removable", 1)  # a USB stick: not the node's storage
    write(root, "sys/block/sdc/queue/rotational", 1)
    (root / "sys/block/sdc/device").mkdir(parents=True)
    (root / "sys/block/sr0/device").mkdir(parents=True)  # an optical drive
    disks(root, {"sda": 0, "sda1": 0, "nvme0n1": 0, "sdb": 0, "loop0": 0, "dm-0": 0, "md0": 0, "sdc": 0, "sr0": 0})


def test_storage_estimate_by_class_and_busy_time(tmp_path, clock):
    disk_tree(tmp_path)
    src = StorageEstimate(tmp_path, watts={"nvme": (2.0, 10.0)}, clock=clock)
    devices = {d.name: d for d in src.open()}
    assert {n: dict(d.labels)["class"] for n, d in devices.items()} == {"sda": "hdd", "nvme0n1": "nvme", "sdb": "ssd"}
    first = {n: src.read(d, slow=True).energy_mj for n, d in devices.items()}  # since boot: idle × uptime
    assert first == {"sda": 5_000_000, "nvme0n1": 2_000_000, "sdb": 500_000}
    disks(tmp_path, {"sda": 250, "sda1": 250, "nvme0n1": 1000, "sdb": 0, "loop0": 9, "dm-0": 9, "md0": 9},
          uptime=1001.0)
    readings = {n: src.read(d, slow=True) for n, d in devices.items()}
    assert {n: r.power_mw for n, r in readings.items()} == {"sda": int((5 + 3 * 0.25) * 1000), "nvme0n1": 10_000,
                                                             "sdb": 500}
    assert readings["sda"].energy_mj - first["sda"] == pytest.approx(5750.0)  # 1 s at 5 W + 0.25 s busy × 3 W


def test_storage_is_accounted_only_without_a_whole_node_meter(tmp_path, clock):
    disk_tree(tmp_path)
    hwmon_tree(tmp_path)
    alone = Meter([StorageEstimate(tmp_path, clock=clock)], StaticIntensity("Z", 400.0), clock=clock)
    alone.open()
    alone.sample()
    assert [d.identity.accounted for d in alone.snapshot.devices] == [True, True, True]
    assert {d.method for d in alone.snapshot.devices} == {"estimated"}
    with_node = Meter([StorageEstimate(tmp_path, clock=clock), HwmonSource(tmp_path, allow=("power_meter",))],
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
    meter = Meter([HwmonSource(tmp_path, allow=("power_meter",)), net], StaticIntensity("Z", 400.0), pue=1.5,
                  wue_liters_per_kwh=2.0, clock=clock)
    meter.open()
    meter.sample()
    for i in range(10):
        clock.advance(1.0)
        netdev(tmp_path, {"eth0": (10**5 * (i + 1), 0)})  # 100 kB/s at 1 kWh/GB: 360 W, outside
        meter.sample()
    snap = {d.identity.kind: d for d in meter.snapshot.devices}
    assert snap["network"].counters.energy_j == pytest.approx(3600.0, rel=1e-9)  # a counter: every byte
    # its own emissions, at this node's intensity but without the site's PUE, and no water
    assert snap["network"].counters.emissions_g == pytest.approx(3600.0 / 3.6e6 * 400.0, rel=1e-6)
    assert snap["network"].counters.water_l == 0
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
    src = HwmonSource(tmp_path, whole_device=("ina219",), clock=clock) if kind == "rpi" else \
        BatterySource(tmp_path, clock=clock)
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
    assert dev.identity.kind == "node" and \
        dict(dev.identity.labels)["source"] == ("ina219" if kind == "rpi" else "battery")
    assert dev.counters.energy_j == pytest.approx(pattern.energy(30.0) - pattern.energy(0.0), rel=0.02)


def test_builtin_edge_scenarios_for_the_new_devices_run(tmp_path):
    import subprocess
    import sys

    for name, family in (("edge-rpi", 'gpu_carbon_node_energy_joules_total{method="integrated",source="ina219"}'),
                         ("edge-laptop", 'gpu_carbon_node_energy_joules_total{method="integrated",source="battery"}')):
        out = subprocess.run([sys.executable, "-m", "gpu_carbon_exporter", "--simulate", name, "--once",
                              "--once.duration", "1"], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert family in out.stdout, name
