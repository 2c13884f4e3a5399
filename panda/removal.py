"""Context-aware object removal: add the "background" appearance to a region.

``G[l:](Z_i + alpha * s * a_b r^T)`` with a_b the background appearance (chosen when fitting, see
``PandA._set_background``; the user can name another), s its sign on the border and r a region on
the layer's grid: a learnt part (rescaled to [0, 1]) or a user mask rasterised to the grid.

Whether it removes is checked on pixels: the region's mean colour should move towards the mean
colour of a ring of background around it (:func:`towards_background`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from .editing import check_alpha, part_profile, region_delta, synthesize_offset
from .errors import PandaError
from .generators import GeneratorAdapter, Latents
from .maps import dilate, region_at, upsample
from .model import PandA
from .progress import progress_bar


def fill_for(model: PandA, background: int | None = None, sign: float | None = None) -> tuple[int, float]:
    """The (appearance, sign) a removal adds: ``background`` or the model's global one; ``sign`` or, when
    None, the model's sign for its global background and +1 for any other appearance."""
    if model.background_ is None and background is None:
        raise PandaError("this factor file has no background appearance: name one, or search one for the region (auto).")
    b = model.background_ if background is None else model.check_appearance(background)
    if sign is None:
        sign = model.background_sign_ if b == model.background_ else 1.0
    return b, sign


def remove(model: PandA, generator: GeneratorAdapter, latents: Latents | Sequence[int], region: torch.Tensor,
           alpha: float = 1.0, background: int | None = None, sign: float | None = None,
           batch_size: int = 64) -> torch.Tensor:
    """Fill a region with background.

    Parameters
    ----------
    latents : Latents or sequence of int
        N latents or seeds.
    region : torch.Tensor
        (H, W) on the layer's grid, or one region per sample (N, H, W).
    alpha : float
        Strength in units of the layer's typical activation norm (as for edits); > 0 removes.
    background : int, optional
        The appearance to use; default the one found when fitting (``model.background_``).
    sign : float, optional
        The direction of that appearance that removes; default the model's for its background, else +1.

    Returns
    -------
    torch.Tensor
        Images (N, 3, H', W') in the generator's range.
    """
    model.check_compatible(generator)
    check_alpha(alpha)
    b, sign = fill_for(model, background, sign)
    regions = region[None] if region.dim() == 2 else region
    deltas = torch.stack([region_delta(model, b, r, sign * alpha) for r in regions])
    return synthesize_offset(generator, model.layer_, generator.latents(latents), deltas, batch_size)


def parse_background(model: PandA, text: str) -> tuple[int | str, float | None]:
    """Read a ``--background`` value: "auto", "global", or an appearance index with an optional sign
    ("3" or "+3" adds appearance 3, "-3" subtracts it). Returns (choice, sign); the sign is None where
    the value gives none ("auto", "global", or an unsigned index: remove() then uses the model's sign
    for its global background and +1 for any other)."""
    text = str(text).strip()
    if text in ("auto", "global"):
        if text == "global":
            fill_for(model)  # refuses a file without one
        return text, None
    sign = -1.0 if text.startswith("-") else (1.0 if text.startswith("+") else None)
    try:
        index = int(text.lstrip("+-"))
    except ValueError as exc:
        raise PandaError(f"a background must be auto, global or an appearance index such as 3 or -3, got '{text}'.") from exc
    return model.check_appearance(index), sign


#: The global background search (:func:`find_background`, every part on ``RACE_MIN_SAMPLES`` samples or more)
#: first measures every candidate fill on ``RACE_SCREEN`` samples and goes on with the best ``RACE_KEEP`` alone
#: (racing): it then costs less than half, and on the bundled generators the exhaustive pick was always among
#: those kept (``benchmarks/background_search.md``). A search for one region on a few images is cheap and noisier
#: (one image can swing it), so it tries every fill on every image.
RACE_SCREEN = 2
RACE_KEEP = 8
RACE_MIN_SAMPLES = 6


@dataclass
class BackgroundSearch:
    """Result of :func:`find_background` and :func:`choose_fill`.

    Attributes
    ----------
    appearance : int
    sign : float
        The pick.
    gain : float
        Its mean share by which removal brings a region's mean colour closer to the band around it
        (1 = all the way, 0 = no change, < 0 = further away).
    table : dict
        {(appearance, sign): gain} for every candidate measured on all the samples.
    screened : dict
        {(appearance, sign): gain on the first ``RACE_SCREEN`` samples} for the candidates dropped after them
        (empty where the search did not race).
    """

    appearance: int
    sign: float
    gain: float
    table: dict
    screened: dict = field(default_factory=dict)

    def ranked(self, top: int | None = None) -> list[tuple[int, float, float]]:
        """The candidates measured on all samples as (appearance, sign, gain), best first; the first ``top``."""
        order = sorted(((j, s, g) for (j, s), g in self.table.items()), key=lambda c: -c[2])
        return order[:top]


def region_masks(model: PandA, size: int) -> list[torch.Tensor]:
    """Each part's region at image resolution: its rescaled map, upsampled, above 0.5. (size, size) bool."""
    return [upsample(part_profile(model, k)[None], size)[0] > 0.5 for k in range(model.n_parts)]


Fill = tuple[int, float]
Distances = tuple[torch.Tensor, torch.Tensor]


def _gain(before: torch.Tensor, after: torch.Tensor) -> float:
    """Share of the way the regions' colour moved towards their surroundings (1 all, 0 none, < 0 away),
    averaged over region groups: before, after (G, N) distances."""
    return float((1.0 - after.sum(1) / before.sum(1).clamp_min(1e-12)).mean())


def fill_distances(model: PandA, generator: GeneratorAdapter, latents: Latents, original: torch.Tensor,
                   regions: torch.Tensor, masks: torch.Tensor, fills: Sequence[Fill], alpha: float = 1.0,
                   bar=None) -> dict[Fill, Distances]:
    """Colour distances (:func:`towards_background`) before and after filling regions with each fill.

    Parameters
    ----------
    latents : Latents
        N latents; ``original`` their images (N, 3, H', W') in [0, 1].
    regions : torch.Tensor
        (G, N, H, W) on the layer's grid: G groups of one region per sample.
    masks : torch.Tensor
        (G, N, H', W') bool at image resolution: what is measured.
    fills : sequence of (appearance, sign)
    bar : tqdm, optional
        Advanced by one for each image generated.

    Returns
    -------
    dict
        {fill: (before, after)}, each (G, N). Every fill, group and sample goes through the generator in
        batches of the generator's size, so that a search on a few images still runs full batches.
    """
    g, n = regions.shape[:2]
    jobs = [(f, k, i) for f in range(len(fills)) for k in range(g) for i in range(n)]
    before, after = torch.empty(len(fills), g, n), torch.empty(len(fills), g, n)
    for start in range(0, len(jobs), generator.default_batch):
        f, k, i = (torch.tensor(c) for c in zip(*jobs[start:start + generator.default_batch]))
        deltas = torch.stack([region_delta(model, fills[a][0], regions[b, c], fills[a][1] * alpha)
                              for a, b, c in zip(f.tolist(), k.tolist(), i.tolist())])
        edited = generator.to_unit(synthesize_offset(generator, model.layer_, latents[i], deltas, len(deltas))).cpu()
        before[f, k, i], after[f, k, i] = towards_background(original[i], edited, masks[k, i])
        if bar is not None:
            bar.update(len(deltas))
    return {fill: (before[a], after[a]) for a, fill in enumerate(fills)}


def _search(model: PandA, generator: GeneratorAdapter, latents: Latents, original: torch.Tensor, regions: torch.Tensor,
            masks: torch.Tensor, alpha: float, candidates: int, race: bool,
            progress: bool | None = False) -> BackgroundSearch:
    """Try the ``candidates`` strongest appearances with both signs on the regions (G, N, H, W) and masks
    (G, N, H', W') of :func:`fill_distances`, racing (``RACE_SCREEN``, ``RACE_KEEP``) where ``race`` and
    N >= ``RACE_MIN_SAMPLES``."""
    if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
        raise PandaError(f"candidates={candidates!r}: try at least 1 appearance as a fill.")
    order = torch.argsort(model.appearance_energy_, descending=True)[:candidates]
    trials = [(j, s) for j in order.tolist() for s in (1.0, -1.0)]
    g, n = regions.shape[:2]
    screen = RACE_SCREEN if race and n >= RACE_MIN_SAMPLES and len(trials) > RACE_KEEP else n
    images = g * (len(trials) * screen + RACE_KEEP * (n - screen))
    with progress_bar(total=images, desc="background search", unit="img", progress=progress) as bar:

        def measure(fills: Sequence[Fill], samples: slice) -> dict[Fill, Distances]:
            return fill_distances(model, generator, latents[torch.arange(n)[samples]], original[samples],
                                  regions[:, samples], masks[:, samples], fills, alpha, bar)

        found, screened = measure(trials, slice(0, screen)), {}
        if screen < n:
            first = {t: _gain(*d) for t, d in found.items()}
            kept = sorted(trials, key=lambda t: -first[t])[:RACE_KEEP]  # stable: ties keep the energy order
            screened = {t: gain for t, gain in first.items() if t not in kept}
            rest = measure(kept, slice(screen, n))
            found = {t: (torch.cat([found[t][0], rest[t][0]], 1), torch.cat([found[t][1], rest[t][1]], 1)) for t in kept}
    table = {t: _gain(*d) for t, d in found.items()}
    (j, s), best = max(table.items(), key=lambda item: item[1])
    return BackgroundSearch(j, s, best, table, screened)


#: Calibration samples for the background search after fitting are seeds from here on.
BACKGROUND_SEED_START = 2_000_000_000


def search_background(model: PandA, generator: GeneratorAdapter, n_samples: int = 8,
                      progress: bool | None = False) -> BackgroundSearch:
    """Run :func:`find_background` on ``n_samples`` calibration seeds and store the pick in the model
    (``model.set_background``), so that the factor file carries it."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, int) or n_samples < 1:
        raise PandaError(f"n_samples={n_samples!r}: search the background on at least 1 sample.")
    found = find_background(model, generator, range(BACKGROUND_SEED_START, BACKGROUND_SEED_START + n_samples),
                            progress=progress)
    model.set_background(found.appearance, found.sign, found.gain)
    return found


def find_background(model: PandA, generator: GeneratorAdapter, seeds: Sequence[int], candidates: int = 16,
                    alpha: float = 1.0, race: bool = True, progress: bool | None = False) -> BackgroundSearch:
    """Pick the "background" appearance by what removal should do.

    Criterion: among the ``candidates`` appearances carrying most energy (``appearance_energy_``)
    and both their signs, the one whose edit (strength ``alpha``) brings each part's region
    closest in mean colour to the band of pixels around it, averaged over the parts (those whose
    region is neither empty nor the whole image) and the samples ``seeds``. A generator-agnostic
    stand-in for the authors' hand-picked background appearance. ``race``: from ``RACE_MIN_SAMPLES``
    seeds on, measure all candidates on the first ``RACE_SCREEN`` only, and the best ``RACE_KEEP`` on the rest.
    """
    latents = generator.latents(seeds)
    original = generator.render(latents)
    regions, marks = removable_parts(model, len(latents), original.shape[-1])
    return _search(model, generator, latents, original, regions, marks, alpha, candidates, race, progress)


def removable_parts(model: PandA, n: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The parts whose region (:func:`region_masks`) is neither empty nor the whole image, for n images of
    ``size`` pixels: (regions (G, n, H, W) on the layer's grid, masks (G, n, size, size) bool), as
    :func:`fill_distances` takes them."""
    masks = region_masks(model, size)
    keep = [k for k, m in enumerate(masks) if m.any() and not m.all()]
    if not keep:
        raise PandaError("no part has a region to remove (every part's map covers the whole image or nothing): "
                         "fit more parts (--rank-parts), or name the background appearance yourself.")
    regions = torch.stack([part_profile(model, k) for k in keep])[:, None].expand(-1, n, -1, -1)
    return regions, torch.stack([masks[k] for k in keep])[:, None].expand(-1, n, -1, -1)


def towards_background(original: torch.Tensor, edited: torch.Tensor, region: torch.Tensor,
                       ring: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """How far the region's colour is from its surroundings, before and after, per sample.

    Parameters
    ----------
    original, edited : torch.Tensor
        (N, 3, H', W') images.
    region : torch.Tensor
        (H', W') or per sample (N, H', W') bool mask at image resolution.
    ring : int, optional
        Width in pixels of the surrounding band whose mean colour stands for "background" (default an
        eighth of the image side).

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        Distance before and after, each (N,): the Euclidean distance between the region's mean colour and
        the band's mean colour in the original image. Removal should make the second smaller.
    """
    ring = ring or max(1, original.shape[-1] // 8)
    regions = region.bool()
    if regions.dim() == 2:
        regions = regions.expand(original.shape[0], *regions.shape)
    grown = dilate(regions, ring)
    bands = grown & ~regions
    if not bands.flatten(1).any(1).all() or not regions.flatten(1).any(1).all():
        raise PandaError("the region covers the whole image or nothing: removal needs background around it.")

    def mean_colour(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        w = m[:, None].float()
        return (x * w).flatten(2).sum(2) / w.flatten(2).sum(2)  # (N, 3)

    target = mean_colour(original, bands)
    before = (mean_colour(original, regions) - target).norm(dim=1)
    after = (mean_colour(edited, regions) - target).norm(dim=1)
    return before, after


@torch.no_grad()
def choose_fill(model: PandA, generator: GeneratorAdapter, latents: Latents, regions: torch.Tensor,
                masks: torch.Tensor, alpha: float = 1.0, candidates: int = 16,
                original: torch.Tensor | None = None) -> BackgroundSearch:
    """The background appearance for *this* region on *these* images: among the ``candidates`` strongest
    appearances and both signs, the one whose fill brings the regions' mean colour closest to the band
    around them (:func:`towards_background`). What fills a region depends on what surrounds it: skin for
    glasses, wall for a head. Every fill is tried on every image (no racing).

    Parameters
    ----------
    regions : torch.Tensor
        (N, H, W) on the layer's grid.
    masks : torch.Tensor
        (N, H', W') bool at image resolution.
    original : torch.Tensor, optional
        The images G(latents) (N, 3, H', W') in [0, 1], where the caller has them already; rendered otherwise.

    Returns
    -------
    BackgroundSearch
    """
    latents = generator.latents(latents)
    original = generator.render(latents) if original is None else original
    return _search(model, generator, latents, original, regions[None], masks[None], alpha, candidates, race=False)


@dataclass
class Removal:
    """A removal and how well it blends the region into its surroundings.

    Attributes
    ----------
    original, removed : torch.Tensor
        (N, 3, H', W') in [0, 1].
    shown : torch.Tensor
        (N, H', W') in [0, 1]: the region to draw.
    masks : torch.Tensor
        (N, H', W') bool: the region measured.
    regions : torch.Tensor
        (N, H, W) on the layer's grid: the region filled.
    appearance, sign, alpha : int, float, float
        The fill used.
    distance_before, distance_after : float
        Mean colour distance from the region to the band around it (:func:`towards_background`).
    search : BackgroundSearch or None
        The whole search, when the fill was chosen for this region (``background="auto"``).
    """

    original: torch.Tensor
    removed: torch.Tensor
    shown: torch.Tensor
    masks: torch.Tensor
    regions: torch.Tensor
    appearance: int
    sign: float
    alpha: float
    distance_before: float
    distance_after: float
    search: BackgroundSearch | None = None


def removal_regions(region: torch.Tensor, masks: torch.Tensor | None, n: int,
                    size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(regions on the grid (N, H, W), what to draw (N, size, size) in [0, 1], what to measure (N, size, size) bool)
    for a region (H, W) or (N, H, W) and optional masks (N, size, size) bool at image resolution."""
    regions = region[None].expand(n, *region.shape) if region.dim() == 2 else region
    shown = region_at(regions, size) if masks is None else masks.float()
    return regions, shown, (shown > 0.5 if masks is None else masks)


def removal(model: PandA, generator: GeneratorAdapter, latents: Latents | Sequence[int], region: torch.Tensor,
            alpha: float = 1.0, background: int | str | None = "auto", masks: torch.Tensor | None = None,
            sign: float | None = None, original: torch.Tensor | None = None) -> Removal:
    """Remove ``region`` from the images and measure it.

    Parameters
    ----------
    region : torch.Tensor
        (H, W) or per sample (N, H, W) on the layer's grid.
    background : "auto", "global", None or int
        "auto": the fill chosen for this region on these images (:func:`choose_fill`); "global" or None: the
        one chosen when fitting; an index: that appearance, with ``sign`` (None: see :func:`remove`).
    masks : torch.Tensor, optional
        (N, H', W') bool at image resolution; default the region upsampled above 0.5.
    original : torch.Tensor, optional
        The images (N, 3, H', W') in [0, 1] when already rendered (a face region's,
        :class:`panda.regions.FaceRegions`); else rendered here.

    Returns
    -------
    Removal
    """
    latents = generator.latents(latents)
    original = generator.render(latents) if original is None else original
    regions, shown, masks = removal_regions(region, masks, len(latents), original.shape[-1])
    search = None
    if background == "auto":
        search = choose_fill(model, generator, latents, regions, masks, alpha, original=original)
        background, sign = search.appearance, search.sign
    elif background in (None, "global"):
        background = None
    b, used_sign = fill_for(model, background, sign)
    removed = generator.to_unit(remove(model, generator, latents, regions, alpha, b, used_sign)).cpu()
    before, after = towards_background(original, removed, masks)
    return Removal(original, removed, shown, masks, regions, b, used_sign, alpha, float(before.mean()),
                   float(after.mean()), search)


def candidate_fills(model: PandA, generator: GeneratorAdapter, latents: Latents | Sequence[int], regions: torch.Tensor,
                    search: BackgroundSearch, alpha: float = 1.0, top: int = 6) -> list[tuple[int, float, float, torch.Tensor]]:
    """The ``top`` best fills of a search, rendered: [(appearance, sign, gain, images (N, 3, H', W') in [0, 1])],
    best first, so a person can overrule the pick. regions: (H, W) or (N, H, W) on the layer's grid."""
    latents = generator.latents(latents)
    return [(j, s, g, generator.to_unit(remove(model, generator, latents, regions, alpha, j, s)).cpu())
            for j, s, g in search.ranked(top)]
