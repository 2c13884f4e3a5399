"""Helpers the benchmark scripts share: naming the device, timing a call on it and writing a markdown table."""

from __future__ import annotations

import platform
import statistics
import time
from typing import Callable, Sequence, TypeVar

import panda  # noqa: F401  (before torch, for its OpenMP setting: see panda/__init__.py)
import torch

from panda.generators import synchronize

T = TypeVar("T")


def device_label(device: str) -> str:
    """The GPU's name, or the CPU with its thread count."""
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def timed(fn: Callable[[], T], device: str, repeat: int = 1) -> tuple[T, float]:
    """fn's last result and the median of ``repeat`` runs' seconds, waiting for the device's queued work before
    reading the clock each time."""
    times, out = [], None
    for _ in range(repeat):
        synchronize(device)
        t = time.perf_counter()
        out = fn()
        synchronize(device)
        times.append(time.perf_counter() - t)
    return out, statistics.median(times)


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table's lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]
