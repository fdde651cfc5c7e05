"""gpu-carbon-exporter: GPU energy, power and carbon emissions for Prometheus."""

__version__ = "0.1.0"
