"""Projection: the latent that reproduces a given image, so a person can edit their own photo.

StyleGANs, the approach of NVlabs' projector (Karras et al., 2020): start from the average w, optimise w (one for
every layer, "W") or one w per layer ("W+") with Adam, the learning rate ramped up and down, noise added to w early
on so the search does not stick. Generators without a mapping network (the DCGANs, BigGAN) are searched in z
("Z"): from the best of a few seeds, with the same schedule, z kept at that seed's norm (the shell where a
Gaussian latent lives, so the image stays one the generator draws). NVlabs' loss is LPIPS, a perceptual network
that cannot be had here; panda uses pixel mean squared error at full resolution plus at half and quarter resolution
(the coarse terms weigh the overall layout, as a perceptual loss would), and reports PSNR.
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
    ws : torch.Tensor or None
        The latent found, (1, num_ws, w_dim) (W+; in W every row is the same w); None in Z.
    image : torch.Tensor
        The target, (3, H, W) in [0, 1].
    reconstruction : torch.Tensor
        G(ws), (3, H, W) in [0, 1].
    psnr : float
        PSNR of the reconstruction in dB (images in [0, 1]).
    losses : list of float
        The loss after each step.
    space : str
        'w', 'w+' or 'z'.
    z, labels : torch.Tensor or None
        In Z: the latent found, (1, latent_dim), and for a conditional generator its class, (1,).
    """

    ws: torch.Tensor | None
    image: torch.Tensor
    reconstruction: torch.Tensor
    psnr: float
    losses: list[float]
    space: str
    z: torch.Tensor | None = None
    labels: torch.Tensor | None = None

    def latents(self) -> Latents:
        return Latents(self.z, self.labels) if self.space == "z" else Latents.from_w(self.ws)


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


def _losses(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each image's loss, (N,), against one target (1, 3, H, W): pixel MSE at full, half and quarter resolution."""
    loss = ((x - target) ** 2).mean((1, 2, 3))
    for k in (2, 4):
        if x.shape[-1] // k >= 4:
            loss = loss + ((F.avg_pool2d(x, k) - F.avg_pool2d(target, k)) ** 2).mean((1, 2, 3))
    return loss


def _loss(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return _losses(x, target).mean()


def _schedule(step: int, steps: int) -> tuple[float, float]:
    """(learning-rate factor, progress t in [0, 1)) at ``step``: ramped up over the first 5% of the steps, down with
    a cosine over the last 25% (NVlabs' projector)."""
    t = step / steps
    return min(1.0, t / 0.05) * (0.5 - 0.5 * math.cos(math.pi * min(1.0, (1 - t) / 0.25))), t


def project(generator: GeneratorAdapter, target: torch.Tensor, space: str | None = None, steps: int = 300,
            lr: float = 0.1, noise_ramp: float = 0.75, initial_noise: float = 0.05, n_avg: int = 2000, seed: int = 0,
            progress: bool | None = False, n_starts: int = 64, n_kept: int = 4) -> Projection:
    """Find the latent whose image is closest to ``target``.

    Parameters
    ----------
    generator : GeneratorAdapter
        Any generator: a StyleGAN is searched in W or W+, others in z.
    target : torch.Tensor
        (3, H, W) in [0, 1], at the generator's resolution.
    space : str or None
        'w' (one w for every layer) or 'w+' (one per layer: closer reconstructions, less regular edits) for a
        StyleGAN; 'z' for any generator. None (default): 'w+' for a StyleGAN, else 'z'.
    steps, lr : int, float
        Adam steps and peak learning rate (ramped up over the first 5% and down with a cosine over the last 25%).
    noise_ramp, initial_noise : float
        Gaussian noise of ``initial_noise`` times the latent's spread is added to it, fading to 0 over the first
        ``noise_ramp`` of the steps.
    n_avg : int
        W, W+: seeds the starting point (w's average) is estimated from.
    n_starts, n_kept : int
        Z: seeds ``seed`` .. ``seed + n_starts - 1`` are tried as starting points (with a conditional generator not
        given a class, each with its own class); the ``n_kept`` closest to the target are optimised side by side and
        the closest at the end is returned (on dcgan-celeba, 500 steps: 30-35 dB with 4 kept, 30 dB with 1).

    Returns
    -------
    Projection
    """
    space = ("w+" if generator.has_w else "z") if space is None else space
    if space not in ("w", "w+", "z"):
        raise PandaError(f"space '{space}': project into 'w', 'w+' (StyleGANs) or 'z'.")
    if space != "z" and not generator.has_w:
        raise PandaError(f"'{generator.name}' has no mapping network, so no W space: project into z (--space z).")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise PandaError(f"steps={steps!r}: give a whole number of steps >= 1.")
    if not math.isfinite(lr) or lr <= 0:
        raise PandaError(f"lr={lr!r}: give a finite learning rate > 0.")
    size = generator.image_size
    if tuple(target.shape) != (3, size, size) or not torch.isfinite(target).all():
        raise PandaError(f"the target must be a finite (3, {size}, {size}) image in [0, 1], got {tuple(target.shape)}.")
    goal = (target.to(generator.device) * 2 - 1)[None]  # [-1, 1], then the generator's range
    lo, hi = generator.output_range
    goal = lo + (goal + 1) / 2 * (hi - lo)
    if space == "z":
        return _project_z(generator, target, goal, steps, lr, noise_ramp, initial_noise, seed, n_starts, n_kept,
                          progress)
    ws_all = torch.cat([generator.to_w(range(i, min(i + 256, n_avg))) for i in range(0, n_avg, 256)])  # (n, num_ws, w_dim)
    w_avg, w_std = ws_all[:, 0].mean(0), float(ws_all[:, 0].std(0).norm()) or 1.0
    num_ws = ws_all.shape[1]
    w = (w_avg[None].clone() if space == "w" else w_avg[None, None].repeat(1, num_ws, 1)).requires_grad_(True)
    opt = torch.optim.Adam([w], lr=lr, betas=(0.9, 0.999))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    losses = []
    log.info("projecting into %s: %d steps", space, steps)
    for step in progress_bar(range(steps), desc="projecting", progress=progress):
        scale, t = _schedule(step, steps)
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


def _project_z(generator: GeneratorAdapter, target: torch.Tensor, goal: torch.Tensor, steps: int, lr: float,
               noise_ramp: float, initial_noise: float, seed: int, n_starts: int, n_kept: int,
               progress: bool | None) -> Projection:
    """:func:`project` in z: the ``n_kept`` closest of ``n_starts`` seeds optimised side by side (one batch), each
    kept at its own norm; the closest at the end wins."""
    for name, value in (("n_starts", n_starts), ("n_kept", n_kept)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise PandaError(f"{name}={value!r}: give a whole number >= 1.")
    starts = generator.sample(range(seed, seed + n_starts))
    with torch.no_grad():
        tried = torch.cat([_losses(generator.synthesize(starts[i:i + 64]), goal) for i in range(0, n_starts, 64)])
    kept = tried.argsort()[:n_kept].cpu()
    labels = None if starts.labels is None else starts.labels[kept].to(generator.device)
    z = starts.z[kept].to(generator.device).clone().requires_grad_(True)
    # each latent stays on the shell of its seed's norm, where the generator's latents live (truncation included)
    radius = z.detach().norm(dim=1, keepdim=True)
    opt = torch.optim.Adam([z], lr=lr, betas=(0.9, 0.999))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    spread = radius / math.sqrt(z.shape[1])  # the typical size of one coordinate
    losses = []
    log.info("projecting into z: %d steps from seeds %s", steps, ", ".join(str(seed + int(k)) for k in kept))
    for step in progress_bar(range(steps), desc="projecting", progress=progress):
        scale, t = _schedule(step, steps)
        for group in opt.param_groups:
            group["lr"] = lr * scale
        noise = torch.randn(z.shape, generator=gen).to(z) * spread * initial_noise * max(0.0, 1 - t / noise_ramp) ** 2
        each = _losses(generator.synthesize(Latents(z + noise, labels), grad=True), goal)
        opt.zero_grad(set_to_none=True)
        each.sum().backward()  # the latents are independent: each gets its own gradient
        opt.step()
        with torch.no_grad():
            z.mul_(radius / z.norm(dim=1, keepdim=True).clamp_min(1e-12))
        losses.append(float(each.detach().min()))
        if (step + 1) % max(1, steps // 10) == 0:
            log.info("step %d of %d: loss %.4f", step + 1, steps, losses[-1])
    with torch.no_grad():
        best = int(_losses(generator.synthesize(Latents(z, labels)), goal).argmin())
    found = Latents(z.detach()[best:best + 1], None if labels is None else labels[best:best + 1])
    rec = generator.render(found)[0]
    return Projection(None, target.cpu(), rec, psnr(rec, target.cpu()), losses, "z", found.z.cpu(),
                      None if found.labels is None else found.labels.cpu())


def save_latent(projection: Projection, generator: GeneratorAdapter, path: str | Path) -> Path:
    """Write the projected W+ latent (safetensors) with the generator it belongs to (file, hash, psi, noise mode);
    ``--latent`` and :func:`panda.latents.load_latents` read it back."""
    meta = {"space": projection.space, "psnr": f"{projection.psnr:.3f}"} | {k: str(v) for k, v in generator.source.items()}
    return save_latents(projection.latents(), generator, path, meta)
