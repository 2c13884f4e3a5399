"""ROIR benchmark: PandA against GANSpace, SeFa, LowRankGAN and ReSeFa (StyleSpace: n/a on a DCGAN),
with region masks from independent landmark models (see :mod:`panda.landmarks`).

Protocol (every method gets the same budget of choices):

1. Seeds: PandA and GANSpace train on ``[0, n_train)``; calibration seeds start at 20,000,000 and test
   seeds at 10,000,000, disjoint from each other and from training. Samples are kept where FaceMesh finds
   a face, ONet (on FaceMesh's face box) gives probability > 0.9, and every region mask is non-empty.
2. Each method proposes ``budget`` directions per region: PandA the top appearances (by coefficient
   energy) of the part that overlaps the region most (the part named after it); GANSpace and SeFa their
   first directions; LowRankGAN and ReSeFa their first directions for that region, computed from
   ``n_jacobian`` calibration samples and their masks. Each direction is tried with both signs.
3. Matched magnitude: for every candidate, alpha is scaled (secant steps) until the mean absolute pixel
   change inside the region, over the calibration samples, equals ``target`` (images in [0, 1]).
4. The candidate with the lowest mean ROIR on the calibration samples is the method's edit for the
   region; ROIR (mean +- std) is then reported on the test samples, each with its own mask.
"""

from __future__ import annotations

import csv
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from . import baselines, viz
from .editing import Edit, edit, part_profile
from .errors import PandaError
from .generators import GeneratorAdapter, Latents, load_generator
from .landmarks import REGIONS, FaceMeshMasker, RegionMasks, cross_check, load_onet, onet_points
from .metrics import roir
from .model import PandA

METHODS = ("PandA", "GANSpace", "SeFa", "StyleSpace", "LowRankGAN", "ReSeFa")
TEST_SEED_START = 10_000_000
CALIB_SEED_START = 20_000_000
GANSPACE_LAYER = {"dcgan-celeba": "relu1", "dcgan-digiface": "main.2", "dcgan-eyes": "main.2"}


@dataclass
class FaceSet:
    """Kept samples with their images in [0, 1] and region masks."""

    seeds: list[int]
    latents: Latents
    images: torch.Tensor
    masks: dict[str, torch.Tensor]
    n_tried: int
    check: dict = field(default_factory=dict)


def name_model_parts(model: PandA, generator: GeneratorAdapter, n: int = 64, start: int = CALIB_SEED_START) -> dict[int, str]:
    """Name ``model``'s parts after the regions they overlap most (see :func:`region_parts`) on ``n``
    faces from seed ``start``; sets and returns ``model.part_names_``."""
    model.check_compatible(generator)
    faces = face_set(generator, start, n, FaceMeshMasker(), load_onet())
    if len(faces.seeds) == 0:
        raise PandaError(f"no faces found in {n} samples of '{generator.name}': naming parts needs a face generator.")
    model.part_names_ = part_names(region_parts(model, faces))
    return model.part_names_


def face_set(generator: GeneratorAdapter, start: int, n: int, masker: FaceMeshMasker, onet, batch: int = 256) -> FaceSet:
    """Seeds start .. start+n-1, filtered to those both landmark models accept with non-empty masks."""
    seeds, images, masks, found, probs, points, boxes = list(range(start, start + n)), [], {r: [] for r in REGIONS}, [], [], [], []
    for i in range(0, n, batch):
        x = generator.to_unit(generator.synthesize(generator.sample(seeds[i:i + batch]))).cpu()
        rm = masker(x)
        p, pts = onet_points(onet, x, rm.boxes)
        images.append(x), found.append(rm.found), probs.append(p), points.append(pts), boxes.append(rm.boxes)
        for r in REGIONS:
            masks[r].append(rm.masks[r])
    images = torch.cat(images)
    masks = {r: torch.cat(m) for r, m in masks.items()}
    check = cross_check(RegionMasks(torch.cat(found), masks), torch.cat(probs), torch.cat(points))
    keep = check["kept"] & torch.stack([m.flatten(1).any(1) for m in masks.values()]).all(0)
    idx = torch.nonzero(keep).flatten()
    kept_seeds = [seeds[i] for i in idx.tolist()]
    check = {k: v for k, v in check.items() if k != "kept"} | {"points": torch.cat(points)[idx]}
    return FaceSet(kept_seeds, generator.sample(kept_seeds), images[idx], {r: m[idx] for r, m in masks.items()}, n, check)


@dataclass
class Candidate:
    """A direction a method proposes. apply(latents, alpha) -> images in the generator's range."""

    method: str
    label: str
    apply: Callable[[Latents, float], torch.Tensor]


def region_parts(model: PandA, faces: FaceSet) -> dict[str, int]:
    """For each region, the part with the largest share of its (rescaled, upsampled) mass inside that
    region's masks, averaged over the samples. Two regions may pick the same part."""
    size = faces.images.shape[-1]
    maps = torch.stack([viz.upsample(part_profile(model, k)[None], size)[0] for k in range(model.n_parts)])
    return {r: int(torch.argmax((maps[None] * m[:, None].float()).flatten(2).sum(2).mean(0) / maps.flatten(1).sum(1)))
            for r, m in faces.masks.items()}


def part_names(parts: dict[str, int]) -> dict[int, str]:
    """Part index -> name ('eyes', 'nose', 'mouth', or several joined by '/')."""
    names: dict[int, list[str]] = {}
    for region, k in parts.items():
        names.setdefault(k, []).append(region)
    return {k: "/".join(v) for k, v in names.items()}


def inside_change(x0: torch.Tensor, x1: torch.Tensor, masks: torch.Tensor) -> float:
    """Mean over samples of the mean absolute pixel change (all channels) inside each sample's mask."""
    d = (x1 - x0).abs().mean(1)  # (N, H, W)
    m = masks.float()
    return float(((d * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)).mean())


def calibrate(cand: Candidate, generator: GeneratorAdapter, faces: FaceSet, masks: torch.Tensor, sign: float,
              target: float, steps: int = 4, max_alpha: float = 50.0) -> tuple[float, float, float]:
    """Scale alpha until the mean inside change on ``faces`` is ``target``; returns (alpha, change, mean ROIR)."""
    alpha, change, x1 = sign * 1.0, 0.0, None
    for _ in range(steps):
        x1 = generator.to_unit(cand.apply(faces.latents, alpha)).cpu()
        change = inside_change(faces.images, x1, masks)
        if change <= 1e-9:
            alpha *= 4
        else:
            alpha *= target / change
        alpha = max(-max_alpha, min(max_alpha, alpha))
    x1 = generator.to_unit(cand.apply(faces.latents, alpha)).cpu()
    change = inside_change(faces.images, x1, masks)
    r = roir(faces.images, x1, masks.float())
    return alpha, change, float(r[torch.isfinite(r)].mean()) if torch.isfinite(r).any() else math.inf


@dataclass
class BenchResult:
    generator: str
    n_tried: int
    n_test: int
    n_calib: int
    target: float
    setup_s: dict[str, float]
    rows: list[dict]           # method, region, mean, std, n, label, alpha, change
    check: dict
    part_names: dict[int, str]


def run_roir(generator_name: str = "dcgan-celeba", n: int = 1000, n_calib: int = 64, budget: int = 8,
             target: float = 0.05, n_train: int = 5000, n_jacobian: int = 5, ganspace_samples: int = 10_000,
             rank_parts: int = 12, device: str = "cpu", progress: bool = True, model: PandA | None = None) -> tuple[BenchResult, dict]:
    """Run the protocol (module docstring). Returns the result and the test-set edits for pictures:
    {region: {method: images (N, 3, H, W) in [0, 1]}} plus the FaceSet under key "_faces"."""
    g = load_generator(generator_name, device)
    masker, onet = FaceMeshMasker(), load_onet()
    setup: dict[str, float] = {}

    if model is None:
        model = PandA(rank_parts=rank_parts, background_samples=0, n_heldout=0, verbose=progress).fit(g, n_samples=n_train)
    setup["PandA"] = model.extract_time_ + model.fit_time_  # feature extraction included, as for GANSpace
    t = time.perf_counter()
    gs = baselines.ganspace(g, GANSPACE_LAYER.get(generator_name, g.default_layer), n_samples=ganspace_samples)
    setup["GANSpace"] = time.perf_counter() - t
    t = time.perf_counter()
    sf = baselines.sefa(baselines.first_layer_weight(g))
    setup["SeFa"] = time.perf_counter() - t

    calib = face_set(g, CALIB_SEED_START, n_calib, masker, onet)
    test = face_set(g, TEST_SEED_START, n, masker, onet)
    if len(calib.seeds) < max(n_jacobian, 2) or len(test.seeds) < 2:
        raise PandaError(f"too few faces passed both landmark models ({len(calib.seeds)} calibration, {len(test.seeds)} "
                         f"test): raise --n or --n-calib.")
    part_of = region_parts(model, calib)
    names = part_names(part_of)
    model.part_names_ = names  # shown in its pictures

    t = time.perf_counter()
    jac_lat = calib.latents[:n_jacobian]
    jacs = baselines.jacobians(g, jac_lat)
    jac_time = time.perf_counter() - t
    setup["LowRankGAN"] = setup["ReSeFa"] = jac_time

    rows, edits = [], {}
    for region in tqdm(REGIONS, desc="regions", disable=not progress, leave=False):
        inside, outside = baselines.region_grams(jacs, calib.masks[region][:n_jacobian])
        t = time.perf_counter()
        lr = baselines.lowrankgan(inside, outside)
        setup["LowRankGAN"] += time.perf_counter() - t
        t = time.perf_counter()
        rs = baselines.resefa(inside, outside)
        setup["ReSeFa"] += time.perf_counter() - t
        k = part_of[region]
        cands = {
            "PandA": [Candidate("PandA", f"{model.part_label(k)} + appearance {j}",
                                lambda lat, a, k=k, j=j: edit(model, g, lat, [Edit(k, j, a)]))
                      for j in model.top_appearances(k, budget)],
            "GANSpace": [Candidate("GANSpace", f"PC {i}", lambda lat, a, d=gs[i]: baselines.LatentEdit(d)(g, lat, a))
                         for i in range(min(budget, len(gs)))],
            "SeFa": [Candidate("SeFa", f"direction {i}", lambda lat, a, d=sf[i]: baselines.LatentEdit(d)(g, lat, a))
                     for i in range(min(budget, len(sf)))],
            "LowRankGAN": [Candidate("LowRankGAN", f"direction {i}", lambda lat, a, d=lr[i]: baselines.LatentEdit(d)(g, lat, a))
                           for i in range(min(budget, len(lr)))],
            "ReSeFa": [Candidate("ReSeFa", f"direction {i}", lambda lat, a, d=rs[i]: baselines.LatentEdit(d)(g, lat, a))
                       for i in range(min(budget, len(rs)))],
        }
        edits[region] = {}
        for method in METHODS:
            if method == "StyleSpace":
                rows.append({"method": method, "region": region, "mean": math.nan, "std": math.nan, "n": 0,
                             "label": "n/a (needs a StyleGAN generator)", "alpha": math.nan, "change": math.nan})
                continue
            best = None
            for cand in cands[method]:
                for sign in (1.0, -1.0):
                    alpha, change, score = calibrate(cand, g, calib, calib.masks[region], sign, target)
                    if best is None or score < best[0]:
                        best = (score, cand, alpha, change)
            _, cand, alpha, _ = best
            with torch.no_grad():
                x1 = torch.cat([g.to_unit(cand.apply(test.latents[i:i + 256], alpha)).cpu()
                                for i in range(0, len(test.seeds), 256)])
            r = roir(test.images, x1, test.masks[region].float())
            r = r[torch.isfinite(r)]
            rows.append({"method": method, "region": region, "mean": float(r.mean()), "std": float(r.std()),
                         "n": int(r.numel()), "label": cand.label, "alpha": alpha,
                         "change": inside_change(test.images, x1, test.masks[region])})
            edits[region][method] = x1
    edits["_faces"] = test
    check = {k: v for k, v in test.check.items() if k != "points"}
    return BenchResult(generator_name, test.n_tried, len(test.seeds), len(calib.seeds), target, setup, rows, check, names), edits


# ------------------------------------------------------------------------------------------ outputs
def markdown(res: BenchResult) -> str:
    regions = list(REGIONS)
    lines = [f"### {res.generator}: ROIR (lower is better), mean +- std over {res.n_test} test faces",
             "", "| method | " + " | ".join(regions) + " | setup s |", "|---|" + "---|" * (len(regions) + 1)]
    by = {(r["method"], r["region"]): r for r in res.rows}
    for m in METHODS:
        if m == "StyleSpace":
            lines.append(f"| {m} | " + " | ".join("n/a (needs a StyleGAN generator)" for _ in regions) + " | - |")
            continue
        cells = [f"{by[(m, r)]['mean']:.2f} +- {by[(m, r)]['std']:.2f}" for r in regions]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {res.setup_s[m]:.1f} |")
    lines += ["", f"Samples: {res.n_tried} test seeds tried, {res.n_test} kept (FaceMesh found a face, ONet on its face box "
              f"gave p > 0.9, all masks non-empty); {res.n_calib} calibration faces. ONet's points inside FaceMesh's masks: "
              f"eyes {100 * res.check.get('eyes', math.nan):.1f}%, nose {100 * res.check.get('nose', math.nan):.1f}%, "
              f"mouth {100 * res.check.get('mouth', math.nan):.1f}%. Matched magnitude: mean absolute pixel change inside the "
              f"region {res.target:g} on calibration faces; achieved on the test faces:", "",
              "| method | " + " | ".join(f"{r}: edit chosen, change" for r in regions) + " |", "|---|" + "---|" * len(regions)]
    for m in METHODS:
        if m == "StyleSpace":
            continue
        lines.append(f"| {m} | " + " | ".join(f"{by[(m, r)]['label']} x {by[(m, r)]['alpha']:+.2f}, {by[(m, r)]['change']:.3f}"
                                               for r in regions) + " |")
    named = ", ".join(f"part {k} = {v}" for k, v in sorted(res.part_names.items()))
    lines += ["", f"PandA's parts named by overlap with the masks: {named}."]
    return "\n".join(lines)


def write_csv(res: BenchResult, path: Path) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["generator", "method", "region", "mean", "std", "n", "label", "alpha",
                                           "inside_change", "setup_s"])
        w.writeheader()
        for r in res.rows:
            w.writerow({"generator": res.generator, "method": r["method"], "region": r["region"], "mean": r["mean"],
                        "std": r["std"], "n": r["n"], "label": r["label"], "alpha": r["alpha"], "inside_change": r["change"],
                        "setup_s": res.setup_s.get(r["method"], "")})


def bar_plot(res: BenchResult) -> Image.Image:
    """Grouped bars (regions x methods) with std whiskers; StyleSpace is shown as n/a."""
    methods = [m for m in METHODS if m != "StyleSpace"]
    by = {(r["method"], r["region"]): r for r in res.rows}
    top = max(by[(m, r)]["mean"] + by[(m, r)]["std"] for m in methods for r in REGIONS)
    w, h, left, bottom, bar = 1000, 420, 60, 60, 26
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    font = viz._font(13)
    plot_h = h - bottom - 40
    scale = plot_h / (top * 1.05)
    for tick in np.linspace(0, top, 6):
        y = h - bottom - tick * scale
        d.line([(left, y), (w - 10, y)], fill=(225, 225, 225))
        d.text((5, y - 7), f"{tick:.1f}", fill="black", font=font)
    group = (w - left - 20) / len(REGIONS)
    for gi, region in enumerate(REGIONS):
        x0 = left + gi * group + (group - bar * len(methods)) / 2
        for mi, m in enumerate(methods):
            r = by[(m, region)]
            colour = tuple(int(c * 255) for c in viz.PALETTE[mi])
            x = x0 + mi * bar
            d.rectangle([x, h - bottom - r["mean"] * scale, x + bar - 4, h - bottom], fill=colour)
            cx = x + (bar - 4) / 2
            d.line([(cx, h - bottom - (r["mean"] - r["std"]) * scale), (cx, h - bottom - (r["mean"] + r["std"]) * scale)], fill="black")
        d.text((left + gi * group + group / 2 - 15, h - bottom + 8), region, fill="black", font=font)
    for mi, m in enumerate(methods + ["StyleSpace: n/a (needs a StyleGAN)"]):
        colour = tuple(int(c * 255) for c in viz.PALETTE[mi]) if mi < len(methods) else (255, 255, 255)
        d.rectangle([left + mi * 150, h - 25, left + mi * 150 + 12, h - 13], fill=colour, outline="black")
        d.text((left + mi * 150 + 16, h - 27), m, fill="black", font=font)
    d.text((left, 8), f"{res.generator}: ROIR on {res.n_test} test faces (lower is better), mean +- std", fill="black", font=font)
    return img


def outline(image: torch.Tensor, masks: list[torch.Tensor], scale: int, colours=((0, 255, 0),)) -> Image.Image:
    """The image enlarged ``scale`` times with each (H, W) mask's boundary drawn in its colour."""
    arr = np.array(viz.to_pil(image, scale))
    for mask, colour in zip(masks, colours):
        m = torch.nn.functional.interpolate(mask[None, None].float(), scale_factor=scale, mode="nearest")[0, 0] > 0
        eroded = -torch.nn.functional.max_pool2d(-m[None, None].float(), 3, 1, 1)[0, 0] > 0
        arr[(m & ~eroded).numpy()] = colour
    return Image.fromarray(arr)


def region_grid(res: BenchResult, edits: dict, region: str, n_show: int = 6) -> Image.Image:
    faces: FaceSet = edits["_faces"]
    methods = [m for m in METHODS if m in edits[region]]
    scale = max(1, 128 // faces.images.shape[-1])
    rows = []
    for i in range(min(n_show, len(faces.seeds))):
        mask = faces.masks[region][i]
        rows.append([outline(faces.images[i], [mask], scale)] + [outline(edits[region][m][i], [mask], scale) for m in methods])
    by = {(r["method"], r["region"]): r for r in res.rows}
    cols = ["original"] + [f"{m}\nROIR {by[(m, region)]['mean']:.2f}" for m in methods]
    return viz.grid(rows, [f"seed {s}" for s in faces.seeds[:n_show]], cols,
                    title=f"{res.generator}, {region} (outlined): each method's edit, matched pixel change inside the region")


def masks_figure(faces: FaceSet, n_show: int = 8) -> Image.Image:
    """Images with the eyes, nose and mouth masks and ONet's five points, for a person to check."""
    scale = max(1, 128 // faces.images.shape[-1])
    rows = []
    for i in range(min(n_show, len(faces.seeds))):
        img = faces.images[i]
        colours = {"eyes": (0, 255, 0), "nose": (255, 0, 255), "mouth": (0, 200, 255)}
        tile = outline(img, [faces.masks[r][i] for r in REGIONS], scale, [colours[r] for r in REGIONS])
        d = ImageDraw.Draw(tile)
        for x, y in faces.check["points"][i].tolist():
            d.ellipse([x * scale - 3, y * scale - 3, x * scale + 3, y * scale + 3], outline=(255, 0, 0), width=2)
        rows.append([viz.to_pil(img, scale), tile])
    return viz.grid(rows, [f"seed {s}" for s in faces.seeds[:n_show]], ["image", "masks + ONet points"],
                    title="FaceMesh masks (green eyes, magenta nose, blue mouth) and ONet's points (red)")


def write_outputs(res: BenchResult, edits: dict, out: Path, model: PandA | None = None) -> list[Path]:
    out = viz.check_writable(out)
    written = [out / "roir.md", out / "roir.csv"]
    (out / "roir.md").write_text(markdown(res) + "\n")
    write_csv(res, out / "roir.csv")
    written.append(viz.save_png(bar_plot(res), out / "roir.png"))
    for region in REGIONS:
        written.append(viz.save_png(region_grid(res, edits, region), out / f"roir_{region}.png"))
    written.append(viz.save_png(masks_figure(edits["_faces"]), out / "masks.png"))
    if model is not None:
        g = load_generator(res.generator)
        written.append(viz.save_png(viz.parts_figure(model, g, edits["_faces"].seeds[:6]), out / "parts_named.png"))
    return written
