"""Helpers the benchmark scripts share: naming the device and writing a markdown table."""

from __future__ import annotations

import platform
from typing import Sequence

import panda  # noqa: F401  (before torch, for its OpenMP setting: see panda/__init__.py)
import torch


def device_label(device: str) -> str:
    """The GPU's name, or the CPU with its thread count."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table's lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
