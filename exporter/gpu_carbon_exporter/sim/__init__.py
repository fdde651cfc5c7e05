"""The simulated fleet: scenarios with exact ground truth, and a pynvml-shaped library over them.

Only the names of the built-in scenarios live here: the command line lists them in its help, and
importing this package must not load the simulator into an exporter that reads real hardware
(about 1.1 MB of its resident memory)."""

# The scenario files beside this module, by name (``--simulate NAME``).
BUILTIN = ("demo", "jobs-mix", "edge-orin", "edge-xavier", "edge-nano", "edge-thor", "edge-rpi", "edge-laptop",
           "mi300x", "radeon", "intel-max")
