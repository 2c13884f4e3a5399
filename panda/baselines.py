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
from .progress import progress_bar


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
def jacobians(generator: GeneratorAdapter, latents: Latents, chunk: int = 8) -> list[torch.Tensor]:
    """Per sample, the Jacobian (H*W, latent_dim) of the channel-averaged image w.r.t. z, in forward
    mode (latent_dim products instead of one backward pass per pixel), ``chunk`` samples per batched call."""
    out = []
    for start in range(0, len(latents), chunk):
        lat = latents[start:start + chunk]

        def image(z: torch.Tensor, labels) -> torch.Tensor:
            return generator.synthesize(Latents(z[None], None if labels is None else labels[None])).mean(1)[0]  # (H, W)

        labels = lat.labels
        jac = torch.func.vmap(jacfwd(image), in_dims=(0, None if labels is None else 0))(lat.z, labels)  # (B, H, W, d)
        out += [j.reshape(-1, lat.z.shape[1]).double().cpu() for j in jac]
    return out


def region_grams(jacs: list[torch.Tensor], masks: torch.Tensor, average: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """J_f^T J_f / |F| (pixels inside each sample's mask) and J_b^T J_b / |B| (outside) per sample, as LowRankGAN's and
    ReSeFa's code build them.

    Parameters
    ----------
    jacs : list of torch.Tensor
        Per sample (H*W, latent_dim), from :func:`jacobians`.
    masks : torch.Tensor
        (N, H, W) bool, one per Jacobian.
    average : bool
        Average over samples: two (latent_dim, latent_dim) matrices. Otherwise per sample: (N, latent_dim, latent_dim).
    """
    inside, outside = [], []
    for j, mask in zip(jacs, masks):
        m = mask.flatten().cpu()
        jf, jb = j[m], j[~m]
        inside.append(jf.T @ jf / max(len(jf), 1))
        outside.append(jb.T @ jb / max(len(jb), 1))
    inside, outside = torch.stack(inside), torch.stack(outside)
    return (inside.mean(0), outside.mean(0)) if average else (inside, outside)


def per_image_grams(generator: GeneratorAdapter, latents: Latents, masks: dict[str, torch.Tensor], chunk: int = 8,
                    progress: bool | None = False) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """:func:`region_grams` per sample for several regions at once, from Jacobians computed ``chunk`` samples at a
    time and dropped (a 64 x 64 image's Jacobian is 26 MB; its Gram matrices 80 KB each).

    Returns
    -------
    dict of str to (torch.Tensor, torch.Tensor)
        Region -> (inside, outside), each (N, latent_dim, latent_dim) float64.
    """
    parts: dict[str, tuple[list, list]] = {r: ([], []) for r in masks}
    for start in progress_bar(range(0, len(latents), chunk), progress=progress, desc="Jacobians", unit="batch"):
        jacs = jacobians(generator, latents[start:start + chunk], chunk)
        for r, m in masks.items():
            inside, outside = region_grams(jacs, m[start:start + chunk], average=False)
            parts[r][0].append(inside), parts[r][1].append(outside)
    return {r: (torch.cat(i), torch.cat(o)) for r, (i, o) in parts.items()}


#: LowRankGAN's code sets the sparsity weight with ``--lamb 60``, i.e. lambda = 1/60.
LOWRANKGAN_LAMBDA = 1 / 60


def robust_pca(m: torch.Tensor, lam: float = LOWRANKGAN_LAMBDA, tol: float = 1e-7, max_iter: int = 10_000) -> tuple[torch.Tensor, torch.Tensor]:
    """Principal component pursuit by ADMM, M = L (low rank) + S (sparse), with LowRankGAN's settings: lambda 1/60,
    mu = m n / (4 ||M||_1) where ||M||_1 is the matrix 1-norm (the largest column sum of |M|, numpy's ``ord=1``), stop
    when ||L + S - M||_F < tol ||M||_F or after ``max_iter`` steps.

    The Gram matrices it is given are symmetric, so the singular value thresholding uses an eigendecomposition
    (|eigenvalues| are the singular values; the signs are kept): the same L, several times faster, and batched.

    Parameters
    ----------
    m : torch.Tensor
        (n, n) or (B, n, n) symmetric matrices.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        L and S, the shape of ``m``, float64.
    """
    single = m.dim() == 2
    m = (m[None] if single else m).double()
    m = (m + m.transpose(1, 2)) / 2
    n = m.shape[-1]
    mu = (n * n / (4 * m.abs().sum(1).amax(1).clamp_min(1e-30)))[:, None, None]  # (B, 1, 1)
    s, y = torch.zeros_like(m), torch.zeros_like(m)
    low = torch.zeros_like(m)
    bound = tol * torch.linalg.norm(m, dim=(1, 2))
    active = torch.ones(len(m), dtype=torch.bool)
    for _ in range(max_iter):
        idx = torch.nonzero(active).flatten()
        mi, si, yi, mui = m[idx], s[idx], y[idx], mu[idx]
        vals, vecs = torch.linalg.eigh(mi - si - yi / mui)
        shrunk = torch.sign(vals) * (vals.abs() - 1 / mui[:, :, 0]).clamp_min(0)
        li = (vecs * shrunk[:, None]) @ vecs.transpose(1, 2)
        r = mi - li - yi / mui
        si = torch.sign(r) * (r.abs() - lam / mui).clamp_min(0)
        resid = li + si - mi
        yi = yi + mui * resid
        low[idx], s[idx], y[idx] = li, si, yi
        active[idx] = torch.linalg.norm(resid, dim=(1, 2)) > bound[idx]
        if not active.any():
            break
    return (low[0], s[0]) if single else (low, s)


def _rank(x: torch.Tensor, rel: float = 1e-3) -> int:
    """Numerical rank: singular values above ``rel`` times the largest (SVT leaves tiny remainders)."""
    sig = torch.linalg.svdvals(x)
    return int((sig > rel * sig[0]).sum()) if sig.numel() and sig[0] > 0 else 0


def lowrankgan(inside: torch.Tensor, outside: torch.Tensor, num_relax: int = 0, lam: float = LOWRANKGAN_LAMBDA) -> torch.Tensor:
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
    low_f, _ = robust_pca(inside, lam)
    low_b, _ = robust_pca(outside, lam)
    _, _, vf = torch.linalg.svd(low_f)
    _, _, vb = torch.linalg.svd(low_b)
    rank_f, rank_b = max(_rank(low_f), 1), _rank(low_b)
    start = min(max(1, rank_b - num_relax), d - 1)
    null = vb[start:].T  # (d, d - start)
    return _unit_rows((null @ null.T @ vf[:rank_f].T).T).float()


def resefa(inside: torch.Tensor, outside: torch.Tensor, tau: float = 0.0) -> torch.Tensor:
    """Directions (latent_dim, latent_dim), best first: generalised eigenvectors of (A, B + tau tr(B) I),
    maximising v^T A v / v^T B v (solved through a Cholesky factor of B, the stable way). ``tau`` = 0 is ReSeFa's
    default; its code adds the trace regulariser only on request. ``inside``/``outside`` may be batched (B, d, d),
    then the result is (B, d, d)."""
    a, b = inside.double(), outside.double()
    eye = torch.eye(b.shape[-1], dtype=b.dtype)
    trace = b.diagonal(dim1=-2, dim2=-1).sum(-1)[..., None, None]
    b = b + tau * trace * eye
    chol, info = torch.linalg.cholesky_ex(b)
    if bool((info != 0).any()):  # a singular B (tau = 0, a region the latent cannot move outside): the least jitter
        chol = torch.linalg.cholesky(b + 1e-10 * trace * eye)
    c = torch.linalg.solve_triangular(chol, torch.linalg.solve_triangular(chol, a, upper=False).transpose(-1, -2),
                                      upper=False)
    vals, u = torch.linalg.eigh((c + c.transpose(-1, -2)) / 2)
    v = torch.linalg.solve_triangular(chol.transpose(-1, -2), u, upper=True)  # B^-1/2 u
    v = v.flip(-1).transpose(-1, -2)
    return (v / v.norm(dim=-1, keepdim=True).clamp_min(1e-12)).float()


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
