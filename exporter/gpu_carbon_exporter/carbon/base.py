"""The carbon-intensity provider interface.

The meter asks a provider which intensity was in force over each sampling
interval (``segments``), so emissions integrate exactly when intensity steps.
Live providers (polling an API) refresh in their own thread; ``segments`` and
``current`` never block on the network.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

# World average grid intensity 2023, Ember Global Electricity Review 2024 (gCO2e/kWh): the
# intensity of a node with no zone configured.
WORLD_AVERAGE_G_PER_KWH = 480.0


@dataclass(frozen=True)
class Intensity:
    """Grid carbon intensity in gCO2e/kWh, and where it came from."""

    g_per_kwh: float
    zone: str
    source: str
    signal: str = "average"  # "average" or "marginal"
    fallback: bool = False
    observed_at: float | None = None  # unix time the value refers to, if known


class IntensityProvider(ABC):
    name: str = "provider"

    @abstractmethod
    def current(self, now: float) -> Intensity:
        """The intensity in force at unix time ``now``."""

    def segments(self, t0: float, t1: float) -> list[tuple[float, float, Intensity]]:
        """Sub-intervals of [t0, t1] with the intensity in force in each.

        The default holds the value in force at ``t0`` over the whole interval.
        """
        return [(t0, t1, self.current(t0))]

    def start(self) -> None:
        """Start any background polling (live providers)."""

    def wait_ready(self, timeout_seconds: float) -> bool:
        """Wait up to ``timeout_seconds`` for a live provider's first answer; True when it has one."""
        return True

    def prime(self) -> None:
        """Fetch once, synchronously (``--once``); live providers poll, others do nothing."""

    def stats(self) -> "object | None":
        """Request/error counters of a live provider (``live.ProviderStats``), else None."""
        return None

    def forecast(self, now: float) -> "object | None":
        """Carbon-aware hints (``live.Forecast``) where the provider has a forecast."""
        return None

    def healthy(self) -> bool:
        """False while the provider serves a fallback because its source failed."""
        return True

    def close(self) -> None:
        """Stop any background polling."""
