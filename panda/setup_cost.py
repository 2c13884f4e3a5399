"""What it costs to set each method up for one region on a StyleGAN2-size network (issue 11, item 5).

PandA's setup is its feature extraction and fit, paid once for every region. LowRankGAN and ReSeFa work per image:
each needs the Jacobian of that image (H x W pixels, channel-averaged) with respect to the latent (latent_dim
forward-mode products of the whole network), then ReSeFa a generalised eigendecomposition and LowRankGAN two robust
PCAs of latent_dim x latent_dim Gram matrices (ADMM, up to 10,000 steps each in its code).

The Jacobian's cost is exactly linear in the number of tangent directions (they are pushed through in chunks one after
another), so it is measured on ``tangents`` of them and scaled to ``latent_dim``: a full 512-direction Jacobian of a
256 px StyleGAN2 takes many minutes on a CPU. The robust PCA is measured per ADMM step on a matrix of the right size
(its cost per step does not depend on the values); its number of steps depends on the matrix, so LowRankGAN's total is
given as a lower bound (the Jacobian alone) and with ``rpca_steps`` steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from . import baselines
from .features import FeatureSource
from .generators import GeneratorAdapter, Latents, synchronize
from .model import PandA


@dataclass
class SetupCost:
    """Seconds each method needs before it can edit one region.

    Attributes
    ----------
    generator, device, layer : str
    resolution, latent_dim, n_train, rank_parts, tangents, rpca_steps : int
    panda_extract_s, panda_fit_s : float
        PandA's feature extraction of ``n_train`` samples at ``layer``, and its fit.
    jacobian_s : float
        One image's Jacobian, scaled from ``tangents`` directions to ``latent_dim``.
    resefa_solve_s : float
        ReSeFa's generalised eigendecomposition (latent_dim x latent_dim).
    rpca_step_s : float
        One ADMM step of LowRankGAN's robust PCA (latent_dim x latent_dim).
    """

    generator: str
    device: str
    layer: str
    resolution: int
    latent_dim: int
    n_train: int
    rank_parts: int
    tangents: int
    rpca_steps: int
    panda_extract_s: float
    panda_fit_s: float
    jacobian_s: float
    resefa_solve_s: float
    rpca_step_s: float

    @property
    def panda_s(self) -> float:
        return self.panda_extract_s + self.panda_fit_s

    @property
    def resefa_s(self) -> float:
        """ReSeFa for one region of one image."""
        return self.jacobian_s + self.resefa_solve_s

    @property
    def lowrankgan_min_s(self) -> float:
        """LowRankGAN for one region of one image, at least: its Jacobian."""
        return self.jacobian_s

    @property
    def lowrankgan_s(self) -> float:
        """LowRankGAN with two robust PCAs of ``rpca_steps`` ADMM steps each."""
        return self.jacobian_s + 2 * self.rpca_steps * self.rpca_step_s


def jacobian_time(generator: GeneratorAdapter, latents: Latents, tangents: int, chunk: int = 8) -> float:
    """Seconds for ``tangents`` forward-mode products of the channel-averaged image of one sample (the first of
    ``latents``) with respect to z, ``chunk`` at a time, as :func:`panda.baselines.jacobians` computes them."""
    lat = latents[:1]

    def image(z: torch.Tensor) -> torch.Tensor:
        return generator.synthesize(Latents(z[None], lat.labels)).mean(1)[0]

    basis = torch.eye(lat.z.shape[1], device=lat.z.device)[:tangents]
    push = torch.func.vmap(lambda e: torch.func.jvp(image, (lat.z[0],), (e,))[1])
    push(basis[:1])  # warm-up (first-call allocations, kernel selection)
    synchronize(lat.z.device)
    t = time.perf_counter()
    for start in range(0, tangents, chunk):
        push(basis[start:start + chunk])
    synchronize(lat.z.device)
    return time.perf_counter() - t


def _spd(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * d, d, generator=g, dtype=torch.float64)
    return x.T @ x / (2 * d)


def time_setup(generator: GeneratorAdapter, layer: str, n_train: int = 1000, rank_parts: int = 12, tangents: int = 32,
               chunk: int = 8, rpca_steps: int = 1000, progress: bool | None = False) -> SetupCost:
    """Time PandA's, ReSeFa's and LowRankGAN's setup for one region on ``generator`` (see the module docstring).

    Returns
    -------
    SetupCost
    """
    d = generator.latent_dim
    tangents = min(tangents, d)
    source = FeatureSource(generator, layer, range(n_train), progress=progress)
    model = PandA(rank_parts=rank_parts, random_state=0).fit(source)
    jac = jacobian_time(generator, generator.sample([10_000_000]), tangents, chunk) * d / tangents
    inside, outside = _spd(d, 1), _spd(d, 2)
    t = time.perf_counter()
    baselines.resefa(inside, outside)
    solve = time.perf_counter() - t
    baselines.robust_pca(inside, max_iter=5)  # warm-up
    t = time.perf_counter()
    baselines.robust_pca(inside, max_iter=20, tol=0.0)
    step = (time.perf_counter() - t) / 20
    _, h, w = generator.layer_shapes()[layer]
    return SetupCost(generator.name, str(generator.device), f"{layer} ({model.layer_shape_[0]}x{h}x{w})",
                     generator.image_size, d, n_train, rank_parts,
                     tangents, rpca_steps, model.extract_time_, model.fit_time_, jac, solve, step)
