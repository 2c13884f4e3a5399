"""The ROIR benchmark's report: markdown and CSV tables, and every file ``panda bench roir`` writes.

Tables list every registered method (:data:`panda.methods.METHODS`) and every registered metric
(:data:`panda.metrics.METRICS`); a method that is not available for the generator gets its reason.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from .drawing import save_png
from .evaluation import BenchResult
from .figures import bench_bar_plot, masks_figure, parts_figure, region_grid
from .fileio import atomic_write, check_writable
from .landmarks import REGIONS
from .methods import METHODS
from .metrics import METRICS


def _cell(res: BenchResult, method: str, region: str, metric: str) -> str:
    row = res.row(method, region)
    if not row.available:
        return row.label
    mean, std, _ = row.scores[metric]
    return f"{mean:.2f} +- {std:.2f}"


def markdown(res: BenchResult) -> str:
    """The benchmark's tables as markdown: ROIR with setup times, the other metrics, and the edits chosen."""
    regions = list(REGIONS)
    lines = [f"### {res.generator}: ROIR (lower is better), mean +- std over {res.n_test} test faces",
             "", "| method | " + " | ".join(regions) + " | setup s |", "|---|" + "---|" * (len(regions) + 1)]
    for m in METHODS:
        setup = f"{res.setup_s[m]:.1f}" if m in res.setup_s else "-"
        lines.append(f"| {m} | " + " | ".join(_cell(res, m, r, "ROIR") for r in regions) + f" | {setup} |")
    for name, metric in METRICS.items():
        if name == "ROIR":
            continue
        lines += ["", f"{name} ({metric.description}; {'lower' if metric.lower_is_better else 'higher'} is better):", "",
                  "| method | " + " | ".join(regions) + " |", "|---|" + "---|" * len(regions)]
        for m in METHODS:
            lines.append(f"| {m} | " + " | ".join(_cell(res, m, r, name) for r in regions) + " |")
    if "eyes" in res.check:
        kept = (f"{res.n_tried} test seeds tried, {res.n_test} kept (FaceMesh found a face, ONet on its face box gave "
                f"p > 0.9, all masks non-empty); {res.n_calib} calibration faces. ONet's points inside FaceMesh's masks: "
                f"eyes {100 * res.check['eyes']:.1f}%, nose {100 * res.check['nose']:.1f}%, mouth {100 * res.check['mouth']:.1f}%.")
    else:
        kept = (f"{res.n_tried} test seeds tried, {res.n_test} kept; {res.n_calib} calibration samples; region masks without "
                f"a landmark cross-check.")
    lines += ["", f"Samples: {kept} Matched magnitude: mean absolute pixel change inside the "
              f"region {res.target:g} on calibration faces; achieved on the test faces:", "",
              "| method | " + " | ".join(f"{r}: edit chosen, change" for r in regions) + " |", "|---|" + "---|" * len(regions)]
    for m in METHODS:
        rows = [res.row(m, r) for r in regions]
        if rows[0].available:
            lines.append(f"| {m} | " + " | ".join(f"{r.label} x {r.alpha:+.2f}, {r.change:.3f}" for r in rows) + " |")
    named = ", ".join(f"part {k} = {v}" for k, v in sorted(res.part_names.items()))
    lines += ["", f"PandA's parts named by overlap with the masks: {named}."]
    return "\n".join(lines)


def csv_text(res: BenchResult) -> str:
    """One line per (method, region): the edit, its magnitude, setup time and every metric's mean, std and n."""
    buf = io.StringIO()
    fields = ["generator", "method", "region", "label", "alpha", "inside_change", "setup_s"]
    for name in METRICS:
        fields += [f"{name} mean", f"{name} std", f"{name} n"]
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in res.rows:
        line = {"generator": res.generator, "method": r.method, "region": r.region, "label": r.label, "alpha": r.alpha,
                "inside_change": r.change, "setup_s": res.setup_s.get(r.method, "")}
        for name in METRICS:
            mean, std, n = r.scores.get(name, (math.nan, math.nan, 0))
            line |= {f"{name} mean": mean, f"{name} std": std, f"{name} n": n}
        w.writerow(line)
    return buf.getvalue()


def write_outputs(res: BenchResult, out: str | Path) -> list[Path]:
    """Write roir.md, roir.csv, roir.png, one grid per region, masks.png and parts_named.png into ``out``."""
    out = check_writable(out)
    written = [atomic_write(out / "roir.md", markdown(res) + "\n"), atomic_write(out / "roir.csv", csv_text(res))]
    written.append(save_png(bench_bar_plot(res), out / "roir.png"))
    for region in REGIONS:
        written.append(save_png(region_grid(res, region), out / f"roir_{region}.png"))
    written.append(save_png(masks_figure(res.faces), out / "masks.png"))
    if res.model is not None:
        seeds = res.faces.seeds[:6]
        written.append(save_png(parts_figure(res.model, res.faces.images[:6], seeds), out / "parts_named.png"))
    return written
