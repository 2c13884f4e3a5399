"""The one registry type behind generators, benchmark methods and metrics (the bottom layer)."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")


class Registry(dict):
    """Name -> entry, in registration order; a name can be registered once.

    Parameters
    ----------
    kind : str
        What the entries are ("generator", "method", "metric"), for messages.
    """

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name`` and return it."""
        if name in self:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self[name] = entry
        return entry
