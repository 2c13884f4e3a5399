"""Pictures a person can read: labelled PNG grids, heat-map overlays and an index.html.

Only Pillow is used. Every PNG is written atomically (temporary file, then rename), so an
interrupted run never leaves a half-written picture behind.
"""

from __future__ import annotations

import html
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from .errors import PandaError

if TYPE_CHECKING:  # only for annotations: refinement imports viz
    from .refinement import Refined

#: Distinct colours for parts (matplotlib's tab10, then a few more).
PALETTE = np.array([
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
    (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207),
    (0, 0, 128), (128, 128, 0), (0, 128, 128), (128, 0, 128), (255, 215, 0), (0, 0, 0),
], dtype=np.float32) / 255.0


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def hot(x: np.ndarray) -> np.ndarray:
    """'hot' colour map: (...) values in [0, 1] -> (..., 3) RGB in [0, 1] (black, red, yellow, white)."""
    x = np.clip(x, 0.0, 1.0)[..., None]
    return np.clip(np.concatenate([3 * x, 3 * x - 1, 3 * x - 2], axis=-1), 0.0, 1.0)


def diverging(x: np.ndarray) -> np.ndarray:
    """Blue-white-red map: (...) values in [-1, 1] -> (..., 3) RGB in [0, 1]."""
    x = np.clip(x, -1.0, 1.0)[..., None]
    pos, neg = np.clip(x, 0, 1), np.clip(-x, 0, 1)
    return np.concatenate([1 - neg, 1 - pos - neg, 1 - pos], axis=-1)


def upsample(maps: torch.Tensor, size: int) -> torch.Tensor:
    """(N, H, W) maps -> (N, size, size), bilinear (what the generator 'sees' is smooth)."""
    return F.interpolate(maps[:, None].float(), size=(size, size), mode="bilinear", align_corners=False)[:, 0]


def normalise(maps: torch.Tensor) -> torch.Tensor:
    """Min-max each (H, W) map of (N, H, W) to [0, 1]; a constant map becomes 0."""
    flat = maps.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return ((flat - lo) / (hi - lo).clamp_min(1e-12)).view_as(maps)


def to_pil(image: torch.Tensor | np.ndarray, scale: int = 1) -> Image.Image:
    """(3, H, W) tensor or (H, W, 3) array in [0, 1] -> PIL image, enlarged ``scale`` times (nearest)."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().float().permute(1, 2, 0).numpy()
    arr = (np.clip(image, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    pil = Image.fromarray(arr)
    return pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST) if scale != 1 else pil


def overlay(image: torch.Tensor, heat: torch.Tensor, strength: float = 0.6) -> np.ndarray:
    """Blend a (H, W) heat map in [0, 1] (colour map 'hot') over a (3, H, W) image in [0, 1].
    Returns (H, W, 3) in [0, 1]; where the map is 0 the image shows through unchanged."""
    img = image.detach().cpu().float().permute(1, 2, 0).numpy()
    h = heat.detach().cpu().float().numpy()
    w = strength * h[..., None]
    return (1 - w) * img + w * hot(h)


def segmentation(image: torch.Tensor, maps: torch.Tensor, strength: float = 0.55) -> np.ndarray:
    """Colour each pixel of a (3, H, W) image by its strongest map of (K, H, W) (argmax).
    Returns (H, W, 3) in [0, 1]."""
    img = image.detach().cpu().float().permute(1, 2, 0).numpy()
    labels = maps.argmax(0).cpu().numpy()
    colours = PALETTE[labels % len(PALETTE)]
    return (1 - strength) * img + strength * colours


def legend_swatch(index: int, size: int = 12) -> Image.Image:
    return Image.new("RGB", (size, size), tuple(int(c * 255) for c in PALETTE[index % len(PALETTE)]))


def grid(
    tiles: Sequence[Sequence[Image.Image]],
    row_labels: Sequence[str] | None = None,
    col_labels: Sequence[str] | None = None,
    title: str | None = None,
    pad: int = 4,
    font_size: int = 14,
) -> Image.Image:
    """Lay out rows of equally sized tiles on white with optional row/column labels and a title."""
    if not tiles or not tiles[0]:
        raise ValueError("grid needs at least one tile")
    tw, th = tiles[0][0].size
    font = _font(font_size)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def text_w(s: str) -> int:
        return max(int(probe.textlength(line, font=font)) for line in s.split("\n"))

    def put(x: int, y: int, s: str, centred: bool) -> None:
        """Draw possibly multi-line text from top y, centred on x or left-aligned at x."""
        for i, line in enumerate(s.split("\n")):
            dx = -int(probe.textlength(line, font=font)) // 2 if centred else 0
            draw.text((x + dx, y + i * (font_size + 2)), line, fill="black", font=font)

    left = (max(text_w(s) for s in row_labels) + 2 * pad) if row_labels else 0
    top_title = font_size + 2 * pad if title else 0
    top_cols = (font_size + 2) * (max(s.count("\n") for s in col_labels) + 1) + 2 * pad if col_labels else 0
    ncols = max(len(r) for r in tiles)
    width = left + ncols * (tw + pad) + pad
    height = top_title + top_cols + len(tiles) * (th + pad) + pad
    if title:
        width = max(width, text_w(title) + 2 * pad)
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((pad, pad), title, fill="black", font=font)
    y0 = top_title + top_cols
    if col_labels:
        for c, label in enumerate(col_labels):
            x = left + pad + c * (tw + pad)
            put(x + tw // 2, top_title + pad, label, centred=True)
    for r, row in enumerate(tiles):
        y = y0 + pad + r * (th + pad)
        if row_labels:
            lines = row_labels[r].count("\n") + 1
            put(pad, y + th // 2 - lines * (font_size + 2) // 2, row_labels[r], centred=False)
        for c, tile in enumerate(row):
            canvas.paste(tile, (left + pad + c * (tw + pad), y))
    return canvas


def check_writable(directory: str | os.PathLike) -> Path:
    """Create ``directory`` if needed and make sure files can be written there."""
    path = Path(directory)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".panda-write-test-"):
            pass
    except OSError as exc:
        raise PandaError(f"cannot write to output directory '{path}' ({exc.strerror}): choose another with --out.") from exc
    return path


def save_png(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write ``image`` as PNG atomically (a temporary file in the same folder, then rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_index(directory: str | os.PathLike, title: str, sections: Sequence[tuple[str, str, Sequence[tuple[str, str]]]]) -> Path:
    """Write ``index.html`` showing PNGs with captions.

    sections: (heading, paragraph, [(png file name relative to directory, caption), ...]).
    """
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           "<style>body{font-family:sans-serif;max-width:1400px;margin:auto;padding:1em}"
           "figure{display:inline-block;margin:0 1em 1.5em 0;vertical-align:top}"
           "img{image-rendering:pixelated;max-width:100%;border:1px solid #ddd}"
           "figcaption{font-size:0.9em;color:#333;max-width:60em}</style></head><body>",
           f"<h1>{html.escape(title)}</h1>"]
    for heading, text, figures in sections:
        out.append(f"<h2>{html.escape(heading)}</h2><p>{text}</p>")
        for src, caption in figures:
            out.append(f"<figure><a href='{html.escape(src)}'><img src='{html.escape(src)}' alt='{html.escape(caption)}'></a>"
                       f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    out.append("</body></html>")
    path = Path(directory) / "index.html"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".index.html.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("\n".join(out))
    os.replace(tmp, path)
    return path


# ============================================================ figures of a fitted model
# These combine a model, a generator and latents into the PNGs the CLI and the demo write.

def _scale_for(images: torch.Tensor) -> int:
    """Enlarge small images so a 64x64 face is readable (about 128 px a tile)."""
    return max(1, 128 // images.shape[-1])


def change_map(original: torch.Tensor, edited: torch.Tensor) -> torch.Tensor:
    """Per-pixel size of an edit, (N, 3, H, W) x2 -> (N, H, W): mean |difference| over channels."""
    return (edited - original).abs().mean(1)


def parts_figure(model, generator, seeds: Sequence[int], latents=None, names: Sequence[str] | None = None) -> Image.Image:
    """Rows: samples. Columns: the image, every part by colour (argmax), then each part as a heat map."""
    latents = latents if latents is not None else generator.sample(seeds)
    images = generator.to_unit(generator.synthesize(latents)).cpu()
    size, scale = images.shape[-1], _scale_for(images)
    maps = upsample(normalise(model.part_maps()), size)
    names = names or [model.part_label(k) for k in range(model.n_parts)]
    rows = []
    for img in images:
        row = [to_pil(img, scale), to_pil(segmentation(img, maps), scale)]
        row += [to_pil(overlay(img, maps[k]), scale) for k in range(model.n_parts)]
        rows.append(row)
    return grid(rows, [f"seed {s}" for s in seeds], ["image", "all parts"] + list(names),
                title=f"{model.generator_name_} layer {model.layer_}: {model.n_parts} parts (heat: the part's weight)")


def sweep_figure(model, generator, seeds: Sequence[int], part: int, appearance: int, alphas: Sequence[float],
                 latents=None) -> tuple[Image.Image, float]:
    """Rows: samples. Columns: the edit at each alpha, the pixel change at the largest |alpha|, the part.

    Returns the picture and the mean share of the squared pixel change (at the largest |alpha|)
    that falls where the part's rescaled map is above 0.5.
    """
    from .editing import part_profile, sweep
    from .metrics import change_inside_fraction

    latents = latents if latents is not None else generator.sample(seeds)
    out = generator.to_unit(sweep(model, generator, latents, part, appearance, alphas)).cpu()
    big = max(range(len(alphas)), key=lambda i: abs(alphas[i]))
    original = generator.to_unit(generator.synthesize(latents)).cpu()
    size, scale = out.shape[-1], _scale_for(out)
    profile = upsample(part_profile(model, part)[None], size)[0]
    change = change_map(original, out[:, big])
    share = float(change_inside_fraction(original, out[:, big], (profile > 0.5).float()).mean())
    heat = change / change.max().clamp_min(1e-12)
    rows = []
    for i in range(len(latents)):
        row = [to_pil(out[i, t], scale) for t in range(len(alphas))]
        row.append(to_pil(hot(heat[i].numpy()), scale))
        row.append(to_pil(overlay(original[i], profile), scale))
        rows.append(row)
    cols = [f"alpha {a:+g}" for a in alphas] + [f"change at {alphas[big]:+g}", model.part_label(part)]
    title = (f"{model.part_label(part)}, appearance {appearance}: {100 * share:.0f}% of the pixel change falls in the part "
             f"(map > 0.5, {100 * float((profile > 0.5).float().mean()):.0f}% of the image)")
    return grid(rows, [f"seed {s}" for s in seeds], cols, title=title), share


def contact_sheet(model, generator, seeds: Sequence[int], part: int, appearances: Sequence[int],
                  alphas: Sequence[float], latents=None) -> Image.Image:
    """Rows: appearances (with their energy in the part). Columns: each sample at each alpha."""
    from .editing import sweep

    latents = latents if latents is not None else generator.sample(seeds)
    rows, labels = [], []
    for j in appearances:
        out = generator.to_unit(sweep(model, generator, latents, part, j, alphas)).cpu()
        scale = _scale_for(out)
        rows.append([to_pil(out[i, t], scale) for i in range(len(latents)) for t in range(len(alphas))])
        labels.append(f"appearance {j}\nenergy {float(model.coef_energy_[j, part]):.3g}")
    cols = [f"seed {s}\nalpha {a:+g}" for s in seeds for a in alphas]
    return grid(rows, labels, cols, title=f"{model.part_label(part)}: its top appearances by coefficient energy")


def edits_figure(model, generator, seeds: Sequence[int], edits, latents=None) -> Image.Image:
    """Rows: samples. Columns: original, edited (all edits summed), pixel change."""
    from .editing import edit

    latents = latents if latents is not None else generator.sample(seeds)
    original = generator.to_unit(generator.synthesize(latents)).cpu()
    edited = generator.to_unit(edit(model, generator, latents, edits)).cpu()
    change = change_map(original, edited)
    heat = change / change.max().clamp_min(1e-12)
    scale = _scale_for(original)
    rows = [[to_pil(original[i], scale), to_pil(edited[i], scale), to_pil(hot(heat[i].numpy()), scale)]
            for i in range(len(latents))]
    what = "; ".join(f"{model.part_label(e.part)} + appearance {e.appearance} x {e.alpha:+g}" for e in edits)
    return grid(rows, [f"seed {s}" for s in seeds], ["original", "edited", "change"], title=what)


def refine_figure(model, generator, seeds: Sequence[int], part: int, appearance: int, alpha: float,
                  shift: tuple[int, int] = (0, 0), steps: int = 100, radius: int | None = 1, search: int = 2,
                  refined: tuple[torch.Tensor, Refined] | None = None) -> tuple[Image.Image, dict]:
    """Global against refined parts on samples whose features are translated by ``shift`` = (dy, dx).

    Rows: samples (with the translation the refinement started from). Columns: the (shifted) image,
    the global part, the refined part, the edit with each, and each edit's pixel change. The region an
    edit should stay in is the global part moved by the same shift. Returns the picture and figures:
    mean reconstruction errors and median ROIR of the edits against that region (lower is better)
    with the global and the refined parts, and the share of samples whose start shift was ``shift``.
    refined: (features, :class:`panda.refinement.Refined`) from :func:`panda.refinement.refine` for
    these seeds and shift, if already computed (they do not depend on the part shown).
    """
    from .editing import Edit, edit_delta, part_profile, synthesize_offset
    from .metrics import roir
    from .refinement import refine, sample_errors, shift_maps

    latents = generator.sample(seeds)
    z, (parts, starts) = refine(model, generator, latents, steps, shift, radius, search) if refined is None else refined
    move = (lambda f: shift_maps(f, *shift)) if shift != (0, 0) else None
    e = [Edit(part, appearance, alpha)]
    zero = torch.zeros(1, *model.layer_shape_)
    original = generator.to_unit(synthesize_offset(generator, model.layer_, latents, zero, transform=move)).cpu()
    with_global = generator.to_unit(synthesize_offset(generator, model.layer_, latents, edit_delta(model, e)[None], transform=move)).cpu()
    with_refined = generator.to_unit(synthesize_offset(generator, model.layer_, latents, edit_delta(model, e, parts), transform=move)).cpu()
    size, scale = original.shape[-1], _scale_for(original)
    target = upsample(shift_maps(part_profile(model, part), *shift)[None], size)[0]
    region = (target > 0.5).float()
    figures = {
        "error_global": float(sample_errors(model, z).mean()),
        "error_refined": float(sample_errors(model, z, parts).mean()),
        # inf (an edit that changes nothing in the region) counts as the worst, not as missing
        "roir_global": float(roir(original, with_global, region).median()),
        "roir_refined": float(roir(original, with_refined, region).median()),
        "shift_found": float((starts == torch.tensor(shift)).all(1).float().mean()),
    }
    global_map = upsample(part_profile(model, part)[None], size)[0]
    rows = []
    for i in range(len(latents)):
        refined_map = upsample(part_profile(model, part, parts[i])[None], size)[0]
        cg, cr = change_map(original[i:i + 1], with_global[i:i + 1])[0], change_map(original[i:i + 1], with_refined[i:i + 1])[0]
        top = float(torch.maximum(cg.max(), cr.max()).clamp_min(1e-12))
        rows.append([to_pil(original[i], scale), to_pil(overlay(original[i], global_map), scale),
                     to_pil(overlay(original[i], refined_map), scale), to_pil(with_global[i], scale),
                     to_pil(with_refined[i], scale), to_pil(hot((cg / top).numpy()), scale), to_pil(hot((cr / top).numpy()), scale)])
    cols = ["image" + (f" (shift {shift[0]},{shift[1]})" if shift != (0, 0) else ""), f"global {model.part_label(part)}",
            f"refined {model.part_label(part)}", "edit, global", "edit, refined", "change, global", "change, refined"]
    labels = [f"seed {s}, start {int(t[0])},{int(t[1])}" for s, t in zip(seeds, starts)]
    title = (f"refinement ({steps} steps): error {figures['error_global']:.3f} -> {figures['error_refined']:.3f}; "
             f"median ROIR of {model.part_label(part)} + appearance {appearance} x {alpha:+g}: {figures['roir_global']:.2f} -> {figures['roir_refined']:.2f}")
    return grid(rows, labels, cols, title=title), figures


def remove_figure(model, generator, seeds: Sequence[int], region: torch.Tensor, alpha: float = 1.0,
                  background: int | str | None = "auto", label: str = "region",
                  masks: torch.Tensor | None = None, sign: float | None = None) -> tuple[Image.Image, dict]:
    """Rows: samples. Columns: the region as heat, original, removed, pixel change.

    region: (H, W) or per sample (N, H, W) on the layer's grid; masks: the same at image resolution
    (bool), default the region upsampled above 0.5. background: "auto" (chosen for this region on these
    images, :func:`panda.removal.choose_fill`), None or "global" (the one chosen when fitting), or an
    index, with ``sign`` (None: see :func:`panda.removal.remove`).
    Returns the picture and figures: the appearance and sign used, the mean colour distance from the
    region to the band around it, before and after, and with "auto" the whole search ("search", a
    :class:`panda.removal.BackgroundSearch`) for :func:`candidates_figure`.
    """
    from .removal import choose_fill, fill_for, remove, towards_background

    latents = generator.sample(seeds)
    original = generator.to_unit(generator.synthesize(latents)).cpu()
    size, scale = original.shape[-1], _scale_for(original)
    regions, shown, masks = _removal_regions(region, masks, len(seeds), size)
    figures = {}
    if background == "auto":
        found = choose_fill(model, generator, latents, regions, masks, alpha)
        background, sign, figures["search"] = found.appearance, found.sign, found
    elif background in (None, "global"):
        background = None
    b, used_sign = fill_for(model, background, sign)
    removed = generator.to_unit(remove(model, generator, latents, regions, alpha, b, used_sign)).cpu()
    before, after = towards_background(original, removed, masks)
    change = change_map(original, removed)
    heat = change / change.max().clamp_min(1e-12)
    rows = [[to_pil(overlay(original[i], shown[i]), scale), to_pil(original[i], scale), to_pil(removed[i], scale),
             to_pil(hot(heat[i].numpy()), scale)] for i in range(len(latents))]
    figures.update({"background": b, "sign": used_sign, "distance_before": float(before.mean()),
                    "distance_after": float(after.mean())})
    title = (f"remove {label} with background appearance {b} ({used_sign:+g}) x {alpha:+g}: colour distance to the "
             f"surroundings {figures['distance_before']:.3f} -> {figures['distance_after']:.3f}")
    return grid(rows, [f"seed {s}" for s in seeds], [label, "original", "removed", "change"], title=title), figures


def _removal_regions(region: torch.Tensor, masks: torch.Tensor | None, n: int,
                     size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(regions on the grid (N, H, W), what to draw (N, size, size) in [0, 1], what to measure (N, size, size) bool)."""
    regions = region[None].expand(n, *region.shape) if region.dim() == 2 else region
    shown = upsample(regions.float(), size).clamp(0, 1) if masks is None else masks.float()
    return regions, shown, (shown > 0.5 if masks is None else masks)


def candidates_figure(model, generator, seeds: Sequence[int], region: torch.Tensor, search, alpha: float = 1.0,
                      top: int = 6, masks: torch.Tensor | None = None, label: str = "region") -> Image.Image:
    """The ``top`` best fills of a background search side by side, so a person can overrule the pick.

    Rows: samples. Columns: the original with the region drawn, then each candidate's removal, best
    first, labelled with its appearance, sign and gain (the share of the way its fill brought the
    region's mean colour to its surroundings on the searched images). region, masks: as for
    :func:`remove_figure`; search: the :class:`panda.removal.BackgroundSearch` it returned.
    """
    from .removal import remove

    latents = generator.sample(seeds)
    original = generator.to_unit(generator.synthesize(latents)).cpu()
    size, scale = original.shape[-1], _scale_for(original)
    regions, shown, _ = _removal_regions(region, masks, len(seeds), size)
    ranked = search.ranked(top)
    fills = [generator.to_unit(remove(model, generator, latents, regions, alpha, j, s)).cpu() for j, s, _ in ranked]
    rows = [[to_pil(overlay(original[i], shown[i]), scale)] + [to_pil(f[i], scale) for f in fills] for i in range(len(latents))]
    cols = [label] + [f"{'+' if s > 0 else '-'}{j}: {100 * g:.0f}%" for j, s, g in ranked]
    title = (f"the {len(ranked)} best fills for {label} at alpha {alpha:+g} (appearance with sign: gain); "
             f"pick one with --background J or --background -J")
    return grid(rows, [f"seed {s}" for s in seeds], cols, title=title)


def localize_figure(model, generator, seeds: Sequence[int], appearance: int) -> Image.Image:
    """One concept across samples. Row 1: the images; row 2: appearance j's map over them (each map min-max)."""
    from .localisation import localize, signed

    model.check_appearance(appearance)
    latents = generator.sample(seeds)
    images = generator.to_unit(generator.synthesize(latents)).cpu()
    size, scale = images.shape[-1], _scale_for(images)
    maps = upsample(normalise(signed(model, appearance, localize(model, generator, latents)[:, appearance])), size)
    rows = [[to_pil(img, scale) for img in images], [to_pil(overlay(img, m ** 2), scale) for img, m in zip(images, maps)],
            [to_pil(hot(m.numpy()), scale) for m in maps]]
    return grid(rows, ["image", f"appearance {appearance}", "its map"], [f"seed {s}" for s in seeds],
                title=f"where appearance {appearance} is (A^T Z, each map rescaled to [0, 1])")


def localize_top_figure(model, generator, seed: int, k: int) -> Image.Image:
    """One image and its k strongest concepts (by energy of their maps), side by side."""
    from .localisation import localize, signed, strongest

    latents = generator.sample([seed])
    image = generator.to_unit(generator.synthesize(latents)).cpu()[0]
    size, scale = image.shape[-1], _scale_for(image[None])
    maps = localize(model, generator, latents)[0]
    top = strongest(maps, k)
    heat = upsample(normalise(torch.stack([signed(model, j, maps[j]) for j in top])), size)
    blank = Image.new("RGB", to_pil(image, scale).size, "white")
    rows = [[to_pil(image, scale)] + [to_pil(overlay(image, h ** 2), scale) for h in heat],
            [blank] + [to_pil(hot(h.numpy()), scale) for h in heat]]
    return grid(rows, ["overlay", "map"], ["image"] + [f"appearance {j}" for j in top],
                title=f"seed {seed}: its {k} strongest concepts (A^T Z, each map rescaled to [0, 1])")
