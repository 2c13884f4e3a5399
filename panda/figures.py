"""Every picture panda draws, one function each. They take computed data (images, maps, result objects
from the applications and the benchmark) and return a PIL image; none runs a generator or a metric.

Adding a picture means adding one function here (and calling it from a front end).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw

from .drawing import PALETTE, grid, heat_tile, hot, outline, overlay, scale_for, segmentation, stack, to_pil
from .editing import Edit, SweepResult, part_profile
from .comparison import Comparison
from .evaluation import BenchResult
from .landmarks import REGIONS, FaceSet
from .localisation import Localisation, signed, strongest
from .maps import change_map, normalise, region_at, upsample
from .model import PandA
from .refinement import RefinementComparison
from .removal import Removal
from .retrieval import Retrieval
from .selection import SEMANTIC_PURITY, RankSweep
from .transfer import Transfer


def _rendered(fig) -> Image.Image:
    """A matplotlib Figure drawn to an RGB PIL image."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return Image.fromarray(np.asarray(canvas.buffer_rgba())[..., :3].copy())


def sample_label(sample: int | str) -> str:
    """A sample as pictures name it: 'seed 7' for a seed, the text itself for anything else ('latent 0', 'projected')."""
    return f"seed {sample}" if isinstance(sample, (int, np.integer)) else str(sample)


def seed_labels(seeds: Sequence[int | str]) -> list[str]:
    """Row or column labels (:func:`sample_label`)."""
    return [sample_label(s) for s in seeds]


def parts_figure(model: PandA, images: torch.Tensor, seeds: Sequence[int | str], names: Sequence[str] | None = None) -> Image.Image:
    """Rows: samples. Columns: the image, every part by colour (argmax), then each part as a heat map.

    Parameters
    ----------
    images : torch.Tensor
        (N, 3, H, W) in [0, 1].
    """
    size, scale = images.shape[-1], scale_for(images)
    maps = upsample(normalise(model.part_maps()), size)
    names = names or [model.part_label(k) for k in range(model.n_parts)]
    rows = []
    for img in images:
        row = [to_pil(img, scale), to_pil(segmentation(img, maps), scale)]
        row += [to_pil(overlay(img, maps[k]), scale) for k in range(model.n_parts)]
        rows.append(row)
    return grid(rows, seed_labels(seeds), ["image", "all parts"] + list(names),
                title=f"{model.generator_name_} layer {model.layer_}: {model.n_parts} parts (heat: the part's weight)")


def sweep_figure(model: PandA, sweep: SweepResult, seeds: Sequence[int | str]) -> Image.Image:
    """Rows: samples. Columns: the edit at each alpha, the pixel change at the largest |alpha|, the part."""
    out, big = sweep.images, sweep.strongest
    scale = scale_for(out[:, 0])
    change = change_map(sweep.original, out[:, big])
    top = float(change.max())
    rows = []
    for i in range(out.shape[0]):
        row = [to_pil(out[i, t], scale) for t in range(len(sweep.alphas))]
        row.append(heat_tile(change[i], top, scale))
        row.append(to_pil(overlay(sweep.original[i], sweep.region if sweep.region.dim() == 2 else sweep.region[i]),
                          scale))
        rows.append(row)
    label = sweep.label or model.part_label(sweep.part)
    where = "the part (map > 0.5" if sweep.part is not None else "the region (its mask"
    cols = [f"alpha {a:+g}" for a in sweep.alphas] + [f"change at {sweep.alphas[big]:+g}", label]
    title = (f"{label}, appearance {sweep.appearance}: {100 * sweep.share:.0f}% of the pixel change falls in {where}, "
             f"{100 * float((sweep.region > 0.5).float().mean()):.0f}% of the image)")
    return grid(rows, seed_labels(seeds), cols, title=title)


def sweep_animation(model: PandA, sweep: SweepResult, seeds: Sequence[int | str]) -> list[Image.Image]:
    """Frames of an edit growing and shrinking: the samples side by side, one frame per alpha of ``sweep`` (there and
    back, so that it loops smoothly), the alpha in the title."""
    label = sweep.label or model.part_label(sweep.part)
    scale = scale_for(sweep.images[:, 0])
    frames = [grid([[to_pil(sweep.images[i, t], scale) for i in range(sweep.images.shape[0])]], None, seed_labels(seeds),
                   title=f"{label} + appearance {sweep.appearance}, alpha {a:+.2f}")
              for t, a in enumerate(sweep.alphas)]
    return frames + frames[-2:0:-1]


def contact_sheet(model: PandA, part: int, sweeps: Sequence[tuple[int, torch.Tensor]], alphas: Sequence[float],
                  seeds: Sequence[int | str], ranking: str = "by coefficient energy") -> Image.Image:
    """Rows: appearances (with their energy in the part). Columns: each sample at each alpha.

    Parameters
    ----------
    sweeps : sequence of (int, torch.Tensor)
        (appearance, images (N, len(alphas), 3, H, W) in [0, 1]).
    ranking : str
        How the rows were ranked, for the title.
    """
    rows, labels = [], []
    for j, out in sweeps:
        scale = scale_for(out[:, 0])
        rows.append([to_pil(out[i, t], scale) for i in range(out.shape[0]) for t in range(len(alphas))])
        labels.append(f"appearance {j}\nenergy {float(model.coef_energy_[j, part]):.3g}")
    cols = [f"{sample_label(s)}\nalpha {a:+g}" for s in seeds for a in alphas]
    return grid(rows, labels, cols, title=f"{model.part_label(part)}: its top appearances {ranking}")


def overview_figure(model: PandA, rows: Sequence[tuple[int, int, torch.Tensor]], alphas: Sequence[float],
                    seed: int | str) -> Image.Image:
    """One sample; each row one part's edit at each alpha. rows: (part, appearance, images (A, 3, H, W) in [0, 1])."""
    scale = scale_for(rows[0][2])
    return grid([[to_pil(x, scale) for x in images] for _, _, images in rows],
                [f"{model.part_label(k)} + app. {j}" for k, j, _ in rows], [f"alpha {a:+g}" for a in alphas],
                title=f"{sample_label(seed)}: every part with its top appearance")


def edits_figure(model: PandA, original: torch.Tensor, edited: torch.Tensor, edits: Sequence[Edit],
                 seeds: Sequence[int | str]) -> Image.Image:
    """Rows: samples. Columns: original, edited (all edits summed), pixel change. Images (N, 3, H, W) in [0, 1]."""
    change = change_map(original, edited)
    top, scale = float(change.max()), scale_for(original)
    rows = [[to_pil(original[i], scale), to_pil(edited[i], scale), heat_tile(change[i], top, scale)]
            for i in range(original.shape[0])]
    what = "; ".join(f"{model.part_label(e.part)} + appearance {e.appearance} x {e.alpha:+g}" for e in edits)
    return grid(rows, seed_labels(seeds), ["original", "edited", "change"], title=what)


def refine_figure(model: PandA, cmp: RefinementComparison, seeds: Sequence[int | str], steps: int) -> Image.Image:
    """Global against refined parts on shifted samples. Rows: samples (with the translation the refinement started
    from). Columns: the image, the global part, the refined part, the edit with each, and each edit's change."""
    size, scale = cmp.original.shape[-1], scale_for(cmp.original)
    global_map = upsample(part_profile(model, cmp.part)[None], size)[0]
    rows = []
    for i in range(cmp.original.shape[0]):
        refined_map = upsample(part_profile(model, cmp.part, cmp.refined.parts[i])[None], size)[0]
        cg = change_map(cmp.original[i:i + 1], cmp.with_global[i:i + 1])[0]
        cr = change_map(cmp.original[i:i + 1], cmp.with_refined[i:i + 1])[0]
        top = float(torch.maximum(cg.max(), cr.max()))
        rows.append([to_pil(cmp.original[i], scale), to_pil(overlay(cmp.original[i], global_map), scale),
                     to_pil(overlay(cmp.original[i], refined_map), scale), to_pil(cmp.with_global[i], scale),
                     to_pil(cmp.with_refined[i], scale), heat_tile(cg, top, scale), heat_tile(cr, top, scale)])
    label, (dy, dx) = model.part_label(cmp.part), cmp.shift
    cols = ["image" + (f" (shift {dy},{dx})" if cmp.shift != (0, 0) else ""), f"global {label}", f"refined {label}",
            "edit, global", "edit, refined", "change, global", "change, refined"]
    labels = [f"{sample_label(s)}, start {int(t[0])},{int(t[1])}" for s, t in zip(seeds, cmp.refined.shifts)]
    title = (f"refinement ({steps} steps): error {cmp.error_global:.3f} -> {cmp.error_refined:.3f}; median ROIR of "
             f"{label} + appearance {cmp.appearance} x {cmp.alpha:+g}: {cmp.roir_global:.2f} -> {cmp.roir_refined:.2f}")
    return grid(rows, labels, cols, title=title)


def remove_figure(result: Removal, seeds: Sequence[int | str], label: str = "region") -> Image.Image:
    """Rows: samples. Columns: the region as heat, original, removed, pixel change."""
    scale = scale_for(result.original)
    change = change_map(result.original, result.removed)
    top = float(change.max())
    rows = [[to_pil(overlay(result.original[i], result.shown[i]), scale), to_pil(result.original[i], scale),
             to_pil(result.removed[i], scale), heat_tile(change[i], top, scale)] for i in range(result.original.shape[0])]
    title = (f"remove {label} with background appearance {result.appearance} ({result.sign:+g}) x {result.alpha:+g}: "
             f"colour distance to the surroundings {result.distance_before:.3f} -> {result.distance_after:.3f}")
    return grid(rows, seed_labels(seeds), [label, "original", "removed", "change"], title=title)


def candidates_figure(result: Removal, fills: Sequence[tuple[int, float, float, torch.Tensor]], seeds: Sequence[int | str],
                      label: str = "region") -> Image.Image:
    """The best fills of a background search side by side, so a person can overrule the pick.

    Parameters
    ----------
    result : Removal
        Gives the originals and the region drawn (its first ``len(seeds)`` samples are shown).
    fills : sequence
        :func:`panda.removal.candidate_fills`: (appearance, sign, gain, images (N, 3, H, W) in [0, 1]), best first.
    """
    n, scale = len(seeds), scale_for(result.original)
    rows = [[to_pil(overlay(result.original[i], result.shown[i]), scale)] + [to_pil(f[i], scale) for *_, f in fills]
            for i in range(n)]
    cols = [label] + [f"{'+' if s > 0 else '-'}{j}: {100 * g:.0f}%" for j, s, g, _ in fills]
    title = (f"the {len(fills)} best fills for {label} at alpha {result.alpha:+g} (appearance with sign: gain); "
             f"pick one by its index, or -index for the opposite sign")
    return grid(rows, seed_labels(seeds), cols, title=title)


def transfer_figure(model: PandA, result: Transfer, targets: Sequence[int | str], sources: Sequence[int | str]) -> Image.Image:
    """A table of transfers: the sources along the top (their region outlined), the targets down the left, each cell
    target i with source j's region; the cells along a target's row differ only in what the region holds."""
    scale = scale_for(result.targets)
    blank = Image.new("RGB", to_pil(result.targets[0], scale).size, "white")
    rows = [[blank] + [outline(s, [m > 0.5], scale) for s, m in zip(result.sources, result.source_shown)]]
    rows += [[outline(t, [m > 0.5], scale)] + [to_pil(x, scale) for x in row]
             for t, m, row in zip(result.targets, result.shown, result.images)]
    some = ("all appearances" if len(result.appearances) == model.n_appearances
            else f"appearances {', '.join(map(str, result.appearances))}")
    title = (f"{result.label} of each source (top) given to each target (left), {some}, alpha {result.alpha:+g}: "
             f"{100 * result.share:.0f}% of the pixel change inside the target's region, "
             f"{100 * result.closer:.0f}% closer there to the source")
    return grid(rows, ["source"] + [f"target {s}" for s in seed_labels(targets)],
                ["target"] + seed_labels(sources), title=title)


def localize_figure(model: PandA, loc: Localisation, appearance: int, seeds: Sequence[int | str]) -> Image.Image:
    """One concept across samples. Rows: the images, appearance j's map over them, the map alone (each min-max)."""
    model.check_appearance(appearance)
    images = loc.images
    size, scale = images.shape[-1], scale_for(images)
    maps = upsample(normalise(signed(model, appearance, loc.maps[:, appearance])), size)
    rows = [[to_pil(img, scale) for img in images], [to_pil(overlay(img, m ** 2), scale) for img, m in zip(images, maps)],
            [heat_tile(m, 1.0, scale) for m in maps]]
    return grid(rows, ["image", f"appearance {appearance}", "its map"], seed_labels(seeds),
                title=f"where appearance {appearance} is (A^T Z, each map rescaled to [0, 1])")


def localize_top_figure(model: PandA, loc: Localisation, k: int, seed: int | str) -> Image.Image:
    """One image (the first of ``loc``) and its k strongest concepts (by energy of their maps), side by side."""
    image, maps = loc.images[0], loc.maps[0]
    size, scale = image.shape[-1], scale_for(image[None])
    top = strongest(maps, k)
    heat = upsample(normalise(torch.stack([signed(model, j, maps[j]) for j in top])), size)
    blank = Image.new("RGB", to_pil(image, scale).size, "white")
    rows = [[to_pil(image, scale)] + [to_pil(overlay(image, h ** 2), scale) for h in heat],
            [blank] + [heat_tile(h, 1.0, scale) for h in heat]]
    return grid(rows, ["overlay", "map"], ["image"] + [f"appearance {j}" for j in top],
                title=f"{sample_label(seed)}: its {k} strongest concepts (A^T Z, each map rescaled to [0, 1])")


def ranks_figure(sweep: RankSweep, images: torch.Tensor, seeds: Sequence[int | str]) -> Image.Image:
    """Rows: the sweep's fits (R_S), each with its errors. Columns: samples, every part by colour (argmax of the
    parts' maps, each rescaled to [0, 1]) with the parts' borders in white; the parts numbered rank after rank
    (:meth:`RankSweep.chained`), so that a part the next rank keeps has the same colour there.

    Parameters
    ----------
    images : torch.Tensor
        (N, 3, H, W) in [0, 1].
    """
    size, scale = images.shape[-1], scale_for(images)
    rows, labels = [], []
    for rank, model in zip(sweep.ranks, sweep.chained()):  # a part keeps its colour from rank to rank
        maps = upsample(normalise(model.part_maps()), size)
        rows.append([to_pil(segmentation(img, maps, edges=True), scale) for img in images])
        heldout = "" if model.heldout_error_ != model.heldout_error_ else f"\nheld-out {model.heldout_error_:.4f}"
        labels.append(f"R_S = {rank}{heldout}")
    m = sweep.models[0]
    return grid(rows, labels, seed_labels(seeds),
                title=f"{m.generator_name_ or 'feature maps'} layer {m.layer_}: parts by R_S (colour: the strongest part, "
                      "kept across R_S)")


def ranks_plot(sweep: RankSweep) -> Image.Image:
    """Training and held-out error against R_S; with faces, a second panel of each region's purity (the share of its
    best part's mass inside it, 0 where no part is named after it) and the smallest R_S at which all pass
    :data:`panda.selection.SEMANTIC_PURITY`."""
    from matplotlib.figure import Figure  # here, not at the top: importing matplotlib costs every command 0.5 s

    shares = sweep.purities()
    fig = Figure(figsize=(10 if shares else 5.5, 3.8), dpi=100)
    ax = fig.add_subplot(1, 2 if shares else 1, 1)
    ax.plot(sweep.ranks, sweep.train_errors, "o-", color=PALETTE[0], label="training")
    if any(e == e for e in sweep.heldout_errors):
        ax.plot(sweep.ranks, sweep.heldout_errors, "s-", color=PALETTE[1], label="held-out")
    ax.set_xlabel("R_S (parts)")
    ax.set_ylabel("relative error")
    ax.set_title("reconstruction error (lower is better)")
    ax.grid(alpha=0.3)
    handles = ax.get_legend_handles_labels()
    if sweep.stability is not None:  # the share of parts that come back on other samples, on its own axis
        sx = ax.twinx()
        back = [n / r for n, r in zip(sweep.stable_parts(), sweep.ranks)]
        line = sx.plot(sweep.ranks, back, "^--", color=PALETTE[5], label="parts back on other samples (right)")
        sx.set_ylim(0, 1.05)
        sx.set_ylabel("share of parts back (similarity >= 0.9)")
        handles = (handles[0] + line, handles[1] + [line[0].get_label()])
    ax.legend(*handles, fontsize=9, loc="lower left")
    if shares:
        bx = fig.add_subplot(1, 2, 2)
        for i, (region, values) in enumerate(shares.items()):
            bx.plot(sweep.ranks, values, "o-", color=PALETTE[2 + i], label=region)
        bx.axhline(SEMANTIC_PURITY, color="grey", ls="--", lw=1)
        choice = sweep.semantic_choice()
        if choice is not None:
            bx.axvline(choice, color="black", lw=1, label=f"first with all: R_S = {choice}")
        bx.set_xlabel("R_S (parts)")
        bx.set_ylabel("purity of the region's part")
        bx.set_title(f"a part of its own, on {sweep.n_faces} faces (higher is better)")
        bx.set_ylim(0, 1)
        bx.grid(alpha=0.3)
        bx.legend(fontsize=9)
    fig.tight_layout()
    return _rendered(fig)


def retrieval_figure(model: PandA, result: Retrieval, most: Localisation, least: Localisation,
                     most_labels: Sequence[int | str], least_labels: Sequence[int | str], label: str,
                     n_scored: int) -> Image.Image:
    """The samples with the most and the least of an appearance in a region: for each, the image (region outlined:
    its own where FaceMesh found it in each image) and where the appearance is (its map squared over the image, each rescaled to [0, 1]), captioned with its score.

    Parameters
    ----------
    most, least : Localisation
        The top and bottom samples' images and maps (:func:`panda.localisation.localisation`), in score order.
    """
    j, size, scale = result.appearance, most.images.shape[-1], scale_for(most.images)
    whole = result.regions is None and bool((result.region == result.region.flatten()[0]).all())  # nothing to outline

    def mask(i: int) -> torch.Tensor:  # sample i's region: its own face region, or the one region of all
        return region_at(result.region if result.regions is None else result.regions[i], size) > 0.5

    def half(loc: Localisation, labels: Sequence[int | str], indices: list[int], title: str) -> Image.Image:
        maps = upsample(normalise(signed(model, j, loc.maps[:, j])), size)
        images = [to_pil(img, scale) if whole else outline(img, [mask(i)], scale) for img, i in zip(loc.images, indices)]
        cols = [f"{text}\n{float(result.scores[i]):+.2f}" for text, i in zip(seed_labels(labels), indices)]
        return grid([images, [to_pil(overlay(img, m ** 2), scale) for img, m in zip(loc.images, maps)]],
                    ["image", f"appearance {j}"], cols, title=title)

    k = len(most_labels)
    top = half(most, most_labels, result.top(k),
               f"the {k} of {n_scored} samples with the most of appearance {j} in {label} (score: its mean there, in "
               f"units of the layer's typical norm)")
    bottom = half(least, least_labels, result.bottom(len(least_labels)),
                  f"... and the {len(least_labels)} with the least")
    return stack([top, bottom])


def _pair_names(first: PandA, second: PandA, a: int, b: int) -> str:
    """A matched pair's part names as a third label line ('mouth', or 'mouth ~ -' where they differ); '' if neither
    part has one."""
    na, nb = first.part_names_.get(a, ""), second.part_names_.get(b, "")
    if not (na or nb):
        return ""
    return "\n" + (na if na == nb else f"{na or '-'} ~ {nb or '-'}")


def comparison_figure(first: PandA, second: PandA, cmp: Comparison, image: torch.Tensor | None = None,
                      names: tuple[str, str] = ("first", "second"), per_row: int = 10) -> Image.Image:
    """The matched parts of two fits, most similar first: each pair a column (the first fit's part above the second's,
    over ``image`` (3, H', W') in [0, 1] when given, else as heat maps), ``per_row`` pairs to a block; a pair's part
    names (``panda name-parts``) under its similarity.

    Parameters
    ----------
    names : (str, str)
        What to call the two fits in the row labels (their file names).
    """
    size = 64 if image is None else image.shape[-1]
    scale = 128 // size if image is None else scale_for(image[None])

    def tile(model: PandA, k: int) -> Image.Image:
        m = upsample(normalise(model.part_maps()[k:k + 1]), size)[0]
        return heat_tile(m, 1.0, scale) if image is None else to_pil(overlay(image, m), scale)

    blocks = []
    for start in range(0, len(cmp.pairs), per_row):
        chunk = cmp.pairs[start:start + per_row]
        rows = [[tile(first, a) for a, _ in chunk], [tile(second, b) for _, b in chunk]]
        cols = [f"{a} ~ {b}\n{float(cmp.similarity[a, b]):.2f}" + _pair_names(first, second, a, b) for a, b in chunk]
        title = None if start else (f"{len(cmp.pairs)} matched parts, most similar first (cosine similarity of the maps; "
                                    f"mean {np.mean(cmp.matched):.2f})")
        blocks.append(grid(rows, list(names), cols, title=title))
    return stack(blocks)


# ------------------------------------------------------------------------------------- the benchmark
def bench_bar_plot(res: BenchResult, metric: str = "ROIR") -> Image.Image:
    """Grouped bars (regions x methods) of a metric's mean with std whiskers; unavailable methods are named as n/a."""
    methods = [m for m in res.methods if res.row(m, REGIONS[0]).available]
    missing = [f"{m}: {res.row(m, REGIONS[0]).label}" for m in res.methods if m not in methods]
    from matplotlib.figure import Figure  # here, not at the top: importing matplotlib costs every command 0.5 s

    fig = Figure(figsize=(10, 4.2), dpi=100)
    ax = fig.add_subplot()
    width = 0.8 / max(len(methods), 1)
    for mi, m in enumerate(methods):
        stats = [res.row(m, r).score(metric) for r in REGIONS]
        x = np.arange(len(REGIONS)) + (mi - (len(methods) - 1) / 2) * width
        ax.bar(x, [s[0] for s in stats], width * 0.9, yerr=[s[1] for s in stats], label=m, color=PALETTE[mi], capsize=3)
        for xi, st in zip(x, stats):
            if st[0] != st[0]:  # no edit specific to the region: say so where the bar would be
                ax.text(xi, 0, "none", rotation=90, ha="center", va="bottom", fontsize=8, color=PALETTE[mi])
    ax.set_xticks(np.arange(len(REGIONS)), REGIONS)
    ax.set_ylabel(metric)
    ax.set_title(f"{res.generator}: {metric} on {res.n_test} test faces, mean +- std"
                 + (" (lower is better)" if metric == "ROIR" else ""))
    ax.legend(title="; ".join(missing) if missing else None, fontsize=9, title_fontsize=8, ncols=min(len(methods), 5))
    ax.grid(axis="y", alpha=0.3)
    return _rendered(fig)


def region_grid(res: BenchResult, region: str, n_show: int = 6) -> Image.Image:
    """Rows: test faces. Columns: the original and each method's chosen edit, the region outlined."""
    faces = res.faces
    methods = [m for m in res.methods if m in res.edits[region]]
    scale = scale_for(faces.images)
    rows = []
    for i in range(min(n_show, len(faces.seeds))):
        mask = faces.masks[region][i]
        rows.append([outline(faces.images[i], [mask], scale)] + [outline(res.edits[region][m][i], [mask], scale) for m in methods])
    cols = ["original"] + [f"{m}\nROIR {res.row(m, region).score('ROIR')[0]:.2f}" for m in methods]
    none = [m for m in res.methods if res.row(m, region).available and not res.row(m, region).chosen]
    return grid(rows, seed_labels(faces.seeds[:n_show]), cols,
                title=f"{res.generator}, {region} (outlined): each method's edit, matched pixel change inside the region"
                      + (f"; no {region}-specific edit: {', '.join(none)}" if none else ""))


def cell_grid(res: BenchResult, method: str, region: str, n_show: int = 6) -> Image.Image:
    """One benchmark cell: rows are test faces; columns the original, the chosen edit and the absolute pixel change
    (one colour scale for the grid, saturating at the 99th percentile so that the bulk of the change is visible), each
    with the region outlined, so a reader sees what won and where it acted."""
    row, faces = res.row(method, region), res.faces
    n = min(n_show, len(faces.seeds))
    x0, x1 = faces.images[:n], res.edits[region][method][:n]
    change = change_map(x0, x1)
    top = max(float(torch.quantile(change.flatten(), 0.99)), 1e-6)
    heat = torch.from_numpy(hot((change / top).numpy())).permute(0, 3, 1, 2).float()  # (n, 3, H, W)
    scale = scale_for(faces.images)
    rows = [[outline(t[i], [faces.masks[region][i]], scale) for t in (x0, x1, heat)] for i in range(n)]
    roir_mean, _, _ = row.score("ROIR")
    spec, _, _ = row.score("specificity")
    return grid(rows, seed_labels(faces.seeds[:n]), ["original", "edited", f"|change| (white: >= {top:.2f})"],
                title=f"{res.generator}, {region} (outlined): {method}, {row.label} x {row.alpha:+.2f}; "
                      f"ROIR {roir_mean:.2f}, specificity {spec:.2f}")


def masks_figure(faces: FaceSet, n_show: int = 8) -> Image.Image:
    """Images with the eyes, nose and mouth masks and ONet's five points, for a person to check."""
    scale = scale_for(faces.images)
    colours = {"eyes": (0, 255, 0), "nose": (255, 0, 255), "mouth": (0, 200, 255)}
    rows = []
    for i in range(min(n_show, len(faces.seeds))):
        img = faces.images[i]
        tile = outline(img, [faces.masks[r][i] for r in REGIONS], scale, [colours[r] for r in REGIONS])
        d = ImageDraw.Draw(tile)
        for x, y in faces.check["points"][i].tolist():
            if x != x:  # no ONet points (no cross-check)
                continue
            d.ellipse([x * scale - 3, y * scale - 3, x * scale + 3, y * scale + 3], outline=(255, 0, 0), width=2)
        rows.append([to_pil(img, scale), tile])
    return grid(rows, seed_labels(faces.seeds[:n_show]), ["image", "masks + ONet points"],
                title="FaceMesh masks (green eyes, magenta nose, blue mouth) and ONet's points (red)")
