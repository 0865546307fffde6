"""The one device policy of every model service: LABSIGHT_DEVICE is auto, cpu or cuda."""

from __future__ import annotations

import os
from typing import Literal, cast

Device = Literal["auto", "cpu", "cuda"]
"""``auto`` uses CUDA when torch sees a device, else the CPU."""

DEVICES: tuple[Device, ...] = ("auto", "cpu", "cuda")
DEVICE_ENV = "LABSIGHT_DEVICE"


def parse_device(value: str, field: str = DEVICE_ENV) -> Device:
    """``value`` as a device setting (surrounding spaces and case ignored; empty is ``auto``).

    Raises
    ------
    ValueError
        Naming ``field`` and the accepted values.
    """
    device = value.strip().lower() or "auto"
    if device not in DEVICES:
        raise ValueError(f"{field} must be auto, cpu or cuda, got {value!r}")
    return cast(Device, device)


def device_from_env() -> Device:
    """The device setting in $LABSIGHT_DEVICE (``auto`` when unset)."""
    return parse_device(os.environ.get(DEVICE_ENV, ""))


def cuda_available() -> bool:
    """Whether torch sees a CUDA device."""
    import torch

    return bool(torch.cuda.is_available())


def resolve_device(device: Device) -> Literal["cpu", "cuda"]:
    """Where torch runs: ``cuda`` when asked, or for ``auto`` when a device is present."""
    if device == "cuda" or (device == "auto" and cuda_available()):
        return "cuda"
    return "cpu"
