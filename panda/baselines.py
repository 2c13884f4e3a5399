"""Baselines for local editing, implemented from their papers on the generator-adapter seam.

Every method returns unit-norm latent directions (K, latent_dim), best first; an edit is
``G(z + alpha * n)``. LowRankGAN and ReSeFa are given the region masks (the supervision they use);
GANSpace and SeFa are not. StyleSpace needs a StyleGAN's style channels: it has no DCGAN analogue.

- GANSpace (Härkönen et al., 2020): PCA of an early activation (the spec's ``ganspace_layer``),
  carried back to z by least squares (PCA coordinates scaled to unit std, regressed onto z).
- SeFa (Shen & Zhou, 2021): closed form, the eigenvectors of W W^T for the first layer's weight W (the spec's ``sefa_weight``)
  (latent_dim x everything else, columns normalised).
- LowRankGAN (Zhu et al., 2021): Jacobian Gram matrices of the image inside and outside the region,
  each split into low-rank + sparse by robust PCA (principal component pursuit, ADMM); the region's
  principal directions projected onto the null space of the rest of the image.
- ReSeFa (Zhu et al., 2022): generalised eigenvectors maximising v^T A v / v^T B v for the same
  inside (A) and outside (B) Gram matrices.
- StyleSpace (Wu et al., 2021), StyleGANs only: one style channel (an affine layer's output) moved by alpha times
  its standard deviation; the channels for a region are those whose gradient map of the image, thresholded to the
  region's area, overlaps the region most.

On a StyleGAN (a generator with a mapping network) GANSpace and SeFa work in W, as their authors run them there:
GANSpace is PCA of w, SeFa the eigenvectors of the style layers' affine weights, and their edits move every
layer's w (``LatentEdit(space="w")``).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch.func import jacfwd

from .features import iter_features
from .generators import GeneratorAdapter, Latents


def _unit_rows(d: torch.Tensor) -> torch.Tensor:
    return d / d.norm(dim=1, keepdim=True).clamp_min(1e-12)


# ------------------------------------------------------------------------------------- GANSpace
def ganspace(generator: GeneratorAdapter, layer: str, n_samples: int = 10_000, n_components: int = 80,
             seed: int = 0, batch_size: int = 512) -> torch.Tensor:
    """Directions (n_components, latent_dim): PCA of ``layer``'s activations (flattened) over
    ``n_samples`` samples, each component regressed back onto z (GANSpace's procedure for layers
    other than the latent)."""
    seeds = range(seed, seed + n_samples)
    feats = torch.cat([f.flatten(1) for f in iter_features(generator, layer, seeds, batch_size)]).double()
    z = generator.sample(seeds).z.double().cpu()
    mean = feats.mean(0)
    q = min(n_components, feats.shape[0] - 1, feats.shape[1])
    _, _, v = torch.pca_lowrank(feats.cpu(), q=q, center=True, niter=4)
    coords = (feats.cpu() - mean.cpu()) @ v  # (N, q)
    coords = coords / coords.std(0, keepdim=True).clamp_min(1e-12)
    # z ~ coords @ X: row k of X is how z moves per unit std of component k
    x = torch.linalg.lstsq(coords, z - z.mean(0)).solution  # (q, latent_dim)
    return _unit_rows(x).float()


# ------------------------------------------------------------------------------------- SeFa
def sefa(weight: torch.Tensor) -> torch.Tensor:
    """Directions (latent_dim, latent_dim), by eigenvalue: the first latent-facing layer's weight
    reshaped to (latent_dim, everything else), columns normalised, eigenvectors of W W^T."""
    w = weight.detach().double().reshape(weight.shape[0], -1).cpu()
    w = w / w.norm(dim=0, keepdim=True).clamp_min(1e-12)
    vals, vecs = torch.linalg.eigh(w @ w.T)
    return vecs.flip(1).T.float()  # rows, largest eigenvalue first


# ------------------------------------------------------------- Jacobian Gram matrices (LowRankGAN, ReSeFa)
def jacobians(generator: GeneratorAdapter, latents: Latents) -> list[torch.Tensor]:
    """Per sample, the Jacobian (H*W, latent_dim) of the channel-averaged image w.r.t. z, in forward
    mode (latent_dim products instead of one backward pass per pixel)."""
    out = []
    for i in range(len(latents)):
        lat = latents[i:i + 1]

        def image(z, lat=lat):
            return generator.synthesize(Latents(z[None], lat.labels)).mean(1)[0]  # (H, W)

        out.append(jacfwd(image)(lat.z[0]).reshape(-1, lat.z.shape[1]).double().cpu())
    return out


def region_grams(jacs: list[torch.Tensor], masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over samples of J_f^T J_f / |F| (pixels inside each sample's mask) and J_b^T J_b / |B|
    (outside), each (latent_dim, latent_dim). masks: (N, H, W) bool, one per Jacobian."""
    inside, outside = 0, 0
    for j, mask in zip(jacs, masks):
        m = mask.flatten().cpu()
        jf, jb = j[m], j[~m]
        inside = inside + jf.T @ jf / max(len(jf), 1)
        outside = outside + jb.T @ jb / max(len(jb), 1)
    return inside / len(jacs), outside / len(jacs)


def robust_pca(m: torch.Tensor, lam: float | None = None, tol: float = 1e-7, max_iter: int = 10_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Principal component pursuit by ADMM: M = L (low rank) + S (sparse), mu = m n / (4 ||M||_1) and
    tolerance as in LowRankGAN's code.

    Parameters
    ----------
    m : torch.Tensor
        (m, n) matrix.
    lam : float, optional
        Default 1 / sqrt(max(m, n)), the standard PCP weight (Candès et al., 2011). LowRankGAN's code fixes
        1/60, set for StyleGAN's 512-d latent; on a 100-d DCGAN latent it leaves L with rank 0 or 1 (the
        sparse part takes everything), which would make the method degenerate rather than tested.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        L and S, each (m, n) float64.
    """
    m = m.double()
    lam = 1 / max(m.shape) ** 0.5 if lam is None else lam
    mu = m.numel() / (4 * m.abs().sum().clamp_min(1e-30))
    s = torch.zeros_like(m)
    y = torch.zeros_like(m)
    norm = torch.linalg.norm(m).clamp_min(1e-30)
    low = m
    for _ in range(max_iter):
        u, sig, vh = torch.linalg.svd(m - s + y / mu, full_matrices=False)
        low = (u * (sig - 1 / mu).clamp_min(0)) @ vh
        r = m - low + y / mu
        s = torch.sign(r) * (r.abs() - lam / mu).clamp_min(0)
        resid = m - low - s
        y = y + mu * resid
        if torch.linalg.norm(resid) / norm < tol:
            break
    return low, s


def _rank(x: torch.Tensor, rel: float = 1e-3) -> int:
    """Numerical rank: singular values above ``rel`` times the largest (SVT leaves tiny remainders)."""
    sig = torch.linalg.svdvals(x)
    return int((sig > rel * sig[0]).sum()) if sig.numel() and sig[0] > 0 else 0


def lowrankgan(inside: torch.Tensor, outside: torch.Tensor, num_relax: int = 0) -> torch.Tensor:
    """Directions (rank_f, latent_dim): the region's low-rank principal directions projected onto the
    null space of the rest of the image (from the Gram matrices of :func:`region_grams`).

    Parameters
    ----------
    inside, outside : torch.Tensor
        (latent_dim, latent_dim) Gram matrices.
    num_relax : int
        Widens the null space: with a small latent the background's rank can fill it.
    """
    d = inside.shape[0]
    low_f, _ = robust_pca(inside)
    low_b, _ = robust_pca(outside)
    _, _, vf = torch.linalg.svd(low_f)
    _, _, vb = torch.linalg.svd(low_b)
    rank_f, rank_b = max(_rank(low_f), 1), _rank(low_b)
    start = min(max(1, rank_b - num_relax), d - 1)
    null = vb[start:].T  # (d, d - start)
    directions = (null @ null.T @ vf[:rank_f].T).T
    return _unit_rows(directions).float()


def resefa(inside: torch.Tensor, outside: torch.Tensor, tau: float = 1e-3) -> torch.Tensor:
    """Directions (latent_dim, latent_dim), best first: generalised eigenvectors of (A, B + tau tr(B) I),
    maximising v^T A v / v^T B v (solved through a Cholesky factor of B, the stable way)."""
    a, b = inside.double(), outside.double()
    b = b + tau * torch.trace(b) * torch.eye(b.shape[0], dtype=b.dtype)
    chol = torch.linalg.cholesky(b)
    c = torch.linalg.solve_triangular(chol, torch.linalg.solve_triangular(chol, a, upper=False).T, upper=False)
    vals, u = torch.linalg.eigh((c + c.T) / 2)
    v = torch.linalg.solve_triangular(chol.T, u, upper=True)  # B^-1/2 u
    return _unit_rows(v.flip(1).T).float()


@dataclass(frozen=True)
class LatentEdit:
    """z + alpha * direction (``space="z"``), or every layer's w + alpha * direction (``space="w"``, StyleGANs)."""

    direction: torch.Tensor
    space: str = "z"

    def __call__(self, generator: GeneratorAdapter, latents: Latents, alpha: float) -> torch.Tensor:
        if self.space == "z":
            z = latents.z + alpha * self.direction.to(latents.z)
            return generator.synthesize(Latents(z, latents.labels))
        d = alpha * self.direction
        handle = generator.w_module().register_forward_hook(lambda _m, _i, w: w + d.to(w))
        try:
            return generator.synthesize(latents)
        finally:
            handle.remove()


# --------------------------------------------------------------------------- StyleGANs: W and style space
def has_w(generator: GeneratorAdapter) -> bool:
    """Whether the generator has a StyleGAN mapping network (an intermediate latent space W)."""
    return isinstance(getattr(generator.module, "mapping", None), torch.nn.Module)


def ganspace_w(generator: GeneratorAdapter, n_samples: int = 10_000, n_components: int = 80, seed: int = 0,
               batch_size: int = 512) -> torch.Tensor:
    """GANSpace on a StyleGAN: principal directions (n_components, w_dim) of w over ``n_samples`` seeds."""
    ws = []
    with torch.no_grad():
        for start in range(seed, seed + n_samples, batch_size):
            lat = generator.sample(range(start, min(start + batch_size, seed + n_samples)))
            ws.append(generator.to_w(lat)[:, 0].cpu())  # the first layer's w (all layers share it before truncation)
    w = torch.cat(ws).double()
    q = min(n_components, w.shape[0] - 1, w.shape[1])
    _, _, v = torch.pca_lowrank(w, q=q, center=True, niter=4)
    return _unit_rows(v.T).float()


def style_layers(generator: GeneratorAdapter) -> list[str]:
    """The style (affine) layers of a StyleGAN's synthesis network, in order; [] for other generators.
    StyleGAN3's input affine makes a transform, not styles, and is left out."""
    return [n for n, m in generator.module.named_modules()
            if n.startswith("synthesis.") and n.endswith(".affine") and n != "synthesis.input.affine"]


def style_weight(generator: GeneratorAdapter) -> torch.Tensor:
    """SeFa's W on a StyleGAN: the style layers' affine weights side by side, (w_dim, total style channels)."""
    modules = dict(generator.module.named_modules())
    return torch.cat([modules[n].weight.detach().T for n in style_layers(generator)], dim=1)


@contextlib.contextmanager
def style_offsets(generator: GeneratorAdapter, offsets: dict[str, torch.Tensor]):
    """Within the block, each named style layer's output (N, C) gets ``offsets[name]`` ((C,) or (N, C)) added."""
    modules = dict(generator.module.named_modules())
    handles = [modules[n].register_forward_hook(lambda _m, _i, s, d=d: s + d.to(s)) for n, d in offsets.items()]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def style_std(generator: GeneratorAdapter, latents: Latents) -> dict[str, torch.Tensor]:
    """Each style channel's standard deviation over ``latents``: {layer: (C,)} (StyleSpace's unit of alpha)."""
    seen: dict[str, list[torch.Tensor]] = {}
    modules = dict(generator.module.named_modules())
    handles = [modules[n].register_forward_hook(lambda _m, _i, s, n=n: seen.setdefault(n, []).append(s.detach().cpu()))
               for n in style_layers(generator)]
    try:
        with torch.no_grad():
            generator.synthesize(latents)
    finally:
        for h in handles:
            h.remove()
    return {n: torch.cat(v).std(0) for n, v in seen.items()}


def style_gradients(generator: GeneratorAdapter, latents: Latents, chunk: int = 256) -> tuple[list[tuple[str, int]], torch.Tensor]:
    """How each style channel moves each pixel: forward-mode derivatives of the channel-averaged image.

    Returns
    -------
    (list of (str, int), torch.Tensor)
        The channels as (layer, index), and |d image / d s_c| as (channels, N, H, W).
    """
    layers = style_layers(generator)
    sizes = [dict(generator.module.named_modules())[n].weight.shape[0] for n in layers]
    channels = [(n, c) for n, k in zip(layers, sizes) for c in range(k)]
    total, maps = len(channels), []
    for i in range(len(latents)):
        lat = latents[i:i + 1]

        def image(delta: torch.Tensor, lat=lat) -> torch.Tensor:
            parts = dict(zip(layers, delta.split(sizes)))
            with style_offsets(generator, parts):
                return generator.synthesize(lat).mean(1)[0]

        zero = torch.zeros(total, device=generator.device)
        basis = torch.eye(total, device=generator.device)
        cols = [torch.func.vmap(lambda e: torch.func.jvp(image, (zero,), (e,))[1])(basis[j:j + chunk])
                for j in range(0, total, chunk)]
        maps.append(torch.cat(cols).abs().cpu())  # (channels, H, W)
    return channels, torch.stack(maps, dim=1)


def region_overlap(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """StyleSpace's localisation score per channel: each gradient map (channels, N, H, W) keeps its strongest pixels,
    as many as the region (N, H, W) has, and scores the share of them inside the region; mean over images -> (channels,)."""
    k, n = maps.shape[:2]
    flat, region = maps.flatten(2), masks.flatten(1).bool().to(maps.device)
    scores = torch.zeros(k, n)
    for i in range(n):
        area = int(region[i].sum())
        top = flat[:, i].topk(max(area, 1), dim=1).indices  # (channels, area)
        scores[:, i] = region[i][top].float().mean(1)
    return scores.mean(1)
