"""The ROIR benchmark's report: markdown and CSV tables, and every file ``panda bench roir`` writes.

Tables list every method the run compared (every registered one, :data:`panda.methods.METHODS`, unless it named
some) and every registered metric (:data:`panda.metrics.METRICS`); a method that is not available for the generator
gets its reason.
"""

from __future__ import annotations

import re
import csv
import io
import math
from pathlib import Path

from .drawing import save_png
from .comparison import Comparison
from .evaluation import BenchResult
from .figures import bench_bar_plot, cell_grid, masks_figure, parts_figure, region_grid
from .fileio import atomic_write, check_writable
from .landmarks import CELLS, REGIONS
from .metrics import METRICS
from .selection import SEMANTIC_PURITY, RankSweep
from .setup_cost import SetupCost


def _cell(res: BenchResult, method: str, region: str, metric: str, dilation: int | None = None) -> str:
    row = res.row(method, region)
    if not row.available:
        return row.label
    if not row.chosen:
        return "none"
    mean, std, _ = row.score(metric, dilation)
    return f"{mean:.2f} +- {std:.2f}"


def _header(columns: list[str]) -> list[str]:
    return ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]


def markdown(res: BenchResult) -> str:
    """The benchmark's tables as markdown: ROIR at every mask dilation with setup times, the other metrics, how each
    edit's change splits over the face cells, and the edits chosen."""
    regions, first = list(REGIONS), res.dilations[0]
    lines = [f"### {res.generator}: ROIR (lower is better), mean +- std over {res.n_test} test faces", "",
             "Each method's edit is chosen on the calibration faces with the masks at +" f"{first} px; "
             "every row of a method reports that same edit against masks at another dilation.", ""]
    lines += _header(["method", "masks"] + regions + ["setup s", "s per test image (all regions)"])
    for m in res.methods:
        setup = f"{res.setup_s[m]:.1f}" if m in res.setup_s else "-"
        per = f"{res.per_image_s[m]:.2f}" if m in res.per_image_s else "-"
        for d in res.dilations:
            lines.append(f"| {m} | +{d} px | " + " | ".join(_cell(res, m, r, "ROIR", d) for r in regions)
                         + f" | {setup} | {per} |")
    for name, metric in METRICS.items():
        if name == "ROIR":
            continue
        lines += ["", f"{name} ({metric.description}; {'lower' if metric.lower_is_better else 'higher'} is better), "
                      f"masks +{first} px:", ""] + _header(["method"] + regions)
        for m in res.methods:
            lines.append(f"| {m} | " + " | ".join(_cell(res, m, r, name) for r in regions) + " |")
    lines += ["", f"Where each chosen edit acts: RMS pixel change in each face cell on the test faces (masks +{first} px); "
                  "the target's cell first.", ""]
    lines += _header(["region", "method"] + list(CELLS))
    for r in regions:
        for m in res.methods:
            row = res.row(m, r)
            if row.available and row.chosen:
                vals = [f"**{row.split[c]:.3f}**" if c == r else f"{row.split[c]:.3f}" for c in CELLS]
                lines.append(f"| {r} | {m} | " + " | ".join(vals) + " |")
    if "eyes" in res.check:
        kept = (f"{res.n_tried} test seeds tried, {res.n_test} kept (FaceMesh found a face, ONet on its face box gave "
                f"p > 0.9, all masks non-empty); {res.n_calib} calibration faces. ONet's points inside FaceMesh's masks: "
                f"eyes {100 * res.check['eyes']:.1f}%, nose {100 * res.check['nose']:.1f}%, mouth {100 * res.check['mouth']:.1f}%.")
    else:
        kept = (f"{res.n_tried} test seeds tried, {res.n_test} kept; {res.n_calib} calibration samples; region masks without "
                f"a landmark cross-check.")
    lines += ["", f"Samples: {kept} Matched magnitude: mean absolute pixel change inside the "
              f"region {res.target:g} on calibration faces; achieved on the test faces. \"tried\" counts candidates x "
              f"signs, \"specific\" those whose largest RMS change falls in the region:", ""]
    lines += _header(["method"] + [f"{r}: edit chosen, change (specific/tried)" for r in regions])
    for m in res.methods:
        rows = [res.row(m, r) for r in regions]
        if rows[0].available:
            cells = [f"{r.label} x {r.alpha:+.2f}, {r.change:.3f} ({r.eligible}/{r.tried})" if r.chosen
                     else f"none (0/{r.tried})" for r in rows]
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    o = res.options
    if o:
        said = "".join(f"; {name} {text}" for name, text in o.get("settings", {}).items())
        lines += ["", f"Settings: budget {o['budget']} directions per region (x 2 signs){said}."]
    if res.part_regions is not None:
        summary = res.part_regions.summary()
        parts = "; ".join(f"{r}: part {v['part']} ({'named' if v['named'] else 'not named'} after it, purity "
                          f"{v['share']:.2f}, lift {v['lift']:.1f})" for r, v in summary.items() if r in REGIONS)
        lines += ["", f"PandA's parts on the calibration faces ({summary['distinct']} of 3 regions have a part of their own): "
                      f"{parts}."]
    return "\n".join(lines)


def csv_text(res: BenchResult) -> str:
    """One line per (method, region, dilation): the edit, its magnitude, setup time and every metric's mean, std
    and n; 'none' cells have chosen False and NaN numbers."""
    buf = io.StringIO()
    fields = ["generator", "method", "region", "dilation_px", "chosen", "label", "alpha", "inside_change", "setup_s",
              "tried", "specific"]
    for name in METRICS:
        fields += [f"{name} mean", f"{name} std", f"{name} n"]
    fields += [f"rms {c}" for c in CELLS]
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    for r in res.rows:
        for d in res.dilations:
            line = {"generator": res.generator, "method": r.method, "region": r.region, "dilation_px": d,
                    "chosen": r.available and r.chosen, "label": r.label, "alpha": r.alpha, "inside_change": r.change,
                    "setup_s": res.setup_s.get(r.method, ""), "tried": r.tried, "specific": r.eligible}
            for name in METRICS:
                mean, std, n = r.scores[d][name] if r.scores else (math.nan, math.nan, 0)
                line |= {f"{name} mean": mean, f"{name} std": std, f"{name} n": n}
            line |= {f"rms {c}": r.split.get(c, math.nan) for c in CELLS}
            w.writerow(line)
    return buf.getvalue()


def setup_cost_markdown(costs: list[SetupCost]) -> str:
    """The setup-cost table (one row per measured network) with each method's seconds and PandA's speed-up."""
    lines = _header(["network", "device", "PandA: extract + fit s", "Jacobian s / image", "ReSeFa s / image",
                     "LowRankGAN s / image", "ReSeFa / PandA", "LowRankGAN / PandA"])
    for c in costs:
        lines.append(f"| {c.generator} ({c.resolution} px, {c.latent_dim}-d latent), PandA at {c.layer}, N = {c.n_train}, "
                     f"R_S = {c.rank_parts} | {c.device} | {c.panda_extract_s:.1f} + {c.panda_fit_s:.1f} = {c.panda_s:.1f} | "
                     f"{c.jacobian_s:.1f} | {c.resefa_s:.1f} | >= {c.lowrankgan_min_s:.1f} ({c.lowrankgan_s:.1f} with "
                     f"{c.rpca_steps:,}-step RPCAs) | {c.resefa_s / c.panda_s:.1f}x | >= {c.lowrankgan_min_s / c.panda_s:.1f}x |")
    c = costs[0]
    lines += ["", f"Jacobians measured on {c.tangents} of {c.latent_dim} tangent directions and scaled (the cost is linear "
                  f"in them); robust PCA {1000 * c.rpca_step_s:.1f} ms per ADMM step at {c.latent_dim} x {c.latent_dim} "
                  f"(its code allows 10,000 steps; on a DCGAN's 100 x 100 eyes Gram matrix it converged after 1,000-3,000). "
                  "PandA's setup serves every region and image; ReSeFa's and LowRankGAN's are per image and region."]
    return "\n".join(lines)


def ranks_markdown(sweep: RankSweep, generator: str, layer: str, n_samples: int, n_heldout: int) -> str:
    """A rank sweep as markdown: one row per R_S (errors, the held-out error's fall per added part, fit seconds and,
    with faces, each region's purity), then what it suggests."""
    shares = sweep.purities()
    first = sweep.models[0]
    starts = f"{first.n_init} random starts of the parts" + (f", up to {first.reseed} re-seeding rounds" if first.reseed
                                                             else "")
    lines = [f"# How many parts: {generator} layer {layer}", "",
             f"PandA (R_C = {first.n_appearances}; {starts}) on {n_samples:,} samples, one shared statistics pass "
             f"({sweep.stats_time:.1f} s; generator {sweep.extract_time:.1f} s); held-out error on "
             + (f"{n_heldout} other samples." if n_heldout else "no samples (--heldout 0).")
             + (f" Purity: the share of the region's best part's mass inside the region, on {sweep.n_faces} faces "
                f"(FaceMesh), 0 where no part is named after it." if shares else ""), ""]
    stable = sweep.stability is not None
    fall = "fall per added part" + ("" if n_heldout else " (training)")
    columns = ["R_S", "training error", "held-out error", fall, "fit s (with the shared pass)"]
    lines += _header(columns + ([f"{r} purity" for r in REGIONS] if shares else [])
                     + (["parts back on other samples (>= 0.9)", "their mean similarity"] if stable else []))
    for i, row in enumerate(sweep.rows()):
        cells = [str(row["rank_parts"]), f"{row['train_error']:.4f}",
                 "n/a" if math.isnan(row["heldout_error"]) else f"{row['heldout_error']:.4f}",
                 "" if math.isnan(row["fall_per_part"]) else f"{row['fall_per_part']:.4f}", f"{row['fit_s']:.2f}"]
        if shares:
            cells += [f"{row[f'{r}_purity']:.2f}" for r in REGIONS]
        if stable:
            cells += [f"{row['parts_back']} of {row['rank_parts']}", f"{row['mean_similarity']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    if stable:
        lines += ["Parts back: each fit's parts matched one to one with those of the same rank fitted on other samples "
                  "from other random starts (`panda compare`); a rank whose parts do not come back has several nearly "
                  "equal solutions, and which one a fit finds depends on its samples and its starts.", ""]
    if shares:
        choice = sweep.semantic_choice()
        lines.append(f"Smallest R_S giving the eyes, nose and mouth each a part of its own (purity >= {SEMANTIC_PURITY}): "
                     + (f"**{choice}**." if choice is not None else
                        f"none of these; try more parts (above {sweep.ranks[-1]}) or a larger layer."))
    else:
        lines.append("The error falls with every part added; pick the R_S whose parts (ranks.png) split the image the "
                     "way your edits need, where the fall per added part levels off and (--stability) the parts still come "
                     "back on other samples. On a face generator, --faces measures which R_S gives the eyes, nose and "
                     "mouth parts of their own.")
    if not first.reseed and sweep.ranks[-1] >= 24:
        lines += ["", "At R_S of 24 and more, --reseed 8 (rounds that move the weakest parts to where the fit misses "
                      "most) lowers the error and can give the regions parts of their own at a smaller R_S "
                      "(benchmarks/reseed.md)."]
    return "\n".join(lines) + "\n"


def layers_markdown(sweeps: list, generator: str, n_samples: int) -> str:
    """`panda ranks` over several layers, a line each: shape, ranks fitted, held-out error at the first and last,
    and what the sweeps measured (the smallest R_S with a part of its own for each face region; parts back on other
    samples per R_S). ``sweeps``: (layer, (C, H, W), RankSweep, seconds)."""
    faces = sweeps[0][2].regions is not None
    stable = sweeps[0][2].stability is not None
    lines = [f"# Which layer, how many parts: {generator}", "",
             f"Each layer fitted at every R_S on {n_samples:,} samples (one shared statistics pass per layer); each "
             f"layer's own table and pictures are in its folder.", ""]
    scored = "training" if all(math.isnan(e) for e in sweeps[0][2].heldout_errors) else "held-out"
    lines += _header(["layer", "C x H x W", "R_S", f"{scored} error (first, last R_S)"]
                     + (["smallest R_S with eyes, nose and mouth parts"] if faces else [])
                     + (["parts back on other samples, per R_S"] if stable else []) + ["seconds"])
    for layer, shape, sweep, seconds in sweeps:
        errors = sweep.scored_errors
        cells = [layer, " x ".join(map(str, shape)), ", ".join(map(str, sweep.ranks)),
                 f"{errors[0]:.4f}, {errors[-1]:.4f}"]
        if faces:
            choice = sweep.semantic_choice()
            cells.append("none" if choice is None else str(choice))
        if stable:
            cells.append(", ".join(f"{b}/{r}" for b, r in zip(sweep.stable_parts(), sweep.ranks)))
        lines.append("| " + " | ".join(cells + [f"{seconds:.0f}"]) + " |")
    return "\n".join(lines) + "\n"


def comparison_markdown(cmp: Comparison, first, second, names: tuple[str, str]) -> str:
    """Two fits compared as markdown: the matched parts' similarity in summary and pair by pair, and the appearance
    subspaces' overlap against chance."""
    matched = cmp.matched
    lines = [f"# {names[0]} against {names[1]}", "",
             f"Layer {first.layer_} ({'x'.join(map(str, first.layer_shape_))}); R_S {first.n_parts} and {second.n_parts}, "
             f"R_C {first.n_appearances} and {second.n_appearances}; {first.n_samples_:,} and {second.n_samples_:,} "
             f"training samples from seed {first.seed_} and {second.seed_}.", "",
             f"**Parts**: {len(matched)} matched one to one (the largest total cosine similarity of their maps): mean "
             f"{sum(matched) / len(matched):.2f}, median {sorted(matched)[len(matched) // 2]:.2f}; "
             f"{sum(s >= 0.9 for s in matched)} at 0.9 or more, {sum(s < 0.5 for s in matched)} below 0.5."]
    left = cmp.unmatched()
    if left[0] or left[1]:
        lines.append(f"Unmatched: {names[0]} parts {', '.join(map(str, left[0])) or 'none'}; {names[1]} parts "
                     f"{', '.join(map(str, left[1])) or 'none'}.")
    lines += ["", "**Appearances**: overlap of the k leading ones (by energy), ||A_k^T B_k||^2 / k: 1 for the same "
              "subspace; chance, k / C, for unrelated ones.", ""]
    lines += _header(["k", "overlap", "chance"])
    lines += [f"| {k} | {o:.3f} | {c:.3f} |" for k, o, c in zip(cmp.ks, cmp.overlap, cmp.chance)]
    lines += ["", "**Matched parts**, most similar first:", ""]
    lines += _header([f"{names[0]} part", f"{names[1]} part", "similarity"])
    lines += [f"| {first.part_label(a)} | {second.part_label(b)} | {cmp.similarity[a, b]:.3f} |" for a, b in cmp.pairs]
    return "\n".join(lines) + "\n"


def write_outputs(res: BenchResult, out: str | Path) -> list[Path]:
    """Write roir.md, roir.csv, roir.png, one grid per region, one per cell (cells/REGION_METHOD.png), masks.png and
    parts_named.png into ``out``."""
    out = check_writable(out)
    written = [atomic_write(out / "roir.md", markdown(res) + "\n"), atomic_write(out / "roir.csv", csv_text(res))]
    written.append(save_png(bench_bar_plot(res), out / "roir.png"))
    (out / "cells").mkdir(exist_ok=True)
    for region in REGIONS:
        written.append(save_png(region_grid(res, region), out / f"roir_{region}.png"))
        for method in res.edits[region]:  # one grid per cell that has an edit: original, edited, difference
            slug = re.sub(r"[^A-Za-z0-9_-]+", "_", method)  # 'PandA + mask' -> PandA_mask
            written.append(save_png(cell_grid(res, method, region), out / "cells" / f"{region}_{slug}.png"))
    written.append(save_png(masks_figure(res.faces), out / "masks.png"))
    if res.model is not None:
        seeds = res.faces.seeds[:6]
        written.append(save_png(parts_figure(res.model, res.faces.images[:6], seeds), out / "parts_named.png"))
    return written
