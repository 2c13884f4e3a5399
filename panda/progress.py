"""Progress bars (the bottom layer): one rule for when they show.

``progress=True`` shows a bar, ``False`` hides it, ``None`` shows it when stderr is a terminal (tqdm's own
test), so scripts and notebooks that ask for nothing see bars in a terminal and none in captured output or tests.
"""

from __future__ import annotations

from typing import Iterable

from tqdm.auto import tqdm


def progress_bar(iterable: Iterable | None = None, *, progress: bool | None, **kwargs) -> tqdm:
    """A tqdm bar over ``iterable`` (or updated by hand with ``total=``), shown as ``progress`` says; transient."""
    return tqdm(iterable, disable=None if progress is None else not progress, leave=False, **kwargs)
