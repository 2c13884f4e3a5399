"""panda's own ProGAN (Karras et al., ICLR 2018) and StyleGAN (Karras et al., CVPR 2019) generators, in the
layout of genforce ``.pth`` checkpoints (the format the PandA authors' code loads for them: a dict with
``generator_smooth`` or ``generator``), written from the papers.

Both use equalised learning rate (weights scaled by gain / sqrt(fan_in) at run time), leaky ReLU 0.2 and nearest
2x upsampling (a transposed convolution with a 2x2-summed kernel at 128 px and above in StyleGAN, "fused scale").

* ProGAN: z -> pixel norm -> a 4x4 "dense" convolution, then per resolution two 3x3 convolutions, each preceded by
  pixel norm; a 1x1 RGB layer (itself after pixel norm) at the last resolution.
* StyleGAN: z -> pixel norm -> 8 dense layers -> w, repeated per layer and truncated towards ``w_avg``; a learnt
  4x4 constant, then per layer: convolution (after upsampling, followed by a [1, 2, 1] blur, where the resolution
  doubles), per-pixel noise scaled per channel, bias, leaky ReLU, instance norm and style modulation
  ``x (1 + s_scale) + s_bias`` with ``s = A w``; a 1x1 RGB layer at the last resolution.

A checkpoint records no constructor arguments, so the networks take their sizes from the state dict
(:func:`progan_config`, :func:`stylegan_config`). Checkpoints saved while growing (``lod`` > 0) blend in the
previous resolution's RGB output, as genforce's synthesis networks do (its StyleGAN generator, as the PandA authors
ship it, passes the noise flag where the synthesis expects ``lod``, so it always renders lod 0; trained
checkpoints have lod 0, where both agree).
"""

from __future__ import annotations

import math
import re

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .stylegan2 import truncate

SQRT2 = math.sqrt(2.0)


def pixel_norm(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Scale each position's feature vector (over dim 1) to unit mean square."""
    return x / torch.sqrt(torch.mean(x ** 2, dim=1, keepdim=True) + eps)


def _fused_weight(w: torch.Tensor) -> torch.Tensor:
    """A 3x3 kernel (O, I, 3, 3) summed over 2x2 shifts into (O, I, 4, 4): nearest upsampling and convolution in one
    transposed convolution."""
    w = F.pad(w, (1, 1, 1, 1))
    return w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]


def _blend(images: torch.Tensor | None, new: torch.Tensor, lod: float, current_lod: int) -> torch.Tensor | None:
    """The level-of-detail logic of progressive growing: which RGB output (or blend) the image is at this resolution."""
    if current_lod - 1 < lod <= current_lod:
        return new
    if current_lod < lod < current_lod + 1:
        alpha = math.ceil(lod) - lod
        return new * alpha + F.interpolate(images, scale_factor=2, mode="nearest") * (1 - alpha)
    if lod >= current_lod + 1:
        return F.interpolate(images, scale_factor=2, mode="nearest")
    return images


# ---------------------------------------------------------------------------------------------- ProGAN
class ProGANConv(nn.Module):
    """pixel norm -> (nearest 2x) -> convolution with equalised learning rate -> bias -> leaky ReLU (or linear)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding: int = 1,
                 upsample: bool = False, gain: float = SQRT2, linear: bool = False) -> None:
        super().__init__()
        self.upsample, self.padding, self.linear = upsample, padding, linear
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.wscale = gain / np.sqrt(kernel_size * kernel_size * in_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = pixel_norm(x)
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.conv2d(x, self.weight * self.wscale, self.bias, padding=self.padding)
        return x if self.linear else F.leaky_relu(x, 0.2)


class ProGAN(nn.Module):
    """z (N, z_dim) -> images (N, 3, R, R); ``layer{2k}``, ``layer{2k+1}`` and ``output{k}`` for resolution 4 * 2^k."""

    def __init__(self, z_dim: int, widths: list[int], image_channels: int = 3) -> None:
        super().__init__()
        self.z_dim, self.n_blocks = z_dim, len(widths)
        self.register_buffer("lod", torch.zeros(()))
        for k, c in enumerate(widths):
            if k == 0:
                setattr(self, "layer0", ProGANConv(z_dim, c, kernel_size=4, padding=3))
            else:
                setattr(self, f"layer{2 * k}", ProGANConv(widths[k - 1], c, upsample=True))
            setattr(self, f"layer{2 * k + 1}", ProGANConv(c, c))
            setattr(self, f"output{k}", ProGANConv(c, image_channels, kernel_size=1, padding=0, gain=1.0, linear=True))

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, **_unused) -> torch.Tensor:
        lod = float(self.lod)
        x, images = pixel_norm(z)[:, :, None, None], None
        for k in range(self.n_blocks):
            current_lod = self.n_blocks - 1 - k
            if lod < current_lod + 1:
                x = getattr(self, f"layer{2 * k + 1}")(getattr(self, f"layer{2 * k}")(x))
            new = getattr(self, f"output{k}")(x) if current_lod - 1 < lod < current_lod + 1 else None
            images = _blend(images, new, lod, current_lod)
        return images


def progan_config(state: dict[str, torch.Tensor]) -> dict:
    """ProGAN's sizes from a genforce state dict: z_dim and the width at each resolution."""
    n = 1 + max(int(m.group(1)) for k in state if (m := re.fullmatch(r"output(\d+)\.weight", k)))
    return {"z_dim": state["layer0.weight"].shape[1], "widths": [state[f"layer{2 * k + 1}.weight"].shape[0] for k in range(n)],
            "image_channels": state["output0.weight"].shape[0]}


# -------------------------------------------------------------------------------------------- StyleGAN
class Dense(nn.Module):
    """Fully connected layer with equalised learning rate (gain sqrt 2, learning-rate multiplier) and leaky ReLU."""

    def __init__(self, in_features: int, out_features: int, lr_mul: float = 0.01) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.wscale, self.bscale = SQRT2 / np.sqrt(in_features) * lr_mul, lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(F.linear(x, self.weight * self.wscale, self.bias * self.bscale), 0.2)


class Mapping(nn.Module):
    def __init__(self, z_dim: int, widths: list[int], label_size: int = 0, lr_mul: float = 0.01) -> None:
        super().__init__()
        self.num_layers, self.label_size = len(widths) - 1, label_size
        if label_size:
            self.label_weight = nn.Parameter(torch.randn(label_size, z_dim))
        for i in range(self.num_layers):
            setattr(self, f"dense{i}", Dense(widths[i], widths[i + 1], lr_mul))

    def forward(self, z: torch.Tensor, label: torch.Tensor | None) -> torch.Tensor:
        if self.label_size:
            z = torch.cat([z, label @ self.label_weight], dim=1)
        w = pixel_norm(z)
        for i in range(self.num_layers):
            w = getattr(self, f"dense{i}")(w)
        return w


class Truncation(nn.Module):
    """w (N, w_dim) -> W+ (N, num_layers, w_dim), pulled towards ``w_avg`` by psi (the first ``cutoff`` layers)."""

    def __init__(self, w_dim: int, num_layers: int) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, w: torch.Tensor, psi: float = 1.0, cutoff: int | None = None) -> torch.Tensor:
        return truncate(w[:, None].repeat(1, self.num_layers, 1), self.w_avg, psi, cutoff)


class StyleConv(nn.Module):
    """One StyleGAN layer: (const or convolution [upsampling, blur]) -> noise -> bias -> leaky ReLU -> instance norm ->
    style modulation. Returns the modulated features (N, C, r, r)."""

    def __init__(self, in_channels: int, out_channels: int, resolution: int, w_dim: int, const: bool = False,
                 upsample: bool = False, fused: bool = False, noise_type: str = "spatial") -> None:
        super().__init__()
        self.const_input, self.upsample, self.fused = const, upsample, fused
        self.noise_type = noise_type
        if const:
            self.const = nn.Parameter(torch.ones(1, in_channels, resolution, resolution))
        else:
            self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
            self.wscale = SQRT2 / np.sqrt(9 * in_channels)
            if upsample:
                self.blur = _Blur(out_channels)
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.apply_noise = _Noise(resolution, out_channels, noise_type)
        self.style = _StyleMod(w_dim, out_channels)

    def forward(self, x: torch.Tensor | None, w: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        if self.const_input:
            x = self.const.repeat(w.shape[0], 1, 1, 1)
        else:
            weight = self.weight * self.wscale
            if self.upsample and self.fused:
                x = F.conv_transpose2d(x, _fused_weight(weight).permute(1, 0, 2, 3), stride=2, padding=1)
            else:
                if self.upsample:
                    x = F.interpolate(x, scale_factor=2, mode="nearest")
                x = F.conv2d(x, weight, padding=1)
            if self.upsample:
                x = self.blur(x)
        x = self.apply_noise(x, noise_mode)
        x = F.leaky_relu(x + self.bias.view(1, -1, 1, 1), 0.2)
        x = x - x.mean(dim=[2, 3], keepdim=True)
        x = x / torch.sqrt(torch.mean(x ** 2, dim=[2, 3], keepdim=True) + 1e-8)
        return self.style(x, w)


class _Blur(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        k = torch.tensor([1.0, 2.0, 1.0])
        k = torch.outer(k, k)
        self.register_buffer("kernel", (k / k.sum())[None, None].repeat(channels, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.kernel, padding=1, groups=x.shape[1])


class _Noise(nn.Module):
    def __init__(self, resolution: int, channels: int, noise_type: str) -> None:
        super().__init__()
        self.noise_type, self.res, self.channels = noise_type, resolution, channels
        if noise_type == "spatial":
            self.register_buffer("noise", torch.randn(1, 1, resolution, resolution))
            self.weight = nn.Parameter(torch.zeros(channels))
        else:
            self.register_buffer("noise", torch.randn(1, channels, 1, 1))
            self.weight = nn.Parameter(torch.zeros(resolution, resolution))

    def forward(self, x: torch.Tensor, noise_mode: str) -> torch.Tensor:
        if noise_mode == "none":
            return x
        noise = self.noise if noise_mode == "const" else torch.randn(x.shape[0], *self.noise.shape[1:], device=x.device)
        if self.noise_type == "spatial":
            return x + noise * self.weight.view(1, -1, 1, 1)
        return x + noise * self.weight.view(1, 1, self.res, self.res)


class _StyleMod(nn.Module):
    def __init__(self, w_dim: int, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.weight = nn.Parameter(torch.randn(2 * channels, w_dim))
        self.bias = nn.Parameter(torch.zeros(2 * channels))
        self.wscale = 1.0 / np.sqrt(w_dim)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        s = F.linear(w, self.weight * self.wscale, self.bias).view(-1, 2, self.channels, 1, 1)
        return x * (s[:, 0] + 1) + s[:, 1]


class _ToRGB(nn.Module):
    def __init__(self, channels: int, image_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(image_channels, channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(image_channels))
        self.wscale = 1.0 / np.sqrt(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight * self.wscale, self.bias)


class StyleSynthesis(nn.Module):
    def __init__(self, w_dim: int, widths: list[int], image_channels: int, fused_min_res: int, noise_type: str) -> None:
        super().__init__()
        self.n_blocks = len(widths)
        self.register_buffer("lod", torch.zeros(()))
        for k, c in enumerate(widths):
            r = 4 * 2 ** k
            first = (StyleConv(c, c, r, w_dim, const=True, noise_type=noise_type) if k == 0 else
                     StyleConv(widths[k - 1], c, r, w_dim, upsample=True, fused=r >= fused_min_res, noise_type=noise_type))
            setattr(self, f"layer{2 * k}", first)
            setattr(self, f"layer{2 * k + 1}", StyleConv(c, c, r, w_dim, noise_type=noise_type))
            setattr(self, f"output{k}", _ToRGB(c, image_channels))

    def forward(self, wp: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:
        lod, x, images = float(self.lod), None, None
        for k in range(self.n_blocks):
            current_lod = self.n_blocks - 1 - k
            if lod < current_lod + 1:
                x = getattr(self, f"layer{2 * k}")(x, wp[:, 2 * k], noise_mode)
                x = getattr(self, f"layer{2 * k + 1}")(x, wp[:, 2 * k + 1], noise_mode)
            new = getattr(self, f"output{k}")(x) if current_lod - 1 < lod < current_lod + 1 else None
            images = _blend(images, new, lod, current_lod)
        return images


class StyleGAN(nn.Module):
    """z (N, z_dim) [+ label] -> images (N, 3, R, R): mapping -> truncation -> synthesis."""

    def __init__(self, z_dim: int, w_dim: int, mapping_widths: list[int], widths: list[int], label_size: int = 0,
                 image_channels: int = 3, fused_min_res: int = 128, noise_type: str = "spatial") -> None:
        super().__init__()
        self.z_dim, self.num_ws = z_dim, 2 * len(widths)
        self.mapping = Mapping(z_dim, mapping_widths, label_size)
        self.truncation = Truncation(w_dim, self.num_ws)
        self.synthesis = StyleSynthesis(w_dim, widths, image_channels, fused_min_res, noise_type)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, noise_mode: str = "const") -> torch.Tensor:
        return self.synthesis(self.truncation(self.mapping(z, c), truncation_psi, truncation_cutoff), noise_mode)


def stylegan_config(state: dict[str, torch.Tensor]) -> dict:
    """StyleGAN's sizes from a genforce state dict."""
    n_dense = 1 + max(int(m.group(1)) for k in state if (m := re.fullmatch(r"mapping\.dense(\d+)\.weight", k)))
    mapping_widths = [state["mapping.dense0.weight"].shape[1]] + [state[f"mapping.dense{i}.weight"].shape[0] for i in range(n_dense)]
    label = state.get("mapping.label_weight")
    n = 1 + max(int(m.group(1)) for k in state if (m := re.fullmatch(r"synthesis\.output(\d+)\.weight", k)))
    noise = state["synthesis.layer0.apply_noise.noise"]
    return {"z_dim": label.shape[1] if label is not None else mapping_widths[0],
            "w_dim": state["synthesis.layer0.style.weight"].shape[1], "mapping_widths": mapping_widths,
            "widths": [state[f"synthesis.layer{2 * k + 1}.weight"].shape[0] for k in range(n)],
            "label_size": 0 if label is None else label.shape[0],
            "image_channels": state["synthesis.output0.weight"].shape[0],
            "noise_type": "spatial" if noise.shape[1] == 1 else "channel"}
