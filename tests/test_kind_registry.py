"""A device kind is one registered record (kinds.py): a kind and a source that only this test
module declares reach the exposition, the meter's double-count rules, the recording rules, the
health alerts and the dashboards, with no edit to the package. Each test unregisters what it
registered, and the last one checks that the generated files are the committed ones again."""
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.registry import CollectorRegistry

# The configuration schema is built from the source registry when config.py is first imported:
# import it before the dummy source is registered, so that the schema never holds it.
import gpu_carbon_exporter.config  # noqa: F401
from gpu_carbon_exporter import dashboards, mixin, plugins
from gpu_carbon_exporter.carbon.static import StaticIntensity
from gpu_carbon_exporter.collector import SnapshotCollector
from gpu_carbon_exporter.kinds import Accounting, DeviceKind, kinds, register_kind, unregister_kind
from gpu_carbon_exporter.meter import Meter
from gpu_carbon_exporter.sources.base import DeviceIdentity, DeviceReading, DeviceSource

ROOT = Path(__file__).resolve().parent.parent
JOULES_PER_KWH = 3.6e6

# An FPGA card: a part of the node, measured, every device accounted; listed between hwmon and cpu.
FPGA = DeviceKind(name="fpga", label="FPGA card", doc="FPGA accelerator card", accounting=Accounting.EVERY,
                  order=45)
# A satellite uplink estimate: spent outside the node, like the network's.
UPLINK = DeviceKind(name="uplink", label="uplink", doc="satellite uplink (estimated)", accounting=Accounting.EVERY,
                    inside_node=False, estimate=True, legend="uplinks", order=75)
# A fan estimate: inside the node, measured already by a whole-node meter where there is one.
FANS = DeviceKind(name="fans", label="fan", doc="fans (estimated)", accounting=Accounting.MARKED,
                  covered_by_node_meter=True, estimate=True, order=65)


class DummySource(DeviceSource):
    """One device of ``kind`` at a constant power, integrated by the meter."""

    def __init__(self, kind: str, watts: float, labels: tuple[tuple[str, str], ...]) -> None:
        self.name, self.kind, self.watts, self.labels = kind, kind, watts, labels

    def open(self) -> list[DeviceIdentity]:
        return [DeviceIdentity(index=0, uuid=f"{self.kind}:0", name=self.kind, kind=self.kind,
                               has_energy_counter=False, labels=self.labels)]

    def read_power_mw(self, device: DeviceIdentity) -> int | None:
        return int(self.watts * 1000)

    def read(self, device: DeviceIdentity, *, slow: bool) -> DeviceReading:
        return DeviceReading(power_mw=self.read_power_mw(device))


def _fpga_factory(section: dict, ctx: plugins.SourceContext) -> list[DeviceSource]:
    return [DummySource("fpga", section["watts"], (("card", "0"),))] if section["enabled"] else []


@pytest.fixture
def registered():
    """The three kinds and the FPGA source plug-in, for one test only."""
    for kind in (FPGA, UPLINK, FANS):
        register_kind(kind)
    plugins.register("source", "fpga", _fpga_factory, "a dummy FPGA card",
                     schema={"enabled": (bool, True, None), "watts": (float, 25.0, None)})
    try:
        yield
    finally:
        plugins.unregister("source", "fpga")
        for kind in (FPGA, UPLINK, FANS):
            unregister_kind(kind.name)


def _run(sources: list[DeviceSource], clock, pue: float = 1.0) -> tuple[Meter, str]:
    """Two samples 10 s apart, and the real collector's exposition of the meter's snapshot."""
    meter = Meter(sources, StaticIntensity("Z", 360.0), pue=pue, clock=clock)
    meter.open()
    meter.sample()
    for _ in range(10):
        clock.advance(1.0)
        meter.sample()
    reg = CollectorRegistry(auto_describe=False)
    reg.register(SnapshotCollector(lambda: meter.snapshot, clock=clock))
    return meter, generate_latest(reg).decode()


def _device(meter: Meter, kind: str):
    return next(d for d in meter.snapshot.devices if d.identity.kind == kind)


def test_kinds_are_listed_in_order_and_registered_once(registered):
    names = [k.name for k in kinds()]
    # By order, not by import: the built-in kinds as the committed rules list them, the new ones among them.
    assert [n for n in names if n not in ("fpga", "fans", "uplink")] == \
        ["gpu", "board", "rail", "hwmon", "cpu", "storage", "network", "node"]
    assert names.index("fpga") == names.index("hwmon") + 1 and names.index("fans") == names.index("storage") + 1
    assert names.index("uplink") == names.index("network") + 1
    with pytest.raises(ValueError, match="registered twice"):
        register_kind(FPGA)


def test_a_new_kind_reaches_the_exposition(registered, clock):
    (source,) = plugins.family("source")["fpga"].factory({"enabled": True, "watts": 25.0}, plugins.SourceContext())
    meter, text = _run([source], clock, pue=1.2)
    # Named as its record says (the HELP text), counted like any part of the node (PUE applies).
    assert "# HELP gpu_carbon_fpga_up 1 if the FPGA accelerator card answered its last sample." in text
    assert 'gpu_carbon_fpga_up{card="0"} 1.0' in text
    assert 'gpu_carbon_fpga_power_watts{card="0",method="integrated"} 25.0' in text
    fpga = _device(meter, "fpga")
    assert fpga.counters.energy_j == pytest.approx(250.0)
    assert fpga.counters.emissions_g == pytest.approx(250.0 / JOULES_PER_KWH * 360.0 * 1.2)
    assert f'gpu_carbon_fpga_emissions_grams_total{{card="0"}} {fpga.counters.emissions_g!r}' in text


def test_the_meter_applies_a_new_kinds_double_count_rules(registered, clock):
    """Outside the node: no PUE, and not taken out of a whole-node meter's reading. Covered by a
    whole-node meter: exposed, not accounted, where one is."""
    node = DummySource("node", 100.0, (("source", "dummy"),))
    meter, text = _run([DummySource("uplink", 10.0, (("link", "sat0"),)), DummySource("fans", 5.0, (("fan", "0"),)),
                        node], clock, pue=1.5)
    uplink, fans = _device(meter, "uplink"), _device(meter, "fans")
    assert uplink.counters.emissions_g == pytest.approx(100.0 / JOULES_PER_KWH * 360.0)  # 10 W x 10 s, no PUE
    assert not fans.identity.accounted and fans.counters.emissions_g == 0.0
    assert "gpu_carbon_fans_energy_joules_total" in text and "gpu_carbon_fans_emissions_grams_total" not in text
    # The node's rest: its 1000 J less nothing (the uplink is outside, the fans are in its reading).
    assert _device(meter, "node").counters.rest_energy_j == pytest.approx(1000.0)
    assert "# HELP gpu_carbon_uplink_up 1 if the satellite uplink (estimated) answered its last sample." in text


def _exprs(content: dict) -> str:
    """Every expression of a rule file, one a line (the rendered YAML folds long ones)."""
    return "\n".join(r["expr"] for group in content["groups"] for r in group["rules"])


def test_a_new_kind_reaches_the_recording_rules_and_alerts(registered):
    files = mixin.rule_files()
    recording = _exprs(files["gpu-carbon-recording.yml"])
    # Every accounted FPGA joule is in the node's power and energy, and its emissions in the totals;
    # the fans' where accounted; the uplink's never (outside the node).
    assert '{__name__=~"gpu_carbon_(gpu|board|hwmon|fpga)_energy_joules_total"}' in recording
    assert "(rate(gpu_carbon_fans_energy_joules_total[5m]) and ignoring (method) " \
           "gpu_carbon_fans_emissions_grams_total)" in recording
    assert '{__name__=~"gpu_carbon_(gpu|board|hwmon|fpga|cpu|storage|fans|node)_emissions_grams_total"}' in recording
    assert "uplink" not in recording
    alerts = _exprs(files["gpu-carbon-alerts.yml"])
    assert '{__name__=~"gpu_carbon_(gpu|board|rail|hwmon|fpga|cpu|storage|fans|network|uplink|node)_up"} == 0' in alerts
    # Counter resets: the measured kinds only.
    assert 'resets({__name__=~"gpu_carbon_(gpu|board|rail|hwmon|fpga|cpu|node)_energy_joules_total"}[1h])' in alerts


def test_a_new_kind_reaches_the_dashboards(registered):
    boards = {name: dashboards.render(model) for name, model in dashboards.dashboards().items()}
    fleet, edge = boards["gpu-carbon-fleet.json"], boards["gpu-carbon-edge.json"]
    assert 'gpu_carbon_(gpu|board|hwmon|fpga)_energy_joules_total' in fleet  # energy and power totals
    assert 'gpu_carbon_(gpu|board|hwmon|fpga|cpu|storage|fans|node)_emissions_grams_total' in fleet
    # The estimates panel: outside the nodes first, then inside, each in order.
    assert fleet.index('"uplinks (outside the nodes)"') > fleet.index('"network (outside the nodes)"')
    assert fleet.index('"disks"') < fleet.index('"fans"')
    assert "gpu_carbon_uplink_energy_joules_total" in fleet and "gpu_carbon_fans_energy_joules_total" in fleet
    assert 'gpu_carbon_(hwmon|fpga|node)_energy_joules_total' in edge  # other measured sensors


def test_without_the_test_kinds_the_generated_files_are_the_committed_ones():
    assert not {"fpga", "uplink", "fans"} & {k.name for k in kinds()}
    assert "fpga" not in plugins.family("source")
    for name, content in mixin.rule_files().items():
        assert (ROOT / "prometheus" / "rules" / name).read_text() == mixin.render(content)
    for name, model in dashboards.dashboards().items():
        assert (ROOT / "grafana" / "dashboards" / name).read_text() == dashboards.render(model)


# A PDU outlet feeding the whole node: a whole-node meter like a BMC, whose emissions are its rest only.
PDU = DeviceKind(name="pdu", label="PDU outlet", doc="PDU outlet (whole node)", accounting=Accounting.REST, order=85)


def test_a_new_whole_node_kind_counts_only_its_rest(clock):
    """A 500-W PDU outlet beside a 300-W GPU: the node's total is 500 W, not 800 W — the meter keeps
    the PDU's rest (200 W) as its emissions, the exposition carries its rest counter, and the rules'
    node total reads that counter (found in review: the meter and collector knew only "node")."""
    register_kind(PDU)
    try:
        gpu, pdu = DummySource("gpu", 300.0, ()), DummySource("pdu", 500.0, (("source", "pdu"),))
        meter, text = _run([gpu, pdu], clock)
        by_kind = {d.identity.kind: d.counters for d in meter.snapshot.devices}
        assert by_kind["pdu"].energy_j == pytest.approx(5000.0)
        assert by_kind["pdu"].rest_energy_j == pytest.approx(2000.0)
        grams = sum(c.emissions_g for c in by_kind.values())
        assert grams == pytest.approx(5000.0 / JOULES_PER_KWH * 360.0)  # 500 W for 10 s, once
        assert 'gpu_carbon_pdu_rest_energy_joules_total{source="pdu"} 2000.0' in text
        rules = str(mixin.rule_files()["gpu-carbon-recording.yml"])
        assert "gpu_carbon_pdu_rest_energy_joules_total" in rules
    finally:
        unregister_kind("pdu")
