"""Projection: the StyleGAN latent that reproduces a given image, so a person can edit their own photo.

The approach of NVlabs' projector (Karras et al., 2020): start from the average w, optimise w (one for every
layer, "W") or one w per layer ("W+") with Adam, the learning rate ramped up and down, noise added to w early on
so the search does not stick. NVlabs' loss is LPIPS, a perceptual network that cannot be had here; panda uses
pixel mean squared error at full resolution plus at half and quarter resolution (the coarse terms weigh the
overall layout, as a perceptual loss would), and reports PSNR.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .errors import PandaError
from .generators import GeneratorAdapter, Latents
from .latents import save_latents
from .progress import progress_bar

log = logging.getLogger(__name__)


@dataclass
class Projection:
    """What :func:`project` returns.

    Attributes
    ----------
    ws : torch.Tensor
        The latent found, (1, num_ws, w_dim) (W+; in W every row is the same w).
    image : torch.Tensor
        The target, (3, H, W) in [0, 1].
    reconstruction : torch.Tensor
        G(ws), (3, H, W) in [0, 1].
    psnr : float
        PSNR of the reconstruction in dB (images in [0, 1]).
    losses : list of float
        The loss after each step.
    space : str
        'w' or 'w+'.
    """

    ws: torch.Tensor
    image: torch.Tensor
    reconstruction: torch.Tensor
    psnr: float
    losses: list[float]
    space: str

    def latents(self) -> Latents:
        return Latents.from_w(self.ws)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of two images in [0, 1]."""
    mse = float(F.mse_loss(a.float(), b.float()))
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def load_image(path: str | Path, size: int) -> torch.Tensor:
    """A photo as (3, size, size) in [0, 1]: centre-cropped to a square, resized (Lanczos)."""
    path = Path(path)
    if not path.is_file():
        raise PandaError(f"image '{path}' does not exist: give the path of a photo (PNG or JPEG).")
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")
            side = min(im.size)
            left, top = (im.width - side) // 2, (im.height - side) // 2
            im = im.crop((left, top, left + side, top + side)).resize((size, size), Image.LANCZOS)
            arr = np.asarray(im, dtype=np.float32) / 255.0
    except (OSError, Image.DecompressionBombError) as exc:
        raise PandaError(f"cannot read image '{path}' ({exc}): give a PNG or JPEG photo.") from exc
    return torch.from_numpy(arr).permute(2, 0, 1).contiguous()


def _loss(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    loss = F.mse_loss(x, target)
    for k in (2, 4):
        if x.shape[-1] // k >= 4:
            loss = loss + F.mse_loss(F.avg_pool2d(x, k), F.avg_pool2d(target, k))
    return loss


def project(generator: GeneratorAdapter, target: torch.Tensor, space: str = "w+", steps: int = 300, lr: float = 0.1,
            noise_ramp: float = 0.75, initial_noise: float = 0.05, n_avg: int = 2000, seed: int = 0,
            progress: bool | None = False) -> Projection:
    """Find the latent whose image is closest to ``target``.

    Parameters
    ----------
    generator : GeneratorAdapter
        A StyleGAN (a generator with a mapping network).
    target : torch.Tensor
        (3, H, W) in [0, 1], at the generator's resolution.
    space : str
        'w' (one w for every layer) or 'w+' (one per layer: closer reconstructions, less regular edits).
    steps, lr : int, float
        Adam steps and peak learning rate (ramped up over the first 5% and down with a cosine over the last 25%).
    noise_ramp, initial_noise : float
        Gaussian noise of ``initial_noise`` times w's spread is added to w, fading to 0 over the first
        ``noise_ramp`` of the steps.
    n_avg : int
        Seeds the starting point (w's average) is estimated from.

    Returns
    -------
    Projection
    """
    if space not in ("w", "w+"):
        raise PandaError(f"space '{space}': project into 'w' or 'w+'.")
    if not isinstance(getattr(generator.module, "mapping", None), torch.nn.Module):
        raise PandaError(f"projection needs a StyleGAN (a generator with a mapping network); '{generator.name}' has none.")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise PandaError(f"steps={steps!r}: give a whole number of steps >= 1.")
    if not math.isfinite(lr) or lr <= 0:
        raise PandaError(f"lr={lr!r}: give a finite learning rate > 0.")
    size = generator.image_size
    if tuple(target.shape) != (3, size, size) or not torch.isfinite(target).all():
        raise PandaError(f"the target must be a finite (3, {size}, {size}) image in [0, 1], got {tuple(target.shape)}.")
    ws_all = torch.cat([generator.to_w(range(i, min(i + 256, n_avg))) for i in range(0, n_avg, 256)])  # (n, num_ws, w_dim)
    w_avg, w_std = ws_all[:, 0].mean(0), float(ws_all[:, 0].std(0).norm()) or 1.0
    num_ws = ws_all.shape[1]
    w = (w_avg[None].clone() if space == "w" else w_avg[None, None].repeat(1, num_ws, 1)).requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr, betas=(0.9, 0.999))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    goal = (target.to(generator.device) * 2 - 1)[None]  # the generator's [-1, 1] range
    lo, hi = generator.output_range
    goal = lo + (goal + 1) / 2 * (hi - lo)
    losses = []
    log.info("projecting into %s: %d steps", space, steps)
    for step in progress_bar(range(steps), desc="projecting", progress=progress):
        t = step / steps
        scale = min(1.0, t / 0.05) * (0.5 - 0.5 * math.cos(math.pi * min(1.0, (1 - t) / 0.25)))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        noise_scale = w_std * initial_noise * max(0.0, 1 - t / noise_ramp) ** 2
        noisy = w + torch.randn(w.shape, generator=gen).to(w) * noise_scale
        x = generator.synthesize(Latents.from_w(noisy, latent_dim=generator.latent_dim), grad=True)
        loss = _loss(x, goal)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if (step + 1) % max(1, steps // 10) == 0:
            log.info("step %d of %d: loss %.4f", step + 1, steps, losses[-1])
    with torch.no_grad():
        ws = (w[:, None].repeat(1, num_ws, 1) if space == "w" else w).detach()
        rec = generator.render(Latents.from_w(ws, latent_dim=generator.latent_dim))[0]
    return Projection(ws.cpu(), target.cpu(), rec, psnr(rec, target.cpu()), losses, space)


def save_latent(projection: Projection, generator: GeneratorAdapter, path: str | Path) -> Path:
    """Write the projected W+ latent (safetensors) with the generator it belongs to (file, hash, psi, noise mode);
    ``--latent`` and :func:`panda.latents.load_latents` read it back."""
    meta = {"space": projection.space, "psnr": f"{projection.psnr:.3f}"} | {k: str(v) for k, v in generator.source.items()}
    return save_latents(projection.latents(), generator, path, meta)
