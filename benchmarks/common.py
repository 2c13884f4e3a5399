"""Helpers the benchmark scripts share: naming the device, timing a call (or a fit's stages) on it and writing a
markdown table."""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Sequence, TypeVar

import panda  # noqa: F401  (before torch, for its OpenMP setting: see panda/__init__.py)
import torch

from panda.generators import synchronize
from panda.landmarks import face_set

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


# A fit's stages, as panda_factorise calls them (module globals, so a wrapper set on the module is what it calls);
# with R_C = C a fit without a mixing is one pass of statistics, the first P-step and one pass of part scatters.
STAGES = {"data_stats": "statistics pass", "top_eigenvectors": "eigenvectors (host)",
          "low_rank_statistic": "low-rank check", "first_parts": "first P-step (starts)",
          "appearance_scatter": "parts' scatter pass", "solve_parts": "later P-steps"}


def staged_fit(fit: Callable[[], object], device: str) -> dict[str, float]:
    """Where a fit's time goes: one run of ``fit`` with each of :data:`STAGES` timed, the device synchronised around
    it (a handful of waits in a fit), a stage called inside another counted in the outer one; "total" and "rest"
    (Python, the statistic's scaling, transfers between the stages and, for `PandA.fit`, its coefficient pass)
    too. Seconds."""
    import panda.factorisation as fac

    spent, depth = dict.fromkeys(STAGES, 0.0), [0]
    originals = {name: getattr(fac, name) for name in STAGES}

    def timing(name, fn):
        def wrapped(*args, **kwargs):
            if depth[0]:
                return fn(*args, **kwargs)
            depth[0] += 1
            synchronize(device)
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                synchronize(device)
                spent[name] += time.perf_counter() - t
                depth[0] -= 1
        return wrapped

    for name, fn in originals.items():
        setattr(fac, name, timing(name, fn))
    try:
        synchronize(device)
        t = time.perf_counter()
        fit()
        synchronize(device)
        total = time.perf_counter() - t
    finally:
        for name, fn in originals.items():
            setattr(fac, name, fn)
    return {**spent, "total": total, "rest": total - sum(spent.values())}


def stage_columns(runs: Sequence[dict[str, float]]) -> tuple[list[str], list[list[str]]]:
    """Markdown header and cells for :func:`staged_fit`'s results: the total, each stage some run used (seconds and
    share of the total), the rest."""
    used = [k for k in STAGES if any(r[k] > 0 for r in runs)]
    header = ["fit s (this run)"] + [STAGES[k] for k in used] + ["rest"]
    return header, [[f"{r['total']:.2f}"] + [f"{r[k]:.3f} ({100 * r[k] / r['total']:.0f}%)" for k in used + ["rest"]]
                    for r in runs]


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A markdown table's lines."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def spread(values: list, fmt: str, mean_fmt: str | None = None) -> str:
    """One value as it is; several as their mean and range."""
    if len(values) == 1:
        return fmt.format(values[0])
    mean = (mean_fmt or fmt).format(sum(values) / len(values))
    return f"{mean} ({fmt.format(min(values))}-{fmt.format(max(values))})"


def fit_arguments(doc: str, out: Path) -> argparse.Namespace:
    """The options of a benchmark that fits each generator itself: --n-fit (samples, default 5,000), --device and
    --out (its markdown file, default ``out``); ``doc`` the script's docstring, its first line the description."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--n-fit", type=int, default=5000)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(out))
    return ap.parse_args()


def first_faces(generator, start: int, n: int, masker) -> tuple[list[int], dict[str, torch.Tensor]]:
    """The first ``n`` seeds from ``start`` in which ``masker`` (FaceMesh) finds a face with every region, and their
    masks {region: (n, H, W) bool} (:func:`panda.landmarks.face_set`, no ONet cross-check)."""
    tried = 2 * n
    while True:
        faces = face_set(generator, start, tried, masker, None)
        if len(faces.seeds) >= n:
            return faces.seeds[:n], {r: m[:n] for r, m in faces.masks.items()}
        tried *= 2


#: A line of a benchmark's markdown that starts with this begins the notes a person wrote below the generated table.
NOTES_START = "Notes"


def write_keeping_notes(path, text: str) -> Path:
    """Write a script's generated markdown ``text`` to ``path``, keeping the notes a person wrote below the last run's
    figures (from the file's first line that starts with :data:`NOTES_START`): a re-run replaces the figures, not
    the explanations, and says on stderr that those are to be checked against the new figures."""
    path = Path(path)
    old = path.read_text().splitlines(keepends=True) if path.is_file() else []
    at = next((i for i, line in enumerate(old) if line.startswith(NOTES_START)), None)
    if at is not None and not any(line.startswith(NOTES_START) for line in text.splitlines()):
        text = text.rstrip("\n") + "\n\n" + "".join(old[at:])
        print(f"kept the notes of the earlier {path.name} (its lines {at + 1}-{len(old)}): check them against the new "
              "figures", file=sys.stderr)
    path.write_text(text)
    return path


def write_report(path, title: str, intro: str, header: Sequence[str], rows: Sequence[Sequence[str]],
                 notes: str = "") -> None:
    """A benchmark's markdown file (title, intro, table, notes), also printed."""
    lines = [f"# {title}", "", intro, ""] + table(header, rows) + ["", notes]
    Path(path).write_text("\n".join(lines))
    print("\n".join(lines))
