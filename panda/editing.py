"""Local edits: ``G[l:](Z_i + alpha * a_j p_k^T)``.

Strength ``alpha`` is in units of the layer's typical activation norm
(``PandA.feature_scale_``): alpha = 1 adds, where part k peaks, a vector as long as a typical
feature vector of that layer. This makes one alpha mean roughly the same on any generator
and layer (the authors' raw lambda of 30-200 only made sense for StyleGAN2's feature scale).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable, Sequence

import torch

from .errors import PandaError
from .features import modified
from .generators import GeneratorAdapter, Latents
from .maps import normalise, region_at, upsample
from .metrics import change_inside_fraction
from .model import PandA


#: The strengths a sweep shows by default (in units of the layer's typical activation norm).
DEFAULT_ALPHAS = (-2.0, -1.0, 0.0, 1.0, 2.0)


@dataclass(frozen=True)
class Edit:
    """Add appearance ``appearance`` to part ``part`` with strength ``alpha`` (``part`` a name, as :meth:`parse` reads
    one, until :meth:`named` resolves it)."""

    part: int | str
    appearance: int
    alpha: float

    @classmethod
    def parse(cls, text: str) -> "Edit":
        """'PART,APPEARANCE,ALPHA', e.g. '3,0,-1.5'; PART may be a part's name ('nose,8,1'), kept as given for
        :meth:`named` to resolve against a model."""
        try:
            k, j, a = (v.strip() for v in text.split(","))
            if not k:
                raise ValueError(text)
            return cls(int(k) if k.lstrip("-").isdigit() else k, int(j), float(a))
        except ValueError as exc:
            raise PandaError(f"cannot read edit '{text}': write it as PART,APPEARANCE,ALPHA, e.g. 3,0,-1.5.") from exc

    def named(self, model: PandA) -> "Edit":
        """This edit with a part's name (``panda name-parts``) replaced by its index; a name several parts share is
        refused, naming them (an edit adds an appearance to one part)."""
        if not isinstance(self.part, str):
            return self
        ks = model.parts_named(self.part)
        if len(ks) > 1:
            raise PandaError(f"'{self.part}' names parts {', '.join(map(str, ks))}: an edit adds an appearance to one "
                             f"part, so give one of them ({ks[0]},{self.appearance},{self.alpha:g}), or edit their "
                             f"union as a region (on the command line: --part {self.part}).")
        return replace(self, part=ks[0])


def part_profile(model: PandA, part: int, parts: torch.Tensor | None = None) -> torch.Tensor:
    """Part ``part`` as an (H, W) map min-max rescaled to [0, 1], as in the paper's edits.

    Parameters
    ----------
    parts : torch.Tensor, optional
        (S, R_S) parts to use instead of the model's global ones (e.g. a sample's refined parts).
    """
    model.check_part(part)
    _, h, w = model.layer_shape_
    p = (model.parts_ if parts is None else parts)[:, part].reshape(h, w)
    return normalise(p[None])[0]


#: The largest edit strength accepted, in units of the layer's typical activation norm: far beyond any useful edit
#: (a few units), and far below what overflows the generator into NaN pictures.
MAX_ALPHA = 1000.0


def check_alphas(alphas: Sequence[float]) -> list[float]:
    """A sweep's strengths: at least one, each as :func:`check_alpha` takes it."""
    if len(alphas) == 0:
        raise PandaError("no strengths given: give at least one alpha.")
    return [check_alpha(a) for a in alphas]


def check_alpha(alpha: float) -> float:
    """An edit strength must be a finite number within +-MAX_ALPHA (a NaN, inf or astronomically large one would
    ruin every pixel)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise PandaError(f"alpha must be a finite number, got {alpha!r}.")
    if abs(alpha) > MAX_ALPHA:
        raise PandaError(f"alpha={alpha:g} is beyond +-{MAX_ALPHA:g} (it is in units of the layer's typical activation "
                         f"norm; useful edits are a few units): give a smaller one.")
    return float(alpha)


def check_edits(model: PandA, edits: Sequence[Edit]) -> list[Edit]:
    if not edits:
        raise PandaError("no edit given: give at least one PART,APPEARANCE,ALPHA.")
    for e in edits:
        model.check_part(e.part)
        model.check_appearance(e.appearance)
        check_alpha(e.alpha)
    return list(edits)


def edit_delta(model: PandA, edits: Sequence[Edit], parts: torch.Tensor | None = None) -> torch.Tensor:
    """sum over edits of alpha * scale * a_j p_k^T.

    Parameters
    ----------
    parts : torch.Tensor, optional
        (S, R_S) to use instead of the global parts, or (N, S, R_S) per sample.

    Returns
    -------
    torch.Tensor
        (C, H, W), or (N, C, H, W) with per-sample parts.
    """
    edits = check_edits(model, edits)
    if parts is not None and parts.dim() == 3:
        return torch.stack([edit_delta(model, edits, p) for p in parts])
    delta = torch.zeros(model.layer_shape_)
    for e in edits:
        delta += region_delta(model, e.appearance, part_profile(model, e.part, parts), e.alpha)
    return delta


def region_delta(model: PandA, appearance: int, region: torch.Tensor, alpha: float) -> torch.Tensor:
    """alpha * scale * a_j r^T for any region map r (H, W) on the layer's grid, as (C, H, W)."""
    a = model.appearances_[:, model.check_appearance(appearance)]
    return (alpha * model.feature_scale_) * a[:, None, None] * region.to(a)[None]


@torch.no_grad()
def synthesize_offset(
    generator: GeneratorAdapter, layer: str, latents: Latents, deltas: torch.Tensor, batch_size: int = 64,
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """G[l:](T(Z_i) + delta_i): images (N, 3, H', W') for latents (N) and deltas (N or 1, C, H, W).

    ``transform`` T acts on a batch of feature maps (B, C, H, W) (e.g. a shift); default none.
    The hook adds the offset to the layer's output, so a zero offset reproduces G exactly.
    """
    n = len(latents)
    if deltas.shape[0] not in (1, n):
        raise ValueError(f"deltas has {deltas.shape[0]} rows for {n} latents")
    if not torch.isfinite(deltas).all():
        raise PandaError("the edit's offset contains NaN or inf: the region mask, the refined parts, the sign and the "
                         "strength must all be finite numbers.")
    out = []
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        d = (deltas if deltas.shape[0] == 1 else deltas[sl]).to(generator.device)
        with modified(generator, layer, lambda z: (z if transform is None else transform(z)) + d):
            out.append(generator.synthesize(latents[sl]))
    images = torch.cat(out)
    if not torch.isfinite(images).all():  # a blank picture with exit code 0 would pass for a result
        raise PandaError("the edited images contain NaN or inf: the edit is too strong for this generator; lower alpha.")
    return images


def edit(
    model: PandA, generator: GeneratorAdapter, latents: Latents | Sequence[int], edits: Sequence[Edit], batch_size: int = 64,
    parts: torch.Tensor | None = None,
) -> torch.Tensor:
    """Apply the edits (summed) to every latent (or seed).

    Parameters
    ----------
    latents : Latents or sequence of int
        N latents or seeds.
    edits : sequence of Edit
        Summed into one offset.
    batch_size : int
        Generator batch size.
    parts : torch.Tensor, optional
        Sample-specific parts (N, S, R_S), one per latent (:func:`panda.refinement.refine`), in place of the
        global ones.

    Returns
    -------
    torch.Tensor
        Images (N, 3, H', W') in the generator's range.
    """
    model.check_compatible(generator)
    latents = generator.latents(latents)
    if parts is not None and parts.shape[0] != len(latents):
        raise PandaError(f"{parts.shape[0]} sets of refined parts for {len(latents)} images: refine the images you edit.")
    deltas = edit_delta(model, edits)[None] if parts is None else edit_delta(model, edits, parts)
    return synthesize_offset(generator, model.layer_, latents, deltas, batch_size)


def sweep(
    model: PandA, generator: GeneratorAdapter, latents: Latents | Sequence[int], part: int,
    appearance: int | list[int] | tuple[int, ...], alphas: Sequence[float], batch_size: int = 64,
) -> torch.Tensor:
    """One edit at several strengths, for latents (or seeds): images (N, len(alphas), 3, H', W'). With a list of
    appearances, each one's sweep, all through the generator together: (len(appearance), N, len(alphas), 3, H', W')."""
    model.check_compatible(generator)
    latents = generator.latents(latents)
    several = isinstance(appearance, (list, tuple))
    appearances = list(appearance) if several else [appearance]
    alphas = check_alphas(alphas)
    units = [edit_delta(model, [Edit(part, j, 1.0)]) for j in appearances]  # checks the part and each appearance
    n, m = len(latents), len(alphas)
    rep = latents[torch.arange(n).repeat_interleave(m).repeat(len(units))]
    strengths = torch.tensor(list(alphas), dtype=units[0].dtype).repeat(n)[:, None, None, None]
    deltas = torch.cat([strengths * unit[None] for unit in units])
    images = synthesize_offset(generator, model.layer_, rep, deltas, batch_size)
    images = images.view(len(units), n, m, *images.shape[1:])
    return images if several else images[0]


def region_sweep(
    model: PandA, generator: GeneratorAdapter, latents: Latents | Sequence[int], region: torch.Tensor, appearance: int,
    alphas: Sequence[float], batch_size: int = 64,
) -> torch.Tensor:
    """Appearance j added to any region, not only a part, at several strengths: images (N, len(alphas), 3, H', W').

    region: (H, W), or one per sample (N, H, W), on the layer's grid with values in [0, 1]: a mask rasterised with
    :func:`panda.regions.rasterise_mask` (your own drawing, or a face region found in each image).
    """
    model.check_compatible(generator)
    latents = generator.latents(latents)
    n, m = len(latents), len(alphas)
    regions = region[None].expand(n, *region.shape) if region.dim() == 2 else region
    if tuple(regions.shape) != (n, *model.layer_shape_[1:]) or not torch.isfinite(regions).all():
        raise PandaError(f"the region must be finite, (H, W) or (N, H, W) = ({n}, {model.layer_shape_[1]}, "
                         f"{model.layer_shape_[2]}) on the layer's grid, got shape {tuple(region.shape)}.")
    alphas = check_alphas(alphas)
    units = torch.stack([region_delta(model, appearance, r, 1.0) for r in regions])  # (N, C, H, W)
    strengths = torch.tensor(list(alphas), dtype=units.dtype).repeat(n)[:, None, None, None]
    deltas = units.repeat_interleave(m, 0) * strengths  # sample-major, as the latents below
    images = synthesize_offset(generator, model.layer_, latents[torch.arange(n).repeat_interleave(m)], deltas,
                               batch_size)
    return images.view(n, m, *images.shape[1:])


@dataclass
class SweepResult:
    """One edit at several strengths, measured.

    Attributes
    ----------
    part, appearance : int
        The edit (``part`` None for an edit of another region: a mask, a face region).
    alphas : list of float
        The strengths, one column each.
    original : torch.Tensor
        (N, 3, H, W) unedited images in [0, 1].
    images : torch.Tensor
        (N, len(alphas), 3, H, W) edited images in [0, 1].
    region : torch.Tensor
        (H, W), or (N, H, W) for a region of each image, at image resolution in [0, 1]: the part's rescaled map
        or the mask.
    share : float
        Mean share of the squared pixel change at the largest |alpha| that falls where ``region`` > 0.5.
    label : str
        What was edited, for pictures ("part 4 (eyes)", "mask", "eyes").
    """

    part: int | None
    appearance: int
    alphas: list[float]
    original: torch.Tensor
    images: torch.Tensor
    region: torch.Tensor
    share: float
    label: str = ""

    @property
    def strongest(self) -> int:
        """The column of the largest |alpha|."""
        return max(range(len(self.alphas)), key=lambda i: abs(self.alphas[i]))


def measured_sweep(
    model: PandA, generator: GeneratorAdapter, latents: Latents | Sequence[int], part: int, appearance: int,
    alphas: Sequence[float], parts: torch.Tensor | None = None,
) -> SweepResult:
    """:func:`sweep` with the unedited images and how much of the change falls inside the part.

    parts: sample-specific parts (N, S, R_S), one per latent (:func:`panda.refinement.refine`): each image is edited
    and measured in its own map of the part (labelled "refined").

    Returns
    -------
    SweepResult
    """
    latents = generator.latents(latents)
    if parts is None:
        out = generator.to_unit(sweep(model, generator, latents, part, appearance, alphas)).cpu()
        region, label = upsample(part_profile(model, part)[None], out.shape[-1])[0], model.part_label(part)
    else:
        if parts.shape[0] != len(latents):
            raise PandaError(f"{parts.shape[0]} sets of refined parts for {len(latents)} images: refine the images "
                             f"you edit.")
        maps = torch.stack([part_profile(model, part, p) for p in parts])  # (N, H, W): each image's own part
        out = generator.to_unit(region_sweep(model, generator, latents, maps, appearance, alphas)).cpu()
        region, label = region_at(maps, out.shape[-1]), f"{model.part_label(part)}, refined"
    return _measured(part, appearance, alphas, generator.render(latents), out, region, label)


def measured_region_sweep(
    model: PandA, generator: GeneratorAdapter, latents: Latents | Sequence[int], region: torch.Tensor, appearance: int,
    alphas: Sequence[float], masks: torch.Tensor | None = None, label: str = "region",
    original: torch.Tensor | None = None,
) -> SweepResult:
    """:func:`region_sweep` with the unedited images and how much of the change falls inside the region.

    region: (H, W) or (N, H, W) on the layer's grid; masks: (N, H', W') at image resolution, what is measured and
    drawn (default: the region upsampled); original: the unedited images (N, 3, H', W') in [0, 1] when already
    rendered (a face region's, :class:`panda.regions.FaceRegions`), else rendered here.
    """
    latents = generator.latents(latents)
    out = generator.to_unit(region_sweep(model, generator, latents, region, appearance, alphas)).cpu()
    shown = region_at(region, out.shape[-1]) if masks is None else masks.float()
    original = generator.render(latents) if original is None else original
    return _measured(None, appearance, alphas, original, out, shown, label)


def _measured(part: int | None, appearance: int, alphas: Sequence[float], original: torch.Tensor, out: torch.Tensor,
              region: torch.Tensor, label: str) -> SweepResult:
    result = SweepResult(part, appearance, list(alphas), original, out, region, 0.0, label)
    big = out[:, result.strongest]
    result.share = float(change_inside_fraction(original, big, (region > 0.5).float()).mean())
    return result
