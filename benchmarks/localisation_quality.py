"""How well does concept localisation (A^T Z) find the eyes, nose and mouth in new faces? (`panda localize`)

Fits each face generator at its default layer and rank (5,000 samples). For each region, one direction of the
feature space is chosen on 64 calibration faces, as `panda edit --region` chooses an appearance: the one whose
energy is strong in each face's FaceMesh region and more there than elsewhere
(:func:`panda.localisation.rank_for_region`). On 200 held-out faces, that direction's energy at each position (the
map, upsampled to the image) is scored against the face's own FaceMesh region:

- AUROC: the chance that a pixel inside the region scores above one outside (0.5: no better than chance);
- pointing: the share of faces whose map peaks inside the region.

Directions from four families, each chosen the same way:

- ``PandA appearance``: a column of A, the map ``(a_j^T Z)^2`` (`panda localize --appearance J`);
- ``feature channel``: one of the layer's C channels, ``Z_c^2``;
- ``PCA direction``: a principal direction of the layer's feature vectors (over samples and positions);
- ``part map (fixed)``: the best of PandA's global parts, the same map for every face: how much of the
  localisation the faces' alignment alone gives (a map that does not look at the image);
- ``part map, refined per image``: that part refined for each face (`panda refine`'s sample-specific parts).

    python benchmarks/localisation_quality.py   # about 2 minutes on 2 CPU cores; writes benchmarks/localisation_quality.md
"""

from __future__ import annotations

import time
from pathlib import Path

import panda  # noqa: F401  (before torch, for its OpenMP setting: see panda/__init__.py)
import torch

from common import device_label, first_faces, fit_arguments, write_report
from panda.checkpoints import load_generator
from panda.drawing import grid, overlay, save_png, to_pil
from panda.features import capture
from panda.fitting import fit_factors
from panda.landmarks import REGIONS, FaceMeshMasker
from panda.localisation import rank_for_region
from panda.maps import normalise, upsample
from panda.refinement import refine_parts
from panda.regions import rasterise_masks

GENERATORS = ["dcgan-celeba", "dcgan-digiface"]
N_CALIB, N_TEST = 64, 200
CALIB_SEED, TEST_SEED = 20_000_000, 40_000_000
HERE = Path(__file__).resolve().parent
NOTES = """## Notes

- One direction's map, whichever family it comes from, finds the region at an AUROC of 0.66-0.85: well above
  chance, far below a fixed map, the region's part (0.92-0.96). The faces these DCGANs draw are aligned, so where a
  region is depends little on the image. What a direction's map adds is which images have the appearance and how
  much of it, not where it is. `panda localize` shows such maps; to find a region in aligned faces, its part is
  the better map.
- PandA's appearance is the best of the three families on both generators' mouths (0.778 and 0.798 against at
  most 0.756 and 0.784), and the worst on dcgan-celeba's eyes and nose and dcgan-digiface's eyes. No family wins
  everywhere.
- Refining the part for each face lowers its AUROC on every row (0.705-0.918 against 0.919-0.957). On aligned
  faces the refined parts drift towards whatever reconstructs each image best. The README's refinement notes find
  the same for edits. Requiring a translation to lower the image's error by more than 0.005
  (`refinement.MIN_TRANSLATION_GAIN`) raised every refined row, by 0.006-0.033; keeping each refined part within
  its start's support (radius 0, which makes edits more local) then lowered every row, by 0.004-0.045, as its maps
  are zero outside that support (before both: 0.733-0.921). Pointing rose on dcgan-celeba's nose and mouth.
- The pointing score is harsh on the eyes. FaceMesh's eye hulls, undilated, are thin at 64 x 64, and a map on
  the 8 x 8 grid peaks at the centre of a cell. dcgan-celeba's mouth part sits at one corner of the mouth
  (pictures), so it points inside the mouth for only 19% of faces, although its AUROC is 0.93.
"""


def auroc(scores: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Per image, P(score inside > score outside), ties counted half: scores (N, P), masks (N, P) bool -> (N,)."""
    out = []
    for s, m in zip(scores.double(), masks):
        pos, neg = int(m.sum()), int((~m).sum())
        if pos == 0 or neg == 0:
            out.append(float("nan"))
            continue
        order = torch.argsort(s)
        ranks = torch.empty_like(s)
        ranks[order] = torch.arange(1, len(s) + 1, dtype=s.dtype)
        # average ranks over ties (bilinear maps have flat stretches)
        uniq, inverse = torch.unique(s, return_inverse=True)
        mean_rank = torch.zeros(len(uniq), dtype=s.dtype).index_add_(0, inverse, ranks)
        mean_rank /= torch.bincount(inverse, minlength=len(uniq)).to(s.dtype)
        r = mean_rank[inverse]
        out.append(float((r[m].sum() - pos * (pos + 1) / 2) / (pos * neg)))
    return torch.tensor(out)


def main() -> None:
    args = fit_arguments(__doc__, HERE / "localisation_quality.md")
    t0 = time.time()
    masker = FaceMeshMasker(dilate=0)
    rows, pictures = [], HERE / "localisation"
    pictures.mkdir(exist_ok=True)
    for name in GENERATORS:
        g = load_generator(name, args.device)
        model = fit_factors(g, n_samples=args.n_fit, background_samples=0, progress=True)
        calib_seeds, calib_masks = first_faces(g, CALIB_SEED, N_CALIB, masker)
        test_seeds, test_masks = first_faces(g, TEST_SEED, N_TEST, masker)
        zc = capture(g, g.latents(calib_seeds), model.layer_).cpu()
        zt = capture(g, g.latents(test_seeds), model.layer_).cpu()
        grid_hw = model.layer_shape_[1:]
        refined = refine_parts(model, zt).parts.cpu().float()  # (N, S, R_S): each test face's own parts
        c = zc.shape[1]
        feats = zc.permute(0, 2, 3, 1).reshape(-1, c).double()
        pca = torch.linalg.eigh(torch.cov(feats.T))[1].flip(1).float()  # (C, C), columns by variance, largest first
        bases = {"PandA appearance": model.appearances_.cpu().float(), "feature channel": torch.eye(c),
                 "PCA direction": pca}
        size = g.image_size
        test_images = g.render(g.latents(test_seeds[:6]))
        for region in REGIONS:
            calib_grid = rasterise_masks(calib_masks[region], grid_hw)
            maps, chosen = {}, {}
            for method, basis in bases.items():
                energy = torch.einsum("cj,nchw->njhw", basis, zc) ** 2
                j = rank_for_region(energy, calib_grid, 1)[0]
                chosen[method] = j
                maps[method] = torch.einsum("c,nchw->nhw", basis[:, j], zt) ** 2
            parts = model.part_maps().cpu()[:, None].expand(-1, len(calib_seeds), -1, -1).transpose(0, 1)
            k = rank_for_region(parts.double(), calib_grid, 1)[0]  # the part most particular to the region
            chosen["part map (fixed)"] = k
            maps["part map (fixed)"] = model.part_maps().cpu()[k].expand(len(test_seeds), -1, -1)
            chosen["part map, refined per image"] = k
            maps["part map, refined per image"] = refined[:, :, k].reshape(len(test_seeds), *grid_hw)
            truth = test_masks[region].flatten(1)
            shown = []
            for method, m in maps.items():
                up = upsample(m.float(), size).flatten(1)
                score = float(auroc(up, truth).nanmean())
                peak = up.argmax(1)
                pointing = float(truth[torch.arange(len(truth)), peak].float().mean())
                what = {"PandA appearance": "appearance", "feature channel": "channel", "PCA direction": "component",
                        "part map (fixed)": "part", "part map, refined per image": "part"}[method]
                rows.append([name, region, method, f"{what} {chosen[method]}", f"{score:.3f}", f"{100 * pointing:.0f}%"])
                print(f"{name} {region} {method} ({what} {chosen[method]}): AUROC {score:.3f}, pointing "
                      f"{100 * pointing:.0f}%", flush=True)
                heat = upsample(normalise(m[:6].float()), size)
                shown.append([to_pil(overlay(img, h), 2) for img, h in zip(test_images, heat)])
            outline = [[to_pil(overlay(img, mk.float()), 2) for img, mk in zip(test_images, test_masks[region][:6])]]
            save_png(grid(outline + shown, [f"FaceMesh {region}"] + list(maps), [f"seed {s}" for s in test_seeds[:6]],
                          title=f"{name}: where each method's direction for the {region} is, on held-out faces"),
                     pictures / f"{name}_{region}.png")
    header = ["generator", "region", "method", "direction", "AUROC", "pointing"]
    write_report(args.out, "Concept localisation: does A^T Z find the region in new faces?",
                 f"`python benchmarks/localisation_quality.py` on {device_label(args.device)}, {time.time() - t0:.0f} s. "
                 f"Directions chosen on {N_CALIB} calibration faces, scored on {N_TEST} held-out faces against each "
                 f"face's FaceMesh region (not dilated); fits of {args.n_fit} samples at each generator's default "
                 f"layer and rank.", header, rows, NOTES)


if __name__ == "__main__":
    main()
