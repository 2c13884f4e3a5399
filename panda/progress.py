"""Progress bars (the bottom layer): one rule for when they show.

``progress=True`` shows a bar, ``False`` hides it, ``None`` shows it when stderr is a terminal (tqdm's own
test), so scripts and notebooks that ask for nothing see bars in a terminal and none in captured output or tests.

Where bars would not show, long computations still say how far they are: each module logs one line per stage
(``logging.getLogger(__name__).info``, under the "panda" logger), which stays silent unless the application
configures logging. The command line does, where stderr is not a terminal (:func:`log_stages`).
"""

from __future__ import annotations

import logging
from typing import Callable, Iterable

from tqdm.auto import tqdm


def progress_bar(iterable: Iterable | None = None, *, progress: bool | None, **kwargs) -> tqdm:
    """A tqdm bar over ``iterable`` (or updated by hand with ``total=``), shown as ``progress`` says; transient."""
    return tqdm(iterable, disable=None if progress is None else not progress, leave=False, **kwargs)


class _Lines(logging.Handler):
    """Writes each record through ``write``, looked up when it is called: a stream captured now could be closed
    or replaced (a test runner's) by the time a later stage logs."""

    def __init__(self, write: Callable[[str], None]):
        super().__init__(logging.INFO)
        self.write = write
        self.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        self.write(self.format(record))


def log_stages(write: Callable[[str], None] | None) -> None:
    """Send panda's stage lines (INFO and above) to ``write``, e.g. a log file's, each with the time; None stops
    that again. One such destination at a time."""
    root = logging.getLogger("panda")
    for h in [h for h in root.handlers if isinstance(h, _Lines)]:
        root.removeHandler(h)
    if write is not None:
        root.addHandler(_Lines(write))
    root.setLevel(logging.NOTSET if write is None else logging.INFO)
