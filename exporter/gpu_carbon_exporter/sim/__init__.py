"""The simulated fleet: scenarios with exact ground truth, and a pynvml-shaped library over them."""
