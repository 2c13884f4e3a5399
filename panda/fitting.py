"""The standard fit, as ``panda fit`` and ``panda demo`` run it: data, factors, held-out score and the
background appearance for object removal, each step a call into its own module."""

from __future__ import annotations

import logging
import time

from .errors import PandaError
from .features import FeatureSource
from .generators import GeneratorAdapter, Latents
from .model import PandA
from .removal import search_background

log = logging.getLogger(__name__)


def fit_factors(generator: GeneratorAdapter, layer: str | None = None, rank_appearance: int | None = None,
                rank_parts: int | None = None, n_samples: int = 5000, seed: int = 0, max_iter: int = 30, tol: float = 1e-4,
                batch_size: int | None = None, memory_budget: int | None = None, n_heldout: int = 256,
                background_samples: int = 8, progress: bool | None = False, mixing: bool = False,
                mixing_directions: int | None = None, latents: Latents | None = None, n_init: int = 4,
                reseed: int = 0) -> PandA:
    """Fit PandA on seeds ``seed .. seed + n_samples - 1`` (or on given ``latents``, your own: ``n_samples`` is then
    theirs) at ``layer`` (default: the generator's), measure the
    held-out error on ``n_heldout`` other seeds and search the background appearance on ``background_samples``
    (0 skips either); ``mixing`` fits an appearance mixing too, refitting ``mixing_directions`` of its eigenvalues
    on their own (:class:`PandA`); ``n_init`` random starts of the parts, the best kept, then up to ``reseed``
    rounds of re-seeding its weakest parts. ``rank_parts`` defaults to the generator's choice for the layer
    (:meth:`GeneratorAdapter.rank_parts_for`). Every argument is checked before any sample is generated. ``batch_size`` and
    ``memory_budget`` default to the generator's and the machine's (:class:`panda.features.FeatureSource`).

    Returns
    -------
    PandA
        The fitted model (random_state = ``seed``).
    """
    layer = layer or generator.default_layer
    if layer is None:
        raise PandaError(f"generator '{generator.name}' has no default layer: name one.")
    rank_parts = generator.rank_parts_for(layer) if rank_parts is None else rank_parts
    for name, value in (("n_samples", n_samples), ("n_heldout", n_heldout), ("background_samples", background_samples)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise PandaError(f"{name}={value!r}: give a whole number >= 0.")
    if latents is not None:
        n_samples = len(latents)
    if n_samples < 1:
        raise PandaError("n_samples=0: fit needs at least 1 sample.")
    data = range(seed, seed + n_samples) if latents is None else latents
    source = FeatureSource(generator, layer, data, batch_size, memory_budget, progress)
    model = PandA(rank_appearance, rank_parts, max_iter=max_iter, tol=tol, random_state=seed, n_init=n_init,
                  verbose=progress, mixing=mixing, mixing_directions=mixing_directions, reseed=reseed)
    model.validate(source.shape)
    log.info("fitting R_C = %s, R_S = %d at %s's layer %s on %d samples", rank_appearance or "C", rank_parts,
             generator.name, layer, n_samples)
    model.fit(source)
    log.info("fitted: training error %.4f; features %.1f s, fit %.1f s", model.train_error_, model.extract_time_,
             model.fit_time_)
    if n_heldout > 0:
        model.score(FeatureSource.heldout(generator, layer, n_heldout, batch_size=batch_size, memory_budget=0))
        log.info("held-out error %.4f on %d samples", model.heldout_error_, n_heldout)
    if background_samples > 0:
        log.info("searching the background appearance for object removal on %d parts and %d samples "
                 "(background_samples=0, --background-samples 0 on the command line, skips it)", model.n_parts,
                 background_samples)
        t = time.perf_counter()
        found = search_background(model, generator, background_samples, progress=progress)
        log.info("background appearance %s%d (%.0f%% of the way), searched on %d samples in %.1f s",
                 "+" if found.sign > 0 else "-", found.appearance, 100 * found.gain, background_samples,
                 time.perf_counter() - t)
    return model
