"""How local, and how faithful, is appearance transfer? (`panda transfer`)

Fits each face generator at its default layer and rank (5,000 samples, parts named by FaceMesh), then gives each of
24 held-out target faces the eyes, nose or mouth of each of 8 source faces (192 pairs per region) in four ways:

- ``parts (named)``: PandA with the parts named after the region (``panda transfer --part eyes``), global parts;
- ``region, parts inside``: PandA on each face's own FaceMesh region, spanned by the parts with at least 10% of
  their mass inside it, clipped to it (``panda transfer --region eyes``, :func:`panda.transfer.region_basis`); and
  with 30% (``--min-share 0.3``: fewer parts, more local, less faithful);
- ``region, one vector``: the same region as a single map, one coefficient vector for all of it (the ablation that
  the basis of parts replaced);
- ``feature blend``: every channel of the source's features copied into the target's region,
  ``Z_t + (Z_s - Z_t) r_t`` (no appearances, no parts: the naive baseline).

For each pair, against the target's FaceMesh region (dilated 2 px): ROIR (change outside over change inside, lower
is more local), and how much closer the region came to the source pixel by pixel (1 - |t' - s| / |t - s|, inside
the region; the faces are roughly aligned, so this is what "the source's eyes" can mean on pixels). Means over
pairs. One table of pictures per generator and region (``benchmarks/transfer/``).

    python benchmarks/transfer_quality.py       # about 5 minutes on 2 CPU cores; writes benchmarks/transfer_quality.md
"""

from __future__ import annotations

import time
from pathlib import Path

import panda  # noqa: F401  (before torch, for its OpenMP setting: see panda/__init__.py)
import torch

from common import device_label, first_faces, fit_arguments, write_report
from panda.checkpoints import load_generator
from panda.drawing import save_png
from panda.editing import synthesize_offset
from panda.features import capture
from panda.figures import transfer_figure
from panda.fitting import fit_factors
from panda.landmarks import FaceMeshMasker
from panda.metrics import roir
from panda.naming import name_model_parts
from panda.regions import rasterise_masks
from panda.transfer import (closer_to_source, parts_basis, region_basis, region_coefficients, transfer,
                            transfer_delta)

GENERATORS = ["dcgan-celeba", "dcgan-digiface"]
REGIONS = ["eyes", "nose", "mouth"]
N_TARGETS, N_SOURCES, FIRST_SEED = 24, 8, 30_000_000
HERE = Path(__file__).resolve().parent
NOTES = """## Notes

- Each face's own region spanned by the parts inside it (the default of `panda transfer --region`) brings the
  target's region closest to the source's on dcgan-celeba's nose and mouth (57% and 65%, against 35% and 29% for
  copying the source's features into the region), at about the same locality (ROIR within 0.03 of the blend).
- One coefficient vector for the whole region is the most local on three of six rows (the 30% basis below on the
  other three), but paints the region's mean appearance over all of it: 28-41% closer. Requiring 30% of a part's
  mass inside the region (`--min-share 0.3`) instead of 10% gives fewer parts: 0.04-0.18 lower ROIR on five rows
  (0.01 higher on dcgan-celeba's mouth), 2-14 points less faithful.
- The named parts (`--part eyes`) are global: they reach beyond each face's own region, so their ROIR against the
  FaceMesh region is the highest on every row (2.17 on dcgan-digiface's mouth, whose named part is large);
  on aligned faces they are still the simplest choice, and the only one without a landmark model.
- dcgan-digiface's mouth is the one row where the feature blend is the most faithful (50% against 42%); its eyes
  the one where no method gets far (15-28%) and one vector is the most local.
- "Closer" compares pixels at the same place in both faces; faces that differ in pose or size cap it below 100%
  for any method.
"""


def measure(g, model, tl, deltas, t_masks, s_images, t_images) -> tuple[float, float]:
    """(mean ROIR, mean closer) of offsets (N, M, C, H, W) for targets tl against the sources' images."""
    n, m = deltas.shape[:2]
    out = g.to_unit(synthesize_offset(g, model.layer_, tl[torch.arange(n).repeat_interleave(m)],
                                      deltas.flatten(0, 1))).cpu()
    images = out.view(n, m, *out.shape[1:])
    ratios = roir(t_images.repeat_interleave(m, 0), out, t_masks.float().repeat_interleave(m, 0))
    closer = closer_to_source(t_images, s_images, images, t_masks.float())
    return float(ratios[torch.isfinite(ratios)].mean()), closer


def main() -> None:
    args = fit_arguments(__doc__, HERE / "transfer_quality.md")
    t0 = time.time()
    rows, masker = [], FaceMeshMasker(dilate=2)
    pictures = HERE / "transfer"
    pictures.mkdir(exist_ok=True)
    for name in GENERATORS:
        g = load_generator(name, args.device)
        model = fit_factors(g, n_samples=args.n_fit, background_samples=0, progress=True)
        name_model_parts(model, g)
        t_seeds, t_masks = first_faces(g, FIRST_SEED, N_TARGETS, masker)
        s_seeds, s_masks = first_faces(g, FIRST_SEED + 10_000, N_SOURCES, masker)
        tl, sl = g.latents(t_seeds), g.latents(s_seeds)
        tz, sz = capture(g, tl, model.layer_), capture(g, sl, model.layer_)
        t_images, s_images = g.render(tl), g.render(sl)
        grid = model.layer_shape_[1:]
        for region in REGIONS:
            t_grid = rasterise_masks(t_masks[region], grid)
            s_grid = rasterise_masks(s_masks[region], grid)
            bases = {}
            if region in model.part_names_.values():
                b = parts_basis(model, model.parts_named(region))
                bases["parts (named)"] = (b, b)
            bases["region, parts inside"] = (region_basis(model, t_grid), region_basis(model, s_grid))
            bases["region, parts inside, min share 0.3"] = (region_basis(model, t_grid, 0.3),
                                                            region_basis(model, s_grid, 0.3))
            bases["region, one vector"] = (t_grid.flatten(1)[..., None], s_grid.flatten(1)[..., None])
            results = {}
            for method, (tb, sb) in bases.items():
                delta = transfer_delta(model, region_coefficients(model, tz, tb), region_coefficients(model, sz, sb),
                                       tb, sb)
                results[method] = measure(g, model, tl, delta, t_masks[region], s_images, t_images)
            blend = (sz.cpu()[None] - tz.cpu()[:, None]) * t_grid[:, None, None]  # (N, M, C, H, W)
            results["feature blend"] = measure(g, model, tl, blend, t_masks[region], s_images, t_images)
            for method, (ratio, closer) in results.items():
                rows.append([name, region, method, f"{ratio:.2f}", f"{100 * closer:.0f}%"])
                print(f"{name} {region} {method}: ROIR {ratio:.2f}, closer {100 * closer:.0f}%", flush=True)
            shown = transfer(model, g, tl[:4], sl[:6], region=t_grid[:4], source_region=s_grid[:6],
                             masks=t_masks[region][:4], source_masks=s_masks[region][:6], label=region)
            save_png(transfer_figure(model, shown, t_seeds[:4], s_seeds[:6]), pictures / f"{name}_{region}.png")
    header = ["generator", "region", "method", "ROIR (lower: more local)", "closer to the source inside the region"]
    write_report(args.out, "Appearance transfer: locality and faithfulness",
                 f"`python benchmarks/transfer_quality.py` on {device_label(args.device)}, {time.time() - t0:.0f} s. "
                 f"{N_TARGETS} targets x {N_SOURCES} sources (held-out faces FaceMesh finds) per region; fits of "
                 f"{args.n_fit} samples at each generator's default layer and rank. Means over the pairs.",
                 header, rows, NOTES)


if __name__ == "__main__":
    main()
