"""HTML pages (the demo's index, the explorer) from Jinja2 templates in ``panda/templates``.

Values are escaped by the templates; a paragraph that carries its own markup (a table, <code>) is passed as
:class:`markupsafe.Markup`, built with :func:`markupsafe.escape` around every value it holds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from .fileio import atomic_write

_ENV = Environment(loader=PackageLoader("panda", "templates"), autoescape=select_autoescape(["html"]))


@dataclass
class Section:
    """One section of an index page.

    Attributes
    ----------
    heading : str
    text : str or Markup
        A paragraph (plain text is escaped).
    figures : list of (str, str)
        (PNG file name relative to the page, caption).
    folded : bool
        Shown closed (a click opens it): keeps a page of many similar sections short.
    """

    heading: str
    text: str | Markup = ""
    figures: list[tuple[str, str]] = field(default_factory=list)
    folded: bool = False


def render_index(title: str, sections: Sequence[Section]) -> str:
    """A page of captioned PNGs with a table of contents."""
    return _ENV.get_template("index.html").render(title=title, sections=sections)


def write_index(directory: str | os.PathLike, title: str, sections: Sequence[Section]) -> Path:
    """Write ``index.html`` into ``directory`` (atomically)."""
    return atomic_write(Path(directory) / "index.html", render_index(title, sections))


def render_explorer(title: str, info: dict, seed: int) -> str:
    """The explorer's page (``panda serve``); ``info`` is handed to its script as JSON."""
    return _ENV.get_template("explorer.html").render(title=title, info=info, seed=int(seed))
