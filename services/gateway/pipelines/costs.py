"""Work limits of the pipelines: each job's cost is estimated at submit and refused over its limit.

Costs are counted in operations that grow like the job's CPU time, so a small
request cannot queue minutes of work: a few bytes of JPEG header can declare a
4000 x 4000 image, and ``percolation=true`` multiplies a fractal job's time by
hundreds. Operators with the hardware for more raise the limits.
"""

from __future__ import annotations

from dataclasses import dataclass

from labsight.config import env_float
from labsight.errors import ResourceExhausted


@dataclass(frozen=True)
class CostLimit:
    """A pipeline's work limit: its environment variable, default and unit."""

    env: str
    default: float
    unit: str

    def value(self) -> float:
        """The limit now: the environment variable if set, else the default."""
        return env_float(self.env, self.default)

    def check(self, cost: float, what: str, remedy: str) -> None:
        """ResourceExhausted when ``cost`` is over the limit, saying what and how to get under it."""
        limit = self.value()
        if cost > limit:
            raise ResourceExhausted(
                f"{what} costs {cost:.3g} {self.unit}, over the limit of {limit:.3g} ({self.env}); "
                f"{remedy}, or have the operator raise {self.env}"
            )


FRACTAL_COST = CostLimit("LABSIGHT_MAX_FRACTAL_COST", 1e12, "box-pixel comparisons")
"""Gliding box: pixels x sum of box side² (5.2e10 for 2048² with the default sides 3-41, about
4 s of one CPU core; 7.9e11 for 8000², about a minute); percolation adds pixels x largest
side² x PERCOLATION_FACTOR."""

FRACTAL_PIXELS = CostLimit("LABSIGHT_MAX_FRACTAL_PIXELS", 1e8, "pixels")
"""Pixels of one fractal image (10,000²): the service holds the whole image, 2 bytes per pixel
and channel, whatever the box sides."""

DEEP_FEATURES_COST = CostLimit("LABSIGHT_MAX_DEEP_FEATURES_COST", 1e9, "model-input pixels")
"""Images (or patches) x the model's input height x width: 1e9 is about 11,000 patches for
Inception-v3 (299²), 20,000 images for EfficientNet-Lite0 (224²), so a whole Visium capture
area (4,992 spots) fits."""
