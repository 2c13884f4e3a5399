"""Appearance transfer: give image t what image s has in a region (its mouth, its eyes, ...), nothing else.

PandA models a sample's content in a region with basis R (S x K: K parts' maps, or one region map r) as
``A Lambda R^T`` with ``Lambda = A^T Z R (R^T R)^+`` (R_C x K), the least-squares coefficients of the region's
maps (a part alone: ``A^T Z p_k / |p_k|^2``, the appearance vector the part holds, whatever the map's scale).
The transfer swaps the target's coefficients for the source's:

    Z_t' = Z_t + alpha * A_J (Lambda_s - Lambda_t)_J R_t^T

over the appearances J (default all R_C), so the change lies in the region's maps and the chosen appearances only.
alpha = 1 gives the source's coefficients, 0 the target, values between interpolate. Within each basis map the
target's own detail is kept: what moves is what the map holds. A region that is not a part (a mask, a face region)
is spanned by the parts inside it, clipped to it (:func:`region_basis`), so its layout carries over too. A
per-image region (a face region FaceMesh finds in each image) uses each image's own map: the source's for its
coefficients, the target's for where they go. With a mixing W (``PandA(mixing=True)``) the transfer, like the
edits, uses the orthonormal appearances A.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from .editing import check_alpha, part_profile, synthesize_offset
from .errors import PandaError
from .features import capture
from .generators import GeneratorAdapter, Latents
from .maps import check_region, region_at
from .metrics import change_inside_fraction
from .model import PandA


def parts_basis(model: PandA, parts: Sequence[int], maps: torch.Tensor | None = None) -> torch.Tensor:
    """The maps of ``parts`` as the columns of a basis, (S, K), on the CPU; with sample-specific parts ``maps``
    (N, S, R_S) (:func:`panda.refinement.refine`), each sample's, (N, S, K)."""
    parts = list(parts)
    if not parts:
        raise PandaError("say which parts to transfer: at least one part index (`panda info FILE --parts` lists them).")
    if len(set(parts)) != len(parts):
        raise PandaError(f"parts {parts} name a part twice: give each once.")
    columns = [model.check_part(k) for k in parts]
    if maps is None:
        return model.parts_[:, columns].detach().cpu().float()
    if maps.dim() != 3 or tuple(maps.shape[1:]) != tuple(model.parts_.shape) or not torch.isfinite(maps).all():
        raise PandaError(f"sample-specific parts must be finite, (N, S, R_S) = (N, {model.parts_.shape[0]}, "
                         f"{model.parts_.shape[1]}) (panda.refinement.refine), got shape {tuple(maps.shape)}.")
    return maps[:, :, columns].detach().cpu().float()


#: A part joins a region's basis when at least this share of its mass lies inside the region. It is the dial between
#: faithful and local: more parts carry more of the source's layout but move the generator's output around the region
#: more. On both face generators' eyes, nose and mouth (``benchmarks/transfer_quality.md``) 0.1 gives most of the
#: faithfulness of every touching part (0) at about the locality of 0.3.
MIN_PART_SHARE = 0.1


def region_basis(model: PandA, region: torch.Tensor, min_share: float = MIN_PART_SHARE) -> torch.Tensor:
    """A region map (H, W), or one per image (N, H, W), on the layer's grid -> its basis (S, R_S + 1) or
    (N, S, R_S + 1): the parts clipped to the region (``r * p_k``) that have at least ``min_share`` of their mass
    inside it, other columns zero; the last column is the region map itself, used only where no part qualifies.

    One coefficient vector for a whole region (the region map alone) would paint the region's mean appearance over
    all of it (a smile becomes a pale smear); the parts inside it keep its layout: the source's lips go where the
    target's lips are."""
    _, h, w = model.layer_shape_
    if isinstance(min_share, bool) or not isinstance(min_share, (int, float)) or not 0 <= min_share <= 1:
        raise PandaError(f"min_share={min_share!r}: give the share of a part's mass inside the region, in [0, 1].")
    check_region(region, (h, w), per_image=True)
    r = region.detach().cpu().float().flatten(-2)[..., None]  # (S, 1) or (N, S, 1)
    p = model.parts_.detach().cpu().float()  # (S, R_S)
    clipped = r * p
    share = clipped.sum(-2) / p.sum(0).clamp_min(1e-30)  # (R_S,) or (N, R_S)
    keep = (share >= min_share).float()
    fallback = (keep.sum(-1, keepdim=True) == 0).float()  # the region alone where no part qualifies
    return torch.cat([clipped * keep.unsqueeze(-2), r * fallback.unsqueeze(-2)], -1)


def region_coefficients(model: PandA, maps: torch.Tensor, basis: torch.Tensor,
                        appearances: Sequence[int] | None = None) -> torch.Tensor:
    """Lambda = A_J^T Z R (R^T R)^+: what each image holds in the region, per appearance and basis map.

    Parameters
    ----------
    maps : torch.Tensor
        (N, C, H, W) feature maps.
    basis : torch.Tensor
        (S, K), or one per image (N, S, K) (:func:`parts_basis`, :func:`region_basis`). An empty column (a face
        region not found in an image) gets coefficients 0.
    appearances : sequence of int, optional
        J; default all R_C.

    Returns
    -------
    torch.Tensor
        (N, |J|, K) float64 on the CPU.
    """
    y = model.localize(maps).detach().cpu().double().flatten(2)  # A^T Z: (N, R_C, S)
    if appearances is not None:
        y = y[:, [model.check_appearance(j) for j in appearances]]
    r = basis.double()
    # pinv: an empty column gets coefficient 0; rtol: clipped parts can be nearly collinear, and a least-squares
    # split between them that rounding decides would be written back with opposite signs
    gram_pinv = torch.linalg.pinv(r.transpose(-1, -2) @ r, rtol=1e-6, hermitian=True)  # (K, K) or (N, K, K)
    return y @ r @ gram_pinv


def transfer_delta(model: PandA, target_coefficients: torch.Tensor, source_coefficients: torch.Tensor,
                   target_basis: torch.Tensor, source_basis: torch.Tensor | None = None, alpha: float = 1.0,
                   appearances: Sequence[int] | None = None) -> torch.Tensor:
    """alpha * A_J (Lambda_s - Lambda_t) R_t^T for every (target, source) pair.

    target_coefficients (N, |J|, K) and source_coefficients (M, |J|, K) from :func:`region_coefficients`;
    target_basis (S, K) or (N, S, K); source_basis (S, K) or (M, S, K), default the target's. A basis map empty in
    either image of a pair (a part outside one face's region) moves nothing: the target keeps what it has there.
    Returns (N, M, C, H, W) float32 offsets for the layer.
    """
    check_alpha(alpha)
    a = _appearances(model, appearances)
    diff = source_coefficients[None] - target_coefficients[:, None]  # (N, M, |J|, K)
    if source_basis is None:
        source_basis = target_basis
    present_t = target_basis.abs().sum(-2) > 0  # (K,) or (N, K)
    present_s = source_basis.abs().sum(-2) > 0  # (K,) or (M, K)
    both = (present_t if present_t.dim() == 1 else present_t[:, None]) & present_s  # broadcasts to (N, M, K)
    diff = diff * both.to(diff).unsqueeze(-2)
    r = target_basis.float()
    r = r[None, None] if r.dim() == 2 else r[:, None]  # (1 or N, 1, S, K)
    # the coefficients are solved in float64; the offsets, the size of N x M feature maps, need no more than float32
    delta = alpha * (a @ diff.float() @ r.transpose(-1, -2))  # (N, M, C, S)
    return delta.unflatten(-1, tuple(model.layer_shape_[1:]))


@dataclass
class Transfer:
    """Every target with each source's region, measured.

    Attributes
    ----------
    targets, sources : torch.Tensor
        (N, 3, H', W') and (M, 3, H', W') unedited images in [0, 1].
    images : torch.Tensor
        (N, M, 3, H', W') in [0, 1]: target i with source j's region.
    shown : torch.Tensor
        (N, H', W') in [0, 1]: each target's region at image resolution, what is drawn and measured (> 0.5).
    source_shown : torch.Tensor
        (M, H', W') in [0, 1]: each source's region, what its coefficients were read from.
    share : float
        Mean share of the squared pixel change that falls inside the target's region.
    closer : float
        Mean over the pairs of how much closer, pixel by pixel inside the target's region, the image came to the
        source: 1 - |t' - s| / |t - s| (1: the source's pixels, 0: no closer, negative: further).
    alpha : float
        The transfer's strength.
    appearances : list of int
        The appearances transferred (all R_C unless chosen).
    label : str
        What was transferred, for pictures ("part 0 (mouth), part 24 (mouth)", "mask", "mouth").
    """

    targets: torch.Tensor
    sources: torch.Tensor
    images: torch.Tensor
    shown: torch.Tensor
    source_shown: torch.Tensor
    share: float
    closer: float
    alpha: float
    appearances: list[int]
    label: str = ""


def _coefficients(model: PandA, generator: GeneratorAdapter, targets: Latents, sources: Latents,
                  parts: Sequence[int] | None, region: torch.Tensor | None, source_region: torch.Tensor | None,
                  appearances: Sequence[int] | None, min_share: float, target_parts: torch.Tensor | None,
                  source_parts: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(target coefficients, source coefficients, target basis, source basis) of a transfer, every argument checked
    (as :func:`transfer` takes them)."""
    n, m = len(targets), len(sources)
    if (parts is None) == (region is None):
        raise PandaError("say which region to transfer: either parts or a region map (not both).")
    if parts is None and (target_parts is not None or source_parts is not None):
        raise PandaError("sample-specific parts go with parts (indices), not with a region map.")
    if parts is not None:
        target_basis, source_basis = parts_basis(model, parts, target_parts), parts_basis(model, parts, source_parts)
        what = "sets of {who} parts for {count} {who}s: refine the images you transfer."
    else:
        target_basis = region_basis(model, region, min_share)
        if source_region is None and region.dim() == 3:
            raise PandaError("a region per target needs each source's own region too (source_region, (M, H, W)).")
        source_basis = target_basis if source_region is None else region_basis(model, source_region, min_share)
        what = "{who} regions for {count} {who}s: give one per image."
    for basis, count, who in ((target_basis, n, "target"), (source_basis, m, "source")):
        if basis.dim() == 3 and basis.shape[0] != count:
            raise PandaError(f"{basis.shape[0]} " + what.format(who=who, count=count))
    chosen = None if appearances is None else [model.check_appearance(j) for j in appearances]
    coef_t = region_coefficients(model, capture(generator, targets, model.layer_), target_basis, chosen)
    coef_s = region_coefficients(model, capture(generator, sources, model.layer_), source_basis, chosen)
    return coef_t, coef_s, target_basis, source_basis


def transfer_offsets(model: PandA, generator: GeneratorAdapter, targets: Latents, sources: Latents,
                     parts: Sequence[int] | None = None, region: torch.Tensor | None = None,
                     source_region: torch.Tensor | None = None, alpha: float = 1.0,
                     appearances: Sequence[int] | None = None, min_share: float = MIN_PART_SHARE,
                     target_parts: torch.Tensor | None = None, source_parts: torch.Tensor | None = None) -> torch.Tensor:
    """The layer's offsets that give each target each source's content in a region (arguments as :func:`transfer`):
    (N, M, C, H, W), for :func:`panda.editing.synthesize_offset`."""
    check_alpha(alpha)
    coef_t, coef_s, target_basis, source_basis = _coefficients(
        model, generator, targets, sources, parts, region, source_region, appearances, min_share, target_parts,
        source_parts)
    return transfer_delta(model, coef_t, coef_s, target_basis, source_basis, alpha, appearances)


def transfer(model: PandA, generator: GeneratorAdapter, targets: Latents | Sequence[int],
             sources: Latents | Sequence[int], parts: Sequence[int] | None = None, region: torch.Tensor | None = None,
             source_region: torch.Tensor | None = None, alpha: float = 1.0, appearances: Sequence[int] | None = None,
             masks: torch.Tensor | None = None, source_masks: torch.Tensor | None = None,
             min_share: float = MIN_PART_SHARE, target_parts: torch.Tensor | None = None,
             source_parts: torch.Tensor | None = None, batch_size: int = 64, label: str | None = None,
             originals: tuple[torch.Tensor, torch.Tensor] | None = None) -> Transfer:
    """Give each target each source's content in a region: N x M images through the generator.

    Parameters
    ----------
    targets, sources : Latents or sequence of int
        N and M latents (or seeds).
    parts : sequence of int, optional
        The region as parts (their maps as the basis, one coefficient vector each); or
    region : torch.Tensor, optional
        a map on the layer's grid, (H, W), or each target's own (N, H, W) (e.g. :func:`panda.regions.face_regions`),
        then with ``source_region`` each source's own (M, H, W) (default: ``region`` when (H, W)).
    alpha : float
        1: the source's coefficients; 0: the target unchanged.
    appearances : sequence of int, optional
        Transfer only these appearances; default all.
    min_share : float
        With a region: the share of a part's mass that must lie inside it for the part to span it
        (:func:`region_basis`); lower is more faithful, higher more local.
    masks, source_masks : torch.Tensor, optional
        (N, H', W') each target's region at image resolution to draw and measure, (M, H', W') each source's to draw;
        default the regions upsampled.
    target_parts, source_parts : torch.Tensor, optional
        With ``parts``: sample-specific parts (N, S, R_S) and (M, S, R_S) in place of the global ones
        (:func:`panda.refinement.refine`), for images whose content is not where the global parts are.
    originals : (torch.Tensor, torch.Tensor), optional
        The targets' and the sources' images, (N, 3, H', W') and (M, 3, H', W') in [0, 1], when already rendered
        (their face regions', :class:`panda.regions.FaceRegions`); else rendered here.

    Returns
    -------
    Transfer
    """
    model.check_compatible(generator)
    targets, sources = generator.latents(targets), generator.latents(sources)
    n, m = len(targets), len(sources)
    check_alpha(alpha)
    coef_t, coef_s, target_basis, source_basis = _coefficients(
        model, generator, targets, sources, parts, region, source_region, appearances, min_share, target_parts,
        source_parts)
    if parts is not None:
        profile, source_profile = _parts_profile(model, parts, target_parts), _parts_profile(model, parts, source_parts)
        label = label or ", ".join(model.part_label(k) for k in parts)
    else:
        profile = region.detach().cpu().float()
        source_profile = profile if source_region is None else source_region.detach().cpu().float()
        label = label or "region"
    rows = []
    for i in range(n):  # one target's M offsets at a time: N x M feature maps at once can be gigabytes
        basis = target_basis if target_basis.dim() == 2 else target_basis[i:i + 1]
        delta = transfer_delta(model, coef_t[i:i + 1], coef_s, basis, source_basis, alpha, appearances)[0]
        rows.append(generator.to_unit(synthesize_offset(generator, model.layer_, targets[torch.full((m,), i)], delta,
                                                        batch_size)).cpu())
    images = torch.stack(rows)  # (N, M, 3, H', W')
    original_t, original_s = (generator.render(targets), generator.render(sources)) if originals is None else originals
    size = images.shape[-1]
    shown = _shown(profile, masks, n, size)
    inside = (shown > 0.5).float()
    share = change_inside_fraction(original_t.repeat_interleave(m, 0), images.flatten(0, 1),
                                   inside.repeat_interleave(m, 0))
    closer = closer_to_source(original_t, original_s, images, inside)
    chosen = list(range(model.n_appearances)) if appearances is None else list(appearances)
    return Transfer(original_t, original_s, images, shown, _shown(source_profile, source_masks, m, size),
                    float(share.mean()), closer, alpha, chosen, label)


def _parts_profile(model: PandA, parts: Sequence[int], maps: torch.Tensor | None) -> torch.Tensor:
    """Where any of ``parts`` is, each rescaled to [0, 1]: (H, W), or (N, H, W) for sample-specific parts."""
    def one(p: torch.Tensor | None) -> torch.Tensor:
        return torch.stack([part_profile(model, k, p).cpu() for k in parts]).amax(0)

    return one(None) if maps is None else torch.stack([one(p) for p in maps])


def _shown(profile: torch.Tensor, masks: torch.Tensor | None, n: int, size: int) -> torch.Tensor:
    """(n, size, size) in [0, 1]: the masks given, else the region map (H, W) or (n, H, W) upsampled."""
    return masks.float().cpu() if masks is not None else region_at(profile, size, n)


def _appearances(model: PandA, appearances: Sequence[int] | None) -> torch.Tensor:
    """A_J (C, |J|) float32 on the CPU."""
    a = model.appearances_.detach().cpu().float()
    return a if appearances is None else a[:, [model.check_appearance(j) for j in appearances]]


def closer_to_source(targets: torch.Tensor, sources: torch.Tensor, images: torch.Tensor,
                     inside: torch.Tensor) -> float:
    """How much closer, pixel by pixel inside each target's region, the transfers came to their sources: the mean
    over (target i, source j) of 1 - |(x'_ij - s_j) m_i| / |(t_i - s_j) m_i|; pairs with nothing to close (the same
    image, an empty region) are left out.

    targets (N, 3, H, W), sources (M, 3, H, W), images (N, M, 3, H, W), inside (N, H, W) in {0, 1}."""
    m = inside[:, None, None]  # (N, 1, 1, H', W')
    before = ((targets[:, None] - sources[None]) * m).flatten(2).norm(dim=2)  # (N, M)
    after = ((images - sources[None]) * m).flatten(2).norm(dim=2)
    ok = before > 1e-6
    if not bool(ok.any()):
        return float("nan")
    return float((1 - after[ok] / before[ok]).mean())
